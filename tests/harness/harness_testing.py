"""Helpers of the harness's tests: trial folders written by hand with known metrics, the
flags of a tiny Glyphs training, and compare.py started as a process and watched.

The trainings of the signal tests use the loss of tests/harness_gate_loss.py, which holds them
in their loss until the test has sent its signal: no test depends on how fast a training is."""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from harness.grid import Cell, trial_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GATE_MODULE = os.path.join(ROOT, 'tests', 'harness_gate_loss.py')
TIMEOUT = 300  # seconds; every wait below is for a condition, this only bounds a hang
RELATIVE_OUT = 'harness_relative_out'  # also the folder that must not appear in the repository


def write_trial(out, loss, mmsi, pair_weights, seed, r1_by_epoch, vary=None, epochs=None,
              trained_by=(), holdout_by_epoch=None, select=(), recall=None):
    """A trial's folder holding metrics.jsonl (R@1 as given, MAP@R = R@1 / 4, R-Precision =
    R@1 / 2; `holdout/MAP@R` as given; `recall` {K: f}: R@K = f(R@1)) and its cell descriptor
    (`select`: its --select flags)."""
    cell = Cell.make(loss, mmsi, pair_weights, vary or {})
    name = trial_name(cell, seed)
    folder = out / 'runs' / name
    folder.mkdir(parents=True)
    rows = []
    for epoch, r1 in r1_by_epoch.items():
        rows.append({'epoch': epoch, 'loss': 1.0, 'R@1': r1, 'MAP@R': r1 / 4,
                     'R-Precision': r1 / 2})
        rows[-1].update({f'R@{k}': f(r1) for k, f in (recall or {}).items()})
        if holdout_by_epoch is not None:
            rows[-1]['holdout/MAP@R'] = holdout_by_epoch[epoch]
    (folder / 'metrics.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
    descriptor = dict(loss=loss, mmsi=mmsi, pair_weights=pair_weights, vary=vary or {},
                      seed=seed, name=name, flags=[], trained_by=list(trained_by),
                      epochs=max(r1_by_epoch) if epochs is None else epochs, select=list(select))
    (out / 'runs' / f'{name}.cell.json').write_text(json.dumps(descriptor))


def tiny_flags(glyphs_root, epochs=1):
    """Training flags of a tiny run on the Glyphs subset (conftest.glyphs_root)."""
    return ['--data', 'glyphs', '--data_root', glyphs_root, '--width', '64',
            '--origin_width', '72', '--batch_size', '6', '--num_instances', '3',
            '--val_batch_size', '3', '--epochs', str(epochs), '--save_step', '1',
            '--nThreads', '0', '--progress', '0', '--print_freq', '1',
            '--eval_batch_size', '24', '--lr', '1e-4', '--pretrained', 'none']


def start_harness(arguments, output, cwd=ROOT, env=None):
    """compare.py in a process group of its own, its output (stdout and stderr) to `output`."""
    with open(output, 'w') as f:
        return subprocess.Popen([sys.executable, os.path.join(ROOT, 'compare.py'), *arguments],
                                cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_for(condition, what, harness=None, output=None):
    """Poll `condition` until it holds; fail early when `harness` has exited."""
    deadline = time.time() + TIMEOUT
    while not condition():
        if harness is not None and harness.poll() is not None:
            pytest.fail(f'the harness exited ({harness.returncode}) before {what}:\n'
                        + (output.read_text() if output else ''))
        assert time.time() < deadline, f'timed out waiting for {what}'
        time.sleep(0.1)


def gated_trainings(gate, count, harness, output):
    """The pids of `count` trainings waiting at the gate of tests/harness_gate_loss.py."""
    markers = lambda: glob.glob(f'{gate}.waiting.*')  # noqa: E731
    wait_for(lambda: len(markers()) >= count, f'{count} training(s) at the gate', harness, output)
    pids = [int(marker.rsplit('.', 1)[1]) for marker in markers()]
    for marker in markers():
        os.remove(marker)
    return pids


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_grid(finished_grid, where):
    base, arguments, _ = finished_grid
    shutil.copytree(base / RELATIVE_OUT, where, symlinks=True)
    return arguments[2:]  # without --out
