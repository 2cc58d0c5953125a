"""Time and memory of retrieval_metrics on SOP-sized random embeddings.

Stanford Online Products' test split: 60,502 images of 11,316 classes, 512-d embeddings,
Recall@1/10/100/1000 and MAP@R. Prints one markdown table row and the command that made it.

    python benchmarks/bench_recall.py                 # CPU
    python benchmarks/bench_recall.py --device cuda
"""
import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from evaluations import recall_ks_for, retrieval_metrics  # noqa: E402
from evaluations.retrieval import DEFAULT_MAX_CHUNK_BYTES  # noqa: E402

MIB = 2 ** 20


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:index]')
    parser.add_argument('--num', type=int, default=60502, help='number of embeddings')
    parser.add_argument('--dim', type=int, default=512, help='embedding dimension')
    parser.add_argument('--classes', type=int, default=11316, help='number of classes')
    parser.add_argument('--max-chunk-mb', type=float, default=DEFAULT_MAX_CHUNK_BYTES / MIB,
                        help='memory budget of one query chunk, MiB')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def proc_status_kib(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not found in /proc/self/status')


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False if not allowed."""
    try:
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
        return True
    except OSError:
        return False


def sop_like_data(num, dim, classes, device, seed):
    """Unit-norm random embeddings and labels: every class gets num // classes or one more."""
    generator = torch.Generator().manual_seed(seed)
    emb = torch.randn(num, dim, generator=generator)
    emb /= emb.norm(dim=1, keepdim=True)  # in place: no second copy raises the peak RSS
    labels = (torch.arange(num) % classes)[torch.randperm(num, generator=generator)]
    return emb.to(device), labels.to(device)


def main():
    args = parse_args()
    device = torch.device(args.device)
    emb, labels = sop_like_data(args.num, args.dim, args.classes, device, args.seed)
    ks = recall_ks_for('product')
    budget = int(args.max_chunk_mb * MIB)
    # Warm-up on a small slice: loads the BLAS / CUDA kernels, whose memory is not ours to count.
    retrieval_metrics(emb[:1000], labels[:1000], ks=ks, max_chunk_bytes=budget)

    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        peak_was_reset = reset_peak_rss()
        before = proc_status_kib('VmRSS') * 1024
    start = time.perf_counter()
    metrics = retrieval_metrics(emb, labels, ks=ks, max_chunk_bytes=budget)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == 'cuda':
        peak_extra = torch.cuda.max_memory_allocated(device) - before
        memory_kind = 'peak allocated above inputs'
    else:
        peak_extra = proc_status_kib('VmHWM') * 1024 - before
        memory_kind = 'peak RSS above start' + ('' if peak_was_reset else ' (VmHWM not reset)')

    full_matrix = args.num * args.num * 4
    threads = torch.get_num_threads() if device.type == 'cpu' else '-'
    print('| device | threads | N x D | classes | chunk budget | seconds | peak extra memory '
          '| full N x N float32 |')
    print('|---|---|---|---|---|---|---|---|')
    print(f'| {args.device} | {threads} | {args.num} x {args.dim} | {args.classes} '
          f'| {args.max_chunk_mb:.0f} MiB | {seconds:.1f} | {peak_extra / MIB:.0f} MiB '
          f'| {full_matrix / MIB:.0f} MiB |')
    print(f'memory: {memory_kind}')
    print('metrics: ' + ', '.join(f'{name} {value:.4f}' for name, value in metrics.items()))
    print('command: python ' + ' '.join(shlex.quote(arg) for arg in sys.argv))


if __name__ == '__main__':
    main()
