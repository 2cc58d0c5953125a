"""Evaluate a saved model on the test split: Recall@K, MAP@R, R-Precision and NMI (--nmi off to
leave NMI out); for a run with --holdout_classes also its held-out classes, as in training.

    python test.py --resume ckps/run/ckp_ep30.pth.tar [--data_root DataSet] [--device cuda]

For checkpoints of this project every flag defaults to the value the run was trained with
(utils/config.py resolves them as for resuming a run), and the network is built as it was
trained: its --net, --dim and the pooling of its training data set (DataSet/specs.py). A --data
other than the training's evaluates that data set with that network, and says so. An official
checkpoint needs --data, --net, --dim, --width and --origin_width on the command line.
"""
import sys

import torch

import DataSet
import models
from common.errors import InputError
from common.log_format import HOLDOUT_PREFIX, format_recalls, holdout_line
from MMSI_train import last_line
from utils.build import build_model, wrap_network
from utils.config import resolve
from utils.distributed import Distributed
from utils.evaluation import NonFiniteEmbeddings, evaluate_network, evaluation_loaders


def evaluate_checkpoint(argv=None):
    """The metrics row of the --resume checkpoint, printed as one line (and the holdout
    classes' line)."""
    config, checkpoint, splits, _ = resolve(argv, evaluate_only=True)
    if checkpoint is None:
        raise InputError('--resume: give the checkpoint to evaluate')
    device, dist = torch.device(config.device), Distributed()
    model, weights_note = build_model(network_as_trained(config, checkpoint), checkpoint)
    model.to(device)
    if weights_note:  # a checkpoint without a checksum (utils/checkpoint.py)
        print(f'Note: {weights_note}')
    dataset = DataSet.create(config.data, config.data_root, config.width, config.origin_width,
                             splits=splits, max_image_pixels=config.max_image_pixels)
    note = other_data_note(config, checkpoint, model)
    if note:
        print(note)
    try:
        metrics = evaluate_network(wrap_network(config, model, dist, device),
                                   evaluation_loaders(dataset, config, device), config,
                                   device=device, dist=dist, final=True,
                                   seed=config.seed if checkpoint.get('args') else 0)
    except NonFiniteEmbeddings:
        raise InputError(f'--resume {config.resume}: the network gives non-finite embeddings '
                         f'on {dataset.source}') from None
    epoch = checkpoint.get('epoch', '?')
    test_only = {key: value for key, value in metrics.items()
                 if not key.startswith(HOLDOUT_PREFIX)}
    print(f'{config.resume} (epoch {epoch}) on {dataset.source}: {format_recalls(test_only)}')
    if dataset.holdout is not None:
        print(holdout_line(f'epoch {epoch}', metrics))
    return metrics


def network_as_trained(config, checkpoint):
    """The configuration to build the network from: for a checkpoint that saved its arguments
    (ours), its --net, --dim and training data set (which decides the pooling); `config` as
    given for an official checkpoint. InputError when --net or --dim is given another value
    than the checkpoint's."""
    trained = checkpoint.get('args')
    if not trained:
        return config
    given = {'net': models.canonical_name(config.net), 'dim': config.dim}
    for flag, value in given.items():
        saved = models.canonical_name(trained[flag]) if flag == 'net' else trained[flag]
        if value != saved:
            raise InputError(f'--{flag} {getattr(config, flag)}: {config.resume} was trained '
                             f'with --{flag} {trained[flag]}; test.py evaluates the network as '
                             f'trained (leave --{flag} out)')
    return config.replace(net=trained['net'], dim=trained['dim'], data=trained['data'])


def other_data_note(config, checkpoint, model):
    """The line saying that --data is not the data set the network was trained on, or None."""
    trained = (checkpoint.get('args') or {}).get('data')
    if trained is None or trained == config.data:
        return None
    pooling = getattr(model, 'pooling', None)  # ViT has none: it reads the class token
    how = f' ({pooling} pooling)' if pooling else ''
    return f'Note: evaluating on {config.data} with the network as trained on {trained}{how}'


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
