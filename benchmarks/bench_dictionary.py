"""Per-iteration cost of the semi-global dictionary as it grows: one push of a batch
(80 embeddings, 16 classes) and the view the G-loss reads, for dictionaries of 100 to 11,318
classes (d_size 5: up to the SOP size). The push must not grow with the dictionary.

    python benchmarks/bench_dictionary.py [--device cuda]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.semi_global import SemiGlobalDictionary  # noqa: E402

DIM, D_SIZE, BATCH, K = 512, 5, 80, 5


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--pushes', type=int, default=200)
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    print(f'# {args.device}, torch {torch.__version__}, batch {BATCH} ({BATCH // K} classes), '
          f'dim {DIM}, d_size {D_SIZE}')
    print('| classes stored | rows | push (ms) | tensors() (ms) |')
    print('|---|---|---|---|')
    for classes in (100, 1000, 11318):
        store = SemiGlobalDictionary(D_SIZE, DIM, classes * D_SIZE, device)
        emb = torch.randn(BATCH, DIM, device=device)
        for start in range(0, classes, BATCH // K):  # fill it
            labels = torch.arange(start, start + BATCH // K).repeat_interleave(K) % classes
            store.push(emb, labels)
        generator = torch.Generator().manual_seed(0)
        batches = [torch.randperm(classes, generator=generator)[:BATCH // K].repeat_interleave(K)
                   for _ in range(args.pushes)]
        sync()
        tic = time.perf_counter()
        for labels in batches:
            store.push(emb, labels)
        sync()
        push_ms = (time.perf_counter() - tic) / args.pushes * 1e3
        tic = time.perf_counter()
        for _ in range(args.pushes):
            store.tensors()
        view_ms = (time.perf_counter() - tic) / args.pushes * 1e3
        print(f'| {store.num_classes} | {len(store)} | {push_ms:.3f} | {view_ms:.4f} |')


if __name__ == '__main__':
    main()
