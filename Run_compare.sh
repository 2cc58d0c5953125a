#!/usr/bin/env bash
# Does MMSI help? A grid of runs (losses x MMSI on/off x pair-weight forms x seeds), summarised
# with 95% confidence intervals by compare.py. Defaults: the Glyphs demo's settings
# (fine-tuning a plain-MS stage 1 per seed). Any variable below can be set from the environment:
#   LOSSES="MS Triplet" SEEDS="0 1 2" VARY="val_batch_size=10,40" bash Run_compare.sh
# EXTRA_ARGS adds training flags (e.g. "--holdout_classes 20 --label_noise 0.3"); SELECT tunes
# every cell over values of a flag on held-out classes (needs --holdout_classes in EXTRA_ARGS);
# QUICK=1 runs the harness's small version (--quick);
# EXTEND=1 lets a rerun raise EPOCHS for the runs already in OUT (--extend);
# KEEP_CHECKPOINTS=last deletes a finished run's per-epoch checkpoints (--keep_checkpoints).
# Stop with Ctrl-C or `kill <pid>` (the trainings save first); rerun the same command to resume.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
DATA=${DATA:-glyphs}
DATA_ROOT=${DATA_ROOT:-DataSet}
LOSSES=${LOSSES:-MS}
MMSI_VALUES=${MMSI_VALUES:-0 1}
PAIR_WEIGHTS=${PAIR_WEIGHTS:-auto}
SEEDS=${SEEDS:-0 1 2}
VARY=${VARY:-}                    # e.g. "val_batch_size=10,40 d_size=5,20"
SELECT=${SELECT:-}                # e.g. "lr=3e-6,1e-5,3e-5": tuned per cell on held-out classes
VARY_LOSSES=${VARY_LOSSES:-}
PROTOCOL=${PROTOCOL:-finetune}
STAGE1_EPOCHS=${STAGE1_EPOCHS:-12}
STAGE1_LR=${STAGE1_LR:-1e-4}
JOBS=${JOBS:-1}
THREADS=${THREADS:-}
QUICK=${QUICK:-0}
EXTEND=${EXTEND:-0}
KEEP_CHECKPOINTS=${KEEP_CHECKPOINTS:-all}
OUT=${OUT:-compare_output/${DATA}}
WIDTH=${WIDTH:-64}
ORIGIN_WIDTH=${ORIGIN_WIDTH:-72}
BatchSize=${BatchSize:-40}
NUM_INSTANCES=${NUM_INSTANCES:-5}
LR=${LR:-1e-5}
EPOCHS=${EPOCHS:-6}
SAVE_STEP=${SAVE_STEP:-2}
PRETRAINED=${PRETRAINED:-none}

harness=(--out "$OUT" --losses $LOSSES --mmsi $MMSI_VALUES --pair_weights $PAIR_WEIGHTS
         --seeds $SEEDS --protocol "$PROTOCOL" --stage1_epochs "$STAGE1_EPOCHS"
         --stage1_lr "$STAGE1_LR" --jobs "$JOBS" --keep_checkpoints "$KEEP_CHECKPOINTS")
for axis in $VARY; do harness+=(--vary "$axis"); done
for axis in $SELECT; do harness+=(--select "$axis"); done
[ -n "$VARY_LOSSES" ] && harness+=(--vary_losses $VARY_LOSSES)
[ -n "$THREADS" ] && harness+=(--threads "$THREADS")
[ "$QUICK" = 1 ] && harness+=(--quick)
[ "$EXTEND" = 1 ] && harness+=(--extend)

training=(--data "$DATA" --data_root "$DATA_ROOT" --width "$WIDTH" --origin_width "$ORIGIN_WIDTH"
          --batch_size "$BatchSize" --num_instances "$NUM_INSTANCES" --lr "$LR"
          --epochs "$EPOCHS" --save_step "$SAVE_STEP" --pretrained "$PRETRAINED"
          --nThreads 0 --progress 0 --print_freq 6)
read -r -a extra <<< "${EXTRA_ARGS:-}"
training+=("${extra[@]}")

echo "$PYTHON compare.py ${harness[*]} -- ${training[*]}"
exec "$PYTHON" compare.py "${harness[@]}" -- "${training[@]}"
