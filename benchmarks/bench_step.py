"""Seconds per training iteration: plain DML, MMSI with the exact meta-gradient and MMSI with
the forward-mode (jvp) fast path, through the trainers' own step functions, on the same
backbone and batch (random images, no data loading; the dictionary already warm), for one
loss or several (each at its own default parameters unless --margin is given).

    python benchmarks/bench_step.py [--width 64 --batch 40 --val_batch 10 --iters 10]
    python benchmarks/bench_step.py --losses Con,MS,Triplet,Circle,SupCon --methods plain,jvp
    python benchmarks/bench_step.py --device cuda --width 227 --batch 80 --amp bf16
"""
import argparse
import itertools
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import models  # noqa: E402
import trainer  # noqa: E402
import trainer_MMSI  # noqa: E402
from DataSet.loaders import Loaders  # noqa: E402
from utils.build import build_criteria, build_optimizer, wrap_network  # noqa: E402
from utils.config import parse_args  # noqa: E402
from utils.distributed import Distributed  # noqa: E402
from utils.semi_global import SemiGlobalDictionary  # noqa: E402
from utils.training_run import TrainingRun  # noqa: E402


def make_run(args, loss, mmsi, meta_grad):
    device = torch.device(args.device)
    flags = ['--loss', loss, '--lr', '1e-5', '--MMSI', str(int(mmsi)),
             '--meta_grad', meta_grad if mmsi else 'jvp', '--amp', args.amp, '--seed', '0',
             '--dict_min_classes', '1', '--device', args.device, '--net', args.net,
             '--width', str(args.width)]
    flags += ['--margin', str(args.margin)] if args.margin is not None else []
    flags += ['--channels_last', '1'] if args.channels_last else []
    train_args = parse_args(flags)
    torch.manual_seed(0)
    model = models.create(args.net, data='cub', dim=512, width=args.width).to(device)
    dist = Distributed()
    run = TrainingRun(args=train_args, dist=dist, device=device, run_id='bench', model=model,
                      network=wrap_network(train_args, model, dist, device),
                      optimizer=build_optimizer(train_args, model),
                      criteria=build_criteria(train_args),
                      step=trainer_MMSI.step if mmsi else trainer.step)
    classes = args.batch // args.instances
    images = torch.randn(args.batch, 3, args.width, args.width) * 50
    labels = torch.arange(args.batch) // args.instances
    val_images = torch.randn(args.val_batch, 3, args.width, args.width) * 50
    val_labels = torch.randint(0, classes, (args.val_batch,))
    run.loaders = Loaders(None, None, itertools.repeat((val_images, val_labels)))
    if mmsi:
        run.dictionary = SemiGlobalDictionary(5, 512, 100 * 5, device)
        for start in range(0, 100, classes):  # a warm dictionary of 100 classes
            labels = torch.arange(start, start + classes).repeat_interleave(args.instances)
            run.dictionary.push(torch.nn.functional.normalize(
                torch.randn(len(labels), 512, device=device), dim=1), labels)
    return run, (images, labels)


def timed_step(run, batch):
    """Seconds of one step, and the peak GPU memory it reached (GiB; None on the CPU)."""
    cuda = run.device.type == 'cuda'
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tic = time.perf_counter()
    stats = run.step(run, *batch)
    if cuda:
        torch.cuda.synchronize()
    assert 'skipped' not in stats, stats
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None
    return time.perf_counter() - tic, peak


def median_seconds(runs, iters):
    """The methods' steps interleaved (plain, MMSI, plain, MMSI, ...), so that a slow moment of
    a shared machine hits them alike; the median seconds and the largest peak per method."""
    for run, batch in runs.values():  # warm-up
        for _ in range(2):
            timed_step(run, batch)
    seconds = {method: [] for method in runs}
    peaks = {method: None for method in runs}
    for _ in range(iters):
        for method, (run, batch) in runs.items():
            took, peak = timed_step(run, batch)
            seconds[method].append(took)
            peaks[method] = peak if peaks[method] is None else max(peak, peaks[method])
    return {method: (statistics.median(values), peaks[method])
            for method, values in seconds.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--net', default='BN_Inception', help='BN_Inception | ResNet50 | ViT_S16 | EfficientNetLite0')
    parser.add_argument('--width', type=int, default=64)
    parser.add_argument('--batch', type=int, default=40)
    parser.add_argument('--instances', type=int, default=5)
    parser.add_argument('--val_batch', type=int, default=10)
    parser.add_argument('--losses', '--loss', default='MS', help='comma-separated')
    parser.add_argument('--margin', type=float, default=None, help="default: each loss's own")
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--amp', default='off', choices=('off', 'bf16', 'fp16'))
    parser.add_argument('--channels_last', action='store_true')
    parser.add_argument('--methods', default='plain,exact,jvp')
    args = parser.parse_args()
    torch.set_flush_denormal(True)

    where = (torch.cuda.get_device_name(args.device) if args.device.startswith('cuda')
             else f'{platform.machine()} CPU, {torch.get_num_threads()} threads')
    print(f'# {where}, torch {torch.__version__}, {args.net} width {args.width}, batch '
          f'{args.batch} ({args.batch // args.instances}x{args.instances}), val batch '
          f'{args.val_batch}, amp {args.amp}{", channels_last" if args.channels_last else ""}')
    print('| loss | iteration | median s/it | images/s | x plain | peak GPU GiB |')
    print('|---|---|---|---|---|---|')
    for loss in args.losses.split(','):
        runs = {method: make_run(args, loss, mmsi=method != 'plain', meta_grad=method)
                for method in args.methods.split(',')}
        results = median_seconds(runs, args.iters)
        plain_time = results['plain'][0] if 'plain' in results else None
        for method, (seconds, peak) in results.items():
            ratio = f'{seconds / plain_time:.2f}' if plain_time else '-'
            pair_weights = runs[method][0].args.pair_weights
            label = 'plain' if method == 'plain' else f'MMSI ({method}, {pair_weights})'
            peak_text = f'{peak:.2f}' if peak is not None else '-'
            print(f'| {loss} | {label} | {seconds:.3f} | {args.batch / seconds:.1f} | {ratio} '
                  f'| {peak_text} |', flush=True)
        del runs


if __name__ == '__main__':
    main()
