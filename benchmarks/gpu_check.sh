#!/usr/bin/env bash
# Prepared GPU check (one GPU, under 8 minutes): correctness of the meta step and of the GPU
# input pipeline on CUDA, plain and MMSI iterations per second at width 227, batch 80 (fp32 and
# bf16 + channels-last), peak GPU memory, Recall@K on 60,502 x 512 embeddings on the GPU, the
# input pipeline's images per second, and a 2-epoch end-to-end MMSI run on Glyphs on the GPU.
# Everything printed also goes to $OUT/gpu_check.md (OUT defaults to gpu_check_output).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_check_output}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore::DeprecationWarning

{
echo "## GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo; echo '### correctness on CUDA'
timeout 120 "$PY" benchmarks/gpu_correctness.py
echo; echo '### iterations (fp32)'
timeout 120 "$PY" benchmarks/bench_step.py --device cuda --width 227 --batch 80 --iters 20
echo; echo '### iterations (bf16 autocast, channels-last)'
timeout 120 "$PY" benchmarks/bench_step.py --device cuda --width 227 --batch 80 --iters 20 \
    --amp bf16 --channels_last
echo; echo '### Recall@K / MAP@R, SOP size, on the GPU'
timeout 60 "$PY" benchmarks/bench_recall.py --device cuda
echo; echo '### input pipeline'
timeout 60 "$PY" benchmarks/bench_pipeline.py --images 160
echo; echo '### end to end: Glyphs, 2 epochs, MMSI, bf16, gpu input pipeline'
rm -rf "$OUT/e2e"
timeout 120 "$PY" MMSI_train.py --data glyphs --data_root "$OUT" --width 64 --origin_width 72 \
    --batch_size 40 --num_instances 5 --epochs 2 --save_step 2 --pretrained none --loss MS \
    --margin 0.1 --lr 1e-4 --seed 0 --nThreads 8 --MMSI 1 --dict_min_classes 8 --amp bf16 \
    --channels_last 1 --input_pipeline gpu --progress 0 --print_freq 6 --save_dir "$OUT/e2e" \
    | grep -E 'Recall|done|Device'
} 2>&1 | tee "$OUT/gpu_check.md"
