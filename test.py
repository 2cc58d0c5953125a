"""Evaluate a saved model on the test split: Recall@K and MAP@R.

    python test.py --resume ckps/run/ckp_ep30.pth.tar [--data_root DataSet] [--device cuda]

For checkpoints of this project, --data, --net, --dim, --width and --origin_width default to
the values the run was trained with; an official checkpoint needs them on the command line.
"""
import sys

import torch
from torch.utils.data import DataLoader

import DataSet
import models
from evaluations import extract_features, recall_ks_for, retrieval_metrics
from MMSI_train import last_line
from utils.args import build_parser
from utils.build import pick_device
from utils.checkpoint import FORMAT, load_checkpoint
from utils.errors import InputError
from utils.logger import format_recalls

TRAINING_SETUP = ('data', 'net', 'dim', 'width', 'origin_width')


def evaluate_checkpoint(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.resume:
        raise InputError('--resume: give the checkpoint to evaluate')
    checkpoint = load_checkpoint(args.resume)
    if checkpoint.get('format') == FORMAT:  # the run's own settings unless given explicitly
        saved = checkpoint['args']
        parser.set_defaults(**{key: saved[key] for key in TRAINING_SETUP})
        args = parser.parse_args(argv)
    device = pick_device(args.device)
    model = models.create(args.net, data=args.data, dim=args.dim, pretrained=None)
    models.load_pretrained(model, args.resume)
    dataset = DataSet.create(args.data, args.data_root, args.width, args.origin_width)
    loader = DataLoader(dataset.gallery, batch_size=args.eval_batch_size,
                        num_workers=args.nThreads, pin_memory=device.type == 'cuda')
    emb, labels = extract_features(model.to(device), loader, device, progress=args.progress)
    metrics = retrieval_metrics(emb.to(device), labels.to(device), ks=recall_ks_for(args.data))
    epoch = checkpoint.get('epoch', '?')
    print(f'{args.resume} (epoch {epoch}) on {dataset.source}: {format_recalls(metrics)}')
    return metrics


def main(argv=None):
    try:
        evaluate_checkpoint(argv)
    except InputError as err:
        print(f'error: {last_line(err)}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    sys.exit(main())
