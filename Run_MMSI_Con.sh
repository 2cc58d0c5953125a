#!/usr/bin/env bash
# Contrastive loss on CUB-200-2011 (DATA=cub) or Cars-196 (DATA=car), fine-tuning BN-Inception
# from ImageNet weights, with MMSI (MMSI=1) or without (MMSI=0). Any variable below can be set
# from the environment, e.g.  MMSI=0 DATA=car bash Run_MMSI_Con.sh
# RESUME=<checkpoint> continues an interrupted run; EXTRA_ARGS adds any other flag.
set -euo pipefail
cd "$(dirname "$0")"

DATA=${DATA:-cub}
DATA_ROOT=${DATA_ROOT:-DataSet}
LOSS=${LOSS:-Con}
NET=${NET:-BN-Inception}
DIM=${DIM:-512}
ALPHA=${ALPHA:-40}
LR=${LR:-1e-5}
BatchSize=${BatchSize:-80}
ValBatchSize=${ValBatchSize:-10}
RATIO=${RATIO:-0.16}
MARGIN=${MARGIN:-0.8}
MMSI=${MMSI:-1}
DSIZE=${DSIZE:-5}
EPOCHS=${EPOCHS:-600}
WIDTH=${WIDTH:-227}
NUM_INSTANCES=${NUM_INSTANCES:-5}
SAVE_STEP=${SAVE_STEP:-3}
RESUME=${RESUME:-}
NPROC=${NPROC:-1}
ENTRY=MMSI_train.py

START_ARGS=()
[ -n "$RESUME" ] && START_ARGS=(--resume "$RESUME")
source utils/launch.sh
