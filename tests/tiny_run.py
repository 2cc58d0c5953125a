"""The flags of a tiny end-to-end run on the Glyphs subset of conftest.glyphs_root (a helper
module: test modules import it, never each other)."""
import json
import os


def run_args(root, save_dir, *extra, mmsi=0, epochs=2):
    return ['--data', 'glyphs', '--data_root', root, '--width', '64', '--origin_width', '72',
            '--batch_size', '6', '--num_instances', '3', '--val_batch_size', '3',
            '--epochs', str(epochs), '--save_step', '1', '--save_dir', str(save_dir),
            '--pretrained', 'none', '--nThreads', '0', '--loss', 'MS', '--margin', '0.1',
            '--lr', '1e-4', '--seed', '0', '--progress', '0', '--print_freq', '1',
            '--eval_batch_size', '24', '--MMSI', str(mmsi), *extra]


def metrics(save_dir):
    with open(os.path.join(save_dir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]
