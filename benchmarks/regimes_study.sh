#!/usr/bin/env bash
# Does MMSI help where it should? (issue 19) Three regimes, plain MS against MS + MMSI (gradient
# pair weights; the official ones too with OFFICIAL=1), each over 3 seeds, through Run_compare.sh:
#   a  Glyphs with 20 of its 100 training classes held out, every cell tuned over 4 learning
#      rates on them (--select lr=...; values and epoch chosen on holdout MAP@R)
#   b  the many-class Glyphs (--data glyphs_many: 1,257 training classes of 4-8 images, 200 of
#      them held out), fine-tuned at lr 3e-5
#   c  Glyphs with 30 % label noise (the stage 1 trains on the noisy labels too), 20 classes
#      held out, fine-tuned at lr 3e-5
# b and c are not tuned (the 2.5-hour budget): they fine-tune at 3e-5, the middle of a's grid,
# and their "best" columns choose the epoch on the held-out classes.
# Two plateau checks, not run by default (they would take the study past 2.5 hours): plain MS
# alone, trained longer than its part, in a folder of its own (its stage 1 is its part's again):
#   a60  at LONG_LR (default: the largest of a's rates, the one plain MS chose) for twice a's
#      epochs, evaluated every 6 epochs
#   b12  at b's lr for three times b's epochs, evaluated every 2 epochs
# PARTS="a b c" (the default) runs some of them, "a60 b12" the checks; each part has its own
# folder under OUT and is resumable: rerun the same command after a stop (Ctrl-C / SIGTERM:
# the trainings save first).
# A finished run keeps only last.pth.tar (and a stage 1 the checkpoint its cells start from):
# the summary reads metrics.jsonl, and the whole study then needs about 6 GB of disk.
# QUICK=1: 2 seeds and short runs, to check the pipeline in a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
PARTS=${PARTS:-a b c}
OUT=${OUT:-compare_output/regimes$([ "$QUICK" = 1 ] && echo _quick || true)}
PAIR_WEIGHTS=${PAIR_WEIGHTS:-gradient}
[ "${OFFICIAL:-0}" = 1 ] && PAIR_WEIGHTS="official gradient"
# Two single-threaded trainings at a time use 2 cores better than one with two threads: a
# Glyphs epoch is 10 iterations, so start-up and evaluation are a large share of a run.
export JOBS=${JOBS:-2} THREADS=${THREADS:-1} LOSSES=MS PAIR_WEIGHTS KEEP_CHECKPOINTS=last
if [ "$QUICK" = 1 ]; then
  SEEDS="0 1"; LRS=${LRS:-1e-5,3e-5}
  GLYPHS=(2 2 1)        # stage-1 epochs, cell epochs, evaluate every
  LONG=(2 4 2)
  MANY=(1 1 1)
  MANY_LONG=(1 2 2)
  # 100 of GlyphsMany's training classes (12 iterations an epoch, not 132), MMSI updating
  # after 50 of them: the pipeline, not the regime
  MANY_ARGS="--holdout_classes 1157 --dict_min_classes 50"
else
  SEEDS=${SEEDS:-0 1 2}; LRS=${LRS:-1e-5,3e-5,1e-4,3e-4}  # 1e-3: plain MS collapses
  GLYPHS=(12 30 3)      # 120 stage-1 iterations at 1e-4, then 300 at the cell's lr
  LONG=(12 60 6)
  MANY=(2 4 1)          # 1,057 training classes: 132 iterations an epoch
  MANY_LONG=(2 12 2)
  MANY_ARGS="--holdout_classes 200"
fi
export SEEDS
LONG_LR=${LONG_LR:-${LRS##*,}}

part() {  # part NAME STAGE1_EPOCHS EPOCHS SAVE_STEP, then the variables for Run_compare.sh
  local name=$1 stage1=$2 epochs=$3 step=$4; shift 4
  # QUICK=0: Run_compare.sh's own QUICK (--quick) would override these epochs
  env QUICK=0 OUT="$OUT/$name" STAGE1_EPOCHS="$stage1" EPOCHS="$epochs" SAVE_STEP="$step" "$@" \
    bash Run_compare.sh
}

for p in $PARTS; do
  start=$(date +%s)
  case "$p" in
    a) part a_holdout_lr "${GLYPHS[@]}" SELECT="lr=$LRS" EXTRA_ARGS="--holdout_classes 20" ;;
    a60) part a_plateau "${LONG[@]}" SELECT="lr=$LONG_LR" MMSI_VALUES=0 \
           EXTRA_ARGS="--holdout_classes 20" ;;
    b) part b_many_classes "${MANY[@]}" DATA=glyphs_many LR=3e-5 EXTRA_ARGS="$MANY_ARGS" ;;
    b12) part b_plateau "${MANY_LONG[@]}" DATA=glyphs_many LR=3e-5 MMSI_VALUES=0 \
           EXTRA_ARGS="$MANY_ARGS" ;;
    c) part c_label_noise "${GLYPHS[@]}" LR=3e-5 \
         EXTRA_ARGS="--holdout_classes 20 --label_noise 0.3" ;;
    *) echo "error: PARTS: unknown part '$p' (a, b, c, a60 or b12)" >&2; exit 2 ;;
  esac
  echo "part $p: $(( $(date +%s) - start )) s"
done
