# Shared body of the Run_MMSI_*.sh scripts, sourced after they set their defaults: builds the
# command line, launches one process (NPROC=1), torchrun on this machine (NPROC>1) or across
# NNODES machines (with NODE_RANK, MASTER_ADDR, MASTER_PORT), and copies the Recall
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
# AUTO_RESUME=1 (or RESUME=auto in Run_MMSI_Con.sh): continue the run in SAVE_DIR when it holds
# a checkpoint, else start it; a batch system that requeues a preempted job reruns the same
# command (README, "Preemption and requeueing").
if [ "${AUTO_RESUME:-0}" = 1 ]; then
    args+=(--resume auto)
fi
read -r -a extra <<< "${EXTRA_ARGS:-}"
args+=("${extra[@]}")

for count in NPROC NNODES; do
    if ! [[ "${!count:-1}" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: $count must be a positive integer, got '${!count}'" >&2
        exit 2
    fi
done

if [ "${NNODES:-1}" -gt 1 ]; then
    # Several machines: run the same command on each with its NODE_RANK (0 writes the outputs).
    : "${MASTER_ADDR:?set MASTER_ADDR to the address of the machine with NODE_RANK=0}"
    launcher=("$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node_rank "${NODE_RANK:-0}"
              --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}"
              --nproc_per_node "${NPROC:-1}")
elif [ "${NPROC:-1}" -gt 1 ]; then
    launcher=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
else
    launcher=("$PYTHON")
fi

mkdir -p "$(dirname "$SAVE_DIR")" "$(dirname "$RESULT_FILE")"
echo "${launcher[*]} $ENTRY ${args[*]}"
# SIGTERM / SIGINT to the whole group (SLURM, timeout, Ctrl-C) reach the training too, which
# saves and exits with 128 + signal; this script waits for it and still copies the results.
trap 'true' TERM INT
status=0
"${launcher[@]}" "$ENTRY" "${args[@]}" || status=$?
if [ -f "$SAVE_DIR/log.txt" ]; then
    grep '^Recall' "$SAVE_DIR/log.txt" > "$RESULT_FILE" || true
    echo "Recall per evaluation: $RESULT_FILE"
fi
exit "$status"
