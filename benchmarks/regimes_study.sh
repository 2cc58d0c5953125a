#!/usr/bin/env bash
# Does MMSI help where it should? (issue 19) Three regimes, plain MS against MS + MMSI (gradient
# pair weights; the official ones with OFFICIAL=1), each over 3 seeds, through Run_compare.sh:
#   a  Glyphs with 20 of its 100 training classes held out, every cell tuned over 3 learning
#      rates on them (--select lr=...; values and epoch chosen on holdout MAP@R)
#   b  the many-class Glyphs (--data glyphs_many: ~1,250 training classes of 4-8 images)
#   c  Glyphs with 30 % label noise (the stage 1 trains on the noisy labels too)
# PARTS="a b c" (default all) runs some of them; each part has its own folder under OUT and is
# resumable: rerun the same command after a stop (Ctrl-C / SIGTERM: the trainings save first).
# QUICK=1: 2 seeds and short runs, to check the pipeline in a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
PARTS=${PARTS:-a b c}
OUT=${OUT:-compare_output/regimes$([ "$QUICK" = 1 ] && echo _quick)}
PAIR_WEIGHTS=${PAIR_WEIGHTS:-gradient}
[ "${OFFICIAL:-0}" = 1 ] && PAIR_WEIGHTS="official gradient"
export JOBS=${JOBS:-1} LOSSES=MS PAIR_WEIGHTS
if [ "$QUICK" = 1 ]; then
  export SEEDS="0 1" STAGE1_EPOCHS=2 EPOCHS=2 SAVE_STEP=1 LRS=${LRS:-1e-5,3e-5}
else
  export SEEDS=${SEEDS:-0 1 2} STAGE1_EPOCHS=${STAGE1_EPOCHS:-12} EPOCHS=${EPOCHS:-6}
  export SAVE_STEP=${SAVE_STEP:-1} LRS=${LRS:-3e-6,1e-5,3e-5}
fi
HOLDOUT="--holdout_classes 20"

for part in $PARTS; do
  start=$(date +%s)
  case "$part" in
    a) OUT="$OUT/a_holdout_lr" SELECT="lr=$LRS" EXTRA_ARGS="$HOLDOUT" bash Run_compare.sh ;;
    b) OUT="$OUT/b_many_classes" DATA=glyphs_many EXTRA_ARGS="$HOLDOUT" bash Run_compare.sh ;;
    c) OUT="$OUT/c_label_noise" EXTRA_ARGS="$HOLDOUT --label_noise 0.3" bash Run_compare.sh ;;
    *) echo "error: PARTS: unknown part '$part' (a, b or c)" >&2; exit 2 ;;
  esac
  echo "part $part: $(( $(date +%s) - start )) s"
done
