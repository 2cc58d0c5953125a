#!/usr/bin/env bash
# The Glyphs study of README "Results": does MMSI help, with confidence intervals?
#   fine-tuning a plain-MS stage 1 per seed (the demo's protocol), 3 seeds, cells:
#   MS plain / MMSI official / MMSI gradient; Triplet plain / MMSI (gradient);
#   Contrastive plain / MMSI (official); MS MMSI gradient with a validation batch of 40.
# QUICK=1: a smaller version (2 seeds, short runs, MS plain and MMSI gradient), under 10 minutes.
# All runs share OUT; each Run_compare.sh call rewrites OUT/summary.* from every run there.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
export QUICK OUT=${OUT:-compare_output/glyphs_study$([ "$QUICK" = 1 ] && echo _quick)}
export JOBS=${JOBS:-1}

if [ "$QUICK" = 1 ]; then
  LOSSES=MS PAIR_WEIGHTS=gradient bash Run_compare.sh
  exit 0
fi
LOSSES=MS PAIR_WEIGHTS="official gradient" bash Run_compare.sh
LOSSES="Triplet Con" PAIR_WEIGHTS=auto bash Run_compare.sh
LOSSES=MS MMSI_VALUES=1 PAIR_WEIGHTS=gradient VARY="val_batch_size=40" bash Run_compare.sh
