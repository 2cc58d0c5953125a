"""A new backbone through the training entry point: one MMSI epoch (one iteration: the 6
training classes x 3 images in one batch) on the tiny Glyphs subset with each meta-gradient
method, then the evaluation and the checkpoint.

ViT-S/16 and EfficientNet-Lite0 (timm's 'same' padding, ReLU6, depthwise convolutions; about
6 s each) only: at 32 px they run in seconds, and what the entry point adds (the
MixedPrecision wrapper's parameter names under functional_call, the dictionary, evaluation,
checkpoints) is the same for every network; ResNet-50 took about 30 s here (three
iterations), and tests/models/test_resnet.py checks its meta-gradients directly. The first
test of a process also pays torch's one-time compilation of its forward-mode rules (about 15 s
on a busy 2-core machine); each ViT test itself takes about 3 s."""
import json

import pytest
import torch

import MMSI_train


def run_args(root, save_dir, net, method):
    return ['--data', 'glyphs', '--data_root', root, '--net', net, '--dim', '16',
            '--width', '32', '--origin_width', '36', '--batch_size', '18', '--num_instances', '3',
            '--val_batch_size', '3', '--epochs', '1', '--save_step', '1',
            '--save_dir', str(save_dir), '--pretrained', 'none', '--nThreads', '0',
            '--loss', 'MS', '--margin', '0.1', '--lr', '1e-5', '--seed', '0', '--progress', '0',
            '--eval_batch_size', '24', '--MMSI', '1', '--meta_grad', method,
            '--dict_min_classes', '2', '--eval_first', '0', '--check_images', '0']


@pytest.mark.filterwarnings('ignore:.*torch.jit.script.*:FutureWarning')
@pytest.mark.parametrize('net, method', [('ViT_S16', 'jvp'), ('ViT_S16', 'exact'),
                                         ('EfficientNetLite0', 'jvp'),
                                         ('EfficientNetLite0', 'exact')])
def test_one_mmsi_epoch(glyphs_root, tmp_path, net, method):
    save_dir = tmp_path / net
    # oneDNN compiles kernels for every new shape (6-image batches, 3-image validation batches,
    # forward-mode and backward passes, 24-image evaluation): for so few calls the native
    # kernels are many times faster (measured: 58 s against 20 s for three iterations)
    with torch.backends.mkldnn.flags(enabled=False):
        assert MMSI_train.main(run_args(glyphs_root, save_dir, net, method)) == 0
    rows = [json.loads(line) for line in (save_dir / 'metrics.jsonl').read_text().splitlines()]
    assert (save_dir / 'ckp_ep1.pth.tar').is_file()
    assert rows[-1]['epoch'] == 1 and 0 <= rows[-1]['R@1'] <= 1
    # at least one MMSI update went through the meta step (not all skipped)
    assert rows[-1]['iterations'] > sum(rows[-1]['skipped'].values())
