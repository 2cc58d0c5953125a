#!/usr/bin/env bash
# CPU demo on the embedded Glyphs data set, following the official MS protocol in miniature:
#   1. plain MS loss from random initialisation (no ImageNet weights can be downloaded here);
#   2. fine-tune that checkpoint twice with identical settings and seeds, MMSI=0 and MMSI=1;
#   3. plot both fine-tuning R@1 curves on one figure.
# Everything goes to demo_output/<date-time>/. Variables can be set from the environment.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${OUT:-demo_output/$(date +%Y%m%d-%H%M%S)}
SEED=${SEED:-0}
SCRATCH_EPOCHS=${SCRATCH_EPOCHS:-12}   # 12 iterations per epoch
SCRATCH_LR=${SCRATCH_LR:-1e-4}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-6}
FINETUNE_LR=${FINETUNE_LR:-1e-5}
MARGIN=${MARGIN:-0.1}

common=(--data glyphs --width 64 --origin_width 72 --batch_size 40 --num_instances 5
        --loss MS --margin "$MARGIN" --seed "$SEED" --nThreads 0 --progress 0 --print_freq 6)

echo "== 1/3: plain MS from random initialisation -> $OUT/scratch_MS"
"$PYTHON" MMSI_train.py "${common[@]}" --MMSI 0 --pretrained none --lr "$SCRATCH_LR" \
    --epochs "$SCRATCH_EPOCHS" --save_step "$SCRATCH_EPOCHS" --save_dir "$OUT/scratch_MS"
start="$OUT/scratch_MS/ckp_ep${SCRATCH_EPOCHS}.pth.tar"

for mmsi in 0 1; do
    echo "== $((2 + mmsi))/3: fine-tune with MMSI=$mmsi -> $OUT/finetune_MMSI$mmsi"
    "$PYTHON" MMSI_train.py "${common[@]}" --MMSI "$mmsi" --pretrained "$start" \
        --lr "$FINETUNE_LR" --epochs "$FINETUNE_EPOCHS" --save_step 2 \
        --save_dir "$OUT/finetune_MMSI$mmsi"
done

"$PYTHON" utils/plot.py "$OUT/finetune_MMSI0" "$OUT/finetune_MMSI1" \
    --labels "MS (MMSI=0)" "MS + MMSI (MMSI=1)" \
    --title "Glyphs: fine-tuning from the plain-MS checkpoint" -o "$OUT/finetune_R1.png"
"$PYTHON" utils/plot.py "$OUT/scratch_MS" --labels "MS from scratch" -o "$OUT/scratch_R1.png"
echo "R@1 per evaluation:"
grep -H '^Recall' "$OUT"/finetune_MMSI*/log.txt | sed 's/  R@2.*MAP@R/  MAP@R/'
