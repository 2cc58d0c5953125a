#!/usr/bin/env bash
# Why does MMSI lose (issue 30)? Controls that keep the learned ranking of the pairs or their
# scale and destroy the other: plain MS against MS + MMSI (gradient pair weights) with
#   --mmsi_weights learned | shuffled | kind_mean   x   --weight_norm max | mean
# (6 MMSI cells; docs/design.md, "Controls of the pair weights"), 3 seeds, every cell at the
# learning rate and epoch chosen on held-out classes, with the paired delta to plain MS.
# Parts, each in its own folder under OUT, resumable (rerun the same command after a stop):
#   g  Glyphs, regimes_study.sh part a's protocol: per seed a plain-MS stage 1 of 1,500
#      iterations at lr 3e-4 from random weights, 20 training classes held out; cells 12
#      epochs, evaluated every 3, tuned over LRS (default the two rates part a chose: 3e-5 for
#      MMSI, 1e-4 for plain MS; part a's four cost 2x)
#   r  real photos, real_study.sh protocol r1: ImageNet EfficientNet-Lite0 on CUB classes 1-50
#      (DATA_ROOT, default ../shared/data), 5 of the 25 training classes held out, a plain-MS
#      stage 1 per seed from the ImageNet weights; the same 6 MMSI cells
# QUICK=1: 2 seeds, short runs, one rate: the pipeline (part g only; about 8 minutes, estimated).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
PARTS=${PARTS:-g r}
OUT=${OUT:-compare_output/controls$([ "$QUICK" = 1 ] && echo _quick || true)}
DATA_ROOT=${DATA_ROOT:-../shared/data}
export JOBS=${JOBS:-3} THREADS=${THREADS:-1} LOSSES=MS PAIR_WEIGHTS=gradient KEEP_CHECKPOINTS=last
export VARY="mmsi_weights=learned,shuffled,kind_mean weight_norm=max,mean"
if [ "$QUICK" = 1 ]; then
  # with 2-epoch cells QUICK took 13 min 46 s (2026-12-02); 1-epoch cells halve the cells' part
  SEEDS="0 1"; LRS=${LRS:-3e-5}
  GLYPHS=(2 1 1)       # stage-1 epochs, cell epochs, evaluate every
  REAL=(1 1 1)
else
  SEEDS=${SEEDS:-0 1 2}; LRS=${LRS:-3e-5,1e-4}
  GLYPHS=(150 12 3)
  REAL=(${REAL_STAGE1_EPOCHS:-150} ${REAL_EPOCHS:-30} 6)  # real_study.sh r1's (not calibrated)
fi
export SEEDS

part() {  # part NAME STAGE1_EPOCHS EPOCHS SAVE_STEP, then the variables for Run_compare.sh
  local name=$1 stage1=$2 epochs=$3 step=$4; shift 4
  env QUICK=0 OUT="$OUT/$name" STAGE1_EPOCHS="$stage1" EPOCHS="$epochs" SAVE_STEP="$step" "$@" \
    bash Run_compare.sh
}

for p in $PARTS; do
  start=$(date +%s)
  case "$p" in
    g) part g_glyphs "${GLYPHS[@]}" STAGE1_LR=3e-4 SELECT="lr=$LRS" \
         EXTRA_ARGS="--holdout_classes 20" ;;
    r) part r_cub_efficientnet "${REAL[@]}" DATA=cub DATA_ROOT="$DATA_ROOT" WIDTH=128 \
         ORIGIN_WIDTH=146 PRETRAINED=imagenet STAGE1_LR=${REAL_STAGE1_LR:-3e-5} \
         SELECT="lr=${REAL_LRS:-1e-5,3e-5,1e-4}" \
         EXTRA_ARGS="--net EfficientNetLite0 --holdout_classes 5" ;;
    *) echo "error: PARTS: unknown part '$p' (g or r)" >&2; exit 2 ;;
  esac
  echo "part $p: $(( $(date +%s) - start )) s"
done
