"""Evaluate a saved model on the test split: Recall@K, MAP@R, R-Precision and NMI (--nmi off to
leave NMI out); for a run with --holdout_classes also its held-out classes, as in training.

    python test.py --resume ckps/run/ckp_ep30.pth.tar [--data_root DataSet] [--device cuda]

For checkpoints of this project every flag defaults to the value the run was trained with
(utils/config.py resolves them as for resuming a run); an official checkpoint needs --data,
--net, --dim, --width and --origin_width on the command line.
"""
import sys

import torch
from torch.utils.data import DataLoader

import DataSet
import models
from common.errors import InputError
from common.log_format import HOLDOUT_PREFIX, format_recalls, holdout_line
from evaluations import extract_features, recall_ks_for, split_metrics
from MMSI_train import holdout_metrics, last_line
from utils.config import resolve


def evaluate_checkpoint(argv=None):
    config, checkpoint, splits, _ = resolve(argv, evaluate_only=True)
    if checkpoint is None:
        raise InputError('--resume: give the checkpoint to evaluate')
    device = torch.device(config.device)
    model = models.create(config.net, data=config.data, dim=config.dim, pretrained=None,
                          width=config.width)
    models.load_pretrained(model, config.resume, loaded=checkpoint)
    model.to(device)
    dataset = DataSet.create(config.data, config.data_root, config.width, config.origin_width,
                             splits=splits)

    def embed(images):
        if images is None:
            return None, None
        loader = DataLoader(images, batch_size=config.eval_batch_size,
                            num_workers=config.nThreads, pin_memory=device.type == 'cuda')
        emb, labels = extract_features(model, loader, device, progress=config.progress)
        return emb.to(device), labels.to(device)
    metrics = split_metrics(*embed(dataset.gallery), recall_ks_for(config.data),
                            *embed(dataset.query), nmi=config.nmi != 'off')
    if dataset.holdout is not None:
        metrics.update(holdout_metrics(*embed(dataset.holdout)))
    epoch = checkpoint.get('epoch', '?')
    test_only = {key: value for key, value in metrics.items()
                 if not key.startswith(HOLDOUT_PREFIX)}
    print(f'{config.resume} (epoch {epoch}) on {dataset.source}: {format_recalls(test_only)}')
    if dataset.holdout is not None:
        print(holdout_line(f'epoch {epoch}', metrics))
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
