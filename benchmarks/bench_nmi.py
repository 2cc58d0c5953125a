"""Cost of evaluations.nmi (k-means++ seeding + Lloyd iterations + NMI) at a reduced size, and
its extrapolation to Stanford Online Products' test split (60,502 x 512, 11,316 classes).

Both parts scale with N x k x D: seeding is k sequential matrix-vector products over the N
rows, one Lloyd iteration one N x k x D matrix product. A run at N/s rows and k/s classes
therefore costs about 1/s^2 of the SOP-sized one on the same device (the --scale argument, 8
by default: 64 times cheaper). Random unit-norm embeddings say nothing about how many
iterations real embeddings take; the per-iteration cost is what extrapolates.

    python benchmarks/bench_nmi.py                   # CPU, 1/8 of SOP in N and k
    python benchmarks/bench_nmi.py --device cuda --scale 1
"""
import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from evaluations.clustering import assign, kmeans_plus_plus, nmi  # noqa: E402

SOP_N, SOP_K, SOP_D = 60502, 11316, 512


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:index]')
    parser.add_argument('--scale', type=float, default=8.0,
                        help='divide SOP\'s N and k by this (cost falls by its square)')
    parser.add_argument('--iters', type=int, default=3, help='Lloyd iterations to time')
    parser.add_argument('--full', type=int, default=1,
                        help='also time the whole evaluations.nmi call (up to 100 iterations)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(device, fn):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def main():
    args = parse_args()
    device = torch.device(args.device)
    n, k = int(SOP_N / args.scale), int(SOP_K / args.scale)
    generator = torch.Generator().manual_seed(args.seed)
    emb = torch.nn.functional.normalize(torch.randn(n, SOP_D, generator=generator), dim=1)
    labels = torch.arange(n) % k
    emb, labels = emb.to(device), labels.to(device)
    factor = (SOP_N * SOP_K) / (n * k)

    centres, seeding = timed(device, lambda: kmeans_plus_plus(emb, k, torch.Generator()
                                                               .manual_seed(args.seed)))

    def lloyd_iterations():
        c = centres
        for _ in range(args.iters):
            a = assign(emb, c)
            sums = torch.zeros_like(c).index_add_(0, a, emb)
            counts = torch.bincount(a, minlength=k).clamp(min=1)
            c = sums / counts[:, None].to(emb.dtype)
        return c

    _, lloyd = timed(device, lloyd_iterations)
    per_iteration = lloyd / args.iters
    print(f'N={n} k={k} D={SOP_D} on {device} ({torch.get_num_threads()} CPU threads): '
          f'seeding {seeding:.2f} s, one Lloyd iteration {per_iteration:.3f} s')
    if args.full:
        value, whole = timed(device, lambda: nmi(emb, labels, seed=args.seed))
        print(f'evaluations.nmi on these random embeddings: {whole:.2f} s (NMI {value:.3f})')
    def minutes(iterations):
        return (seeding + iterations * per_iteration) * factor / 60

    print(f'SOP size (x{factor:.0f} in N x k): seeding ~{seeding * factor:.0f} s, one Lloyd '
          f'iteration ~{per_iteration * factor:.1f} s, so ~{minutes(20):.1f} min for 20 '
          f'iterations and ~{minutes(100):.1f} min for the 100-iteration cap, on this device')
    print(f'FLOPs at SOP size: one Lloyd iteration 2NkD = {2 * SOP_N * SOP_K * SOP_D:.2e}, '
          f'seeding about the same in k sequential matrix-vector products')
    print('command:', shlex.join([sys.executable, *sys.argv]))


if __name__ == '__main__':
    main()
