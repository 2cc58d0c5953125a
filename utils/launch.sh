# Shared body of the Run_MMSI_*.sh scripts, sourced after they set their defaults: builds the
# command line, launches one process (NPROC=1) or torchrun (NPROC>1), and copies the Recall
# lines of the log to result/<LOSS>/<DATA>/<NAME>.txt as the official scripts lay them out.

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
NAME=${NAME:-${NET}-DIM-${DIM}-lr${LR}-ratio-${RATIO}-BatchSize-${BatchSize}-MMSI${MMSI}}
SAVE_DIR=${SAVE_DIR:-ckps/${LOSS}/${DATA}/${NAME}}
RESULT_FILE=${RESULT_ROOT:-result}/${LOSS}/${DATA}/${NAME}.txt

args=(--net "$NET" --data "$DATA" --data_root "$DATA_ROOT" --lr "$LR" --dim "$DIM"
      --alpha "$ALPHA" --num_instances "$NUM_INSTANCES" --batch_size "$BatchSize"
      --val_batch_size "$ValBatchSize" --epoch "$EPOCHS" --loss "$LOSS" --width "$WIDTH"
      --ratio "$RATIO" --margin "$MARGIN" --save_dir "$SAVE_DIR" --save_step "$SAVE_STEP"
      --MMSI "$MMSI" --d_size "$DSIZE")
args+=("${START_ARGS[@]}")
read -r -a extra <<< "${EXTRA_ARGS:-}"
args+=("${extra[@]}")

if [ "${NPROC:-1}" -gt 1 ]; then
    launcher=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
else
    launcher=("$PYTHON")
fi

mkdir -p "$(dirname "$SAVE_DIR")" "$(dirname "$RESULT_FILE")"
echo "${launcher[*]} $ENTRY ${args[*]}"
status=0
"${launcher[@]}" "$ENTRY" "${args[@]}" || status=$?
if [ -f "$SAVE_DIR/log.txt" ]; then
    grep '^Recall' "$SAVE_DIR/log.txt" > "$RESULT_FILE" || true
    echo "Recall per evaluation: $RESULT_FILE"
fi
exit "$status"
