"""Forward + backward time of every vectorised loss against the per-anchor loop reference of
the tests, at the training batch size.

    python benchmarks/bench_losses.py [--batch 80 --dim 512 --repeats 20]
"""
import argparse
import os
import platform
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests', 'losses')]

import losses  # noqa: E402
import loss_reference as ref  # noqa: E402


def dot_sim(emb):
    return lambda i, j: (emb[i] * emb[j]).sum()


# name -> (selection(emb, labels), value(emb, chosen)), each loss at its default parameters
REFERENCES = {
    'Con': (lambda e, y: ref.contrastive_selection(e, y, 0.5),
            lambda e, chosen: ref.contrastive_value(e, e, chosen)),
    'MS': (lambda e, y: ref.ms_selection(e, y, 0.1), lambda e, chosen: ref.ms_value(e, e, chosen)),
    'Triplet': (lambda e, y: ref.triplet_selection(dot_sim(e), y, y, 0.1),
                lambda e, chosen: ref.triplet_value(dot_sim(e), len(e), chosen, 0.1)),
    'Circle': (lambda e, y: ref.both_sided_selection(y, y),
               lambda e, chosen: ref.circle_value(dot_sim(e), len(e), chosen)),
    'SupCon': (lambda e, y: ref.supcon_selection(y, y),
               lambda e, chosen: ref.supcon_value(dot_sim(e), len(e), chosen)),
}


def seconds_per_call(fn, repeats):
    fn()  # warm-up
    tic = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - tic) / repeats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--batch', type=int, default=80)
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--instances', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--loop_repeats', type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(args.batch, args.dim), dim=1)
    labels = torch.arange(args.batch) // args.instances
    print(f'# {platform.processor() or platform.machine()}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, B={args.batch}, D={args.dim}, float32')
    print('| loss | vectorised fwd+bwd (ms) | loop reference fwd+bwd (ms) | speed-up |')
    print('|---|---|---|---|')
    for name, (select, value) in REFERENCES.items():
        criterion = losses.create(name)

        def vectorised():
            x = emb.clone().requires_grad_()
            criterion(x, labels).backward()

        def loop():
            x = emb.clone().requires_grad_()
            value(x, select(x.detach(), labels)).backward()

        fast = seconds_per_call(vectorised, args.repeats)
        slow = seconds_per_call(loop, args.loop_repeats)
        print(f'| {name} | {fast * 1e3:.2f} | {slow * 1e3:.0f} | {slow / fast:.0f}x |')


if __name__ == '__main__':
    main()
