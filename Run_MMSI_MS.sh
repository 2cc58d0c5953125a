#!/usr/bin/env bash
# Multi-Similarity loss on CUB-200-2011 or Cars-196: fine-tunes the model in the checkpoint
# RESUME (e.g. a plain MS run's ckp_epN.pth.tar) with MMSI (MMSI=1) or without (MMSI=0).
# Any variable below can be set from the environment, e.g.
#     RESUME=ckps/MS/cub/plain/ckp_ep600.pth.tar MMSI=1 bash Run_MMSI_MS.sh
set -euo pipefail
cd "$(dirname "$0")"

DATA=${DATA:-cub}
DATA_ROOT=${DATA_ROOT:-DataSet}
LOSS=${LOSS:-MS}
NET=${NET:-BN-Inception}
DIM=${DIM:-512}
ALPHA=${ALPHA:-40}
LR=${LR:-1e-7}
BatchSize=${BatchSize:-80}
ValBatchSize=${ValBatchSize:-10}
RATIO=${RATIO:-0.16}
MARGIN=${MARGIN:-0.05}
MMSI=${MMSI:-1}
DSIZE=${DSIZE:-5}
EPOCHS=${EPOCHS:-600}
WIDTH=${WIDTH:-227}
NUM_INSTANCES=${NUM_INSTANCES:-5}
SAVE_STEP=${SAVE_STEP:-3}
RESUME=${RESUME:-}
NPROC=${NPROC:-1}
ENTRY=MMSI_train.py

if [ -z "$RESUME" ] || [ ! -f "$RESUME" ]; then
    echo "error: RESUME=${RESUME:-<unset>}: the MS script fine-tunes from a checkpoint; set RESUME to an existing checkpoint file" >&2
    exit 2
fi
START_ARGS=(--pretrained "$RESUME")
source utils/launch.sh
