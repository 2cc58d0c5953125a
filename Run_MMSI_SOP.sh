#!/usr/bin/env bash
# Multi-Similarity loss on Stanford Online Products: fine-tunes the model in the checkpoint
# RESUME with MMSI (MMSI=1) or without (MMSI=0), the SOP configuration of MMSI_SOP_train.py
# (dictionary warm-up until 1000 classes, max+avg pooling, evaluation every EVAL_EVERY
# iterations). Any variable below can be set from the environment.
set -euo pipefail
cd "$(dirname "$0")"

DATA=${DATA:-product}
DATA_ROOT=${DATA_ROOT:-DataSet}
LOSS=${LOSS:-MS}
NET=${NET:-BN-Inception}
DIM=${DIM:-512}
ALPHA=${ALPHA:-40}
LR=${LR:-1e-7}
BatchSize=${BatchSize:-80}
ValBatchSize=${ValBatchSize:-10}
RATIO=${RATIO:-0.16}
MARGIN=${MARGIN:-0.03}
MMSI=${MMSI:-1}
DSIZE=${DSIZE:-5}
EPOCHS=${EPOCHS:-30}
WIDTH=${WIDTH:-227}
NUM_INSTANCES=${NUM_INSTANCES:-5}
SAVE_STEP=${SAVE_STEP:-1}
EVAL_EVERY=${EVAL_EVERY:-100}
RESUME=${RESUME:-}
NPROC=${NPROC:-1}
ENTRY=MMSI_SOP_train.py

if [ -z "$RESUME" ] || [ ! -f "$RESUME" ]; then
    echo "error: RESUME=${RESUME:-<unset>}: the SOP script fine-tunes from a checkpoint; set RESUME to an existing checkpoint file" >&2
    exit 2
fi
START_ARGS=(--pretrained "$RESUME" --eval_every "$EVAL_EVERY")
source utils/launch.sh
