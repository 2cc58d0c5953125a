"""Reliability: exact resume, SIGKILL / SIGTERM, NaN losses, and every bad input of the
README table (one clear message, a non-zero exit, existing files untouched)."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import MMSI_train
import trainer
from test_MMSI_train import run_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    return torch.load(path, weights_only=False)


def epochs_in(save_dir):
    with open(os.path.join(save_dir, 'metrics.jsonl')) as f:
        return [json.loads(line)['epoch'] for line in f]


def test_three_epochs_equal_one_plus_two_with_resume(glyphs_root, tmp_path):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    extra = ('--save_step', '100')  # evaluate at the start and the end only
    assert MMSI_train.main(run_args(glyphs_root, straight, *extra, mmsi=1, epochs=3)) == 0
    assert MMSI_train.main(run_args(glyphs_root, split, *extra, mmsi=1, epochs=1)) == 0
    assert MMSI_train.main(run_args(glyphs_root, split, *extra, '--resume',
                                    str(split / 'last.pth.tar'), mmsi=1, epochs=3)) == 0
    a, b = load(straight / 'last.pth.tar'), load(split / 'last.pth.tar')
    assert a['epoch'] == b['epoch'] == 3 and a['global_step'] == b['global_step'] == 9
    assert a['model'].keys() == b['model'].keys()
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    for key in ('emb', 'labels'):
        assert torch.equal(a['dictionary'][key], b['dictionary'][key])
    assert a['dictionary']['rows'] == b['dictionary']['rows']
    assert a['val_consumed'] == b['val_consumed']
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    for index in state_a:
        for key in ('exp_avg', 'exp_avg_sq'):
            assert torch.equal(state_a[index][key], state_b[index][key])
    losses_a = [row.get('loss') for row in a['metrics']]
    losses_b = [row.get('loss') for row in b['metrics']]
    assert losses_a == losses_b and a['metrics'][-1]['R@1'] == b['metrics'][-1]['R@1']


def test_same_seed_same_run_twice(glyphs_root, tmp_path):
    rows = []
    for name in ('first', 'second'):
        assert MMSI_train.main(run_args(glyphs_root, tmp_path / name, mmsi=1)) == 0
        with open(tmp_path / name / 'metrics.jsonl') as f:
            rows.append([{k: v for k, v in json.loads(line).items() if 'seconds' not in k}
                         for line in f])
    assert rows[0] == rows[1]


def start_training(glyphs_root, save_dir, *extra, epochs=4):
    command = [sys.executable, os.path.join(ROOT, 'MMSI_train.py'),
               *run_args(glyphs_root, save_dir, *extra, mmsi=1, epochs=epochs)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_for(condition, process, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[0]
        assert time.time() < deadline, 'timed out'
        time.sleep(0.05)


def test_sigkill_mid_run_then_resume_completes(glyphs_root, tmp_path):
    save_dir = tmp_path / 'killed'
    process = start_training(glyphs_root, save_dir)
    wait_for(lambda: (save_dir / 'ckp_ep1.pth.tar').exists(), process)
    process.kill()  # SIGKILL: no handler runs
    process.wait()
    assert process.returncode == -signal.SIGKILL
    checkpoint = load(save_dir / 'last.pth.tar')  # a complete file, whatever moment it was killed
    assert checkpoint['epoch'] >= 1
    resume = run_args(glyphs_root, save_dir, '--resume', str(save_dir / 'last.pth.tar'),
                      mmsi=1, epochs=4)
    assert MMSI_train.main(resume) == 0
    final = load(save_dir / 'last.pth.tar')
    assert final['epoch'] == 4 and final['iteration'] == 0 and final['global_step'] == 12
    assert epochs_in(save_dir) == [0, 1, 2, 3, 4]


def test_sigterm_saves_at_an_iteration_boundary_and_exits_cleanly(glyphs_root, tmp_path):
    save_dir = tmp_path / 'terminated'
    process = start_training(glyphs_root, save_dir, epochs=30)
    wait_for(lambda: (save_dir / 'ckp_ep1.pth.tar').exists(), process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert 'Traceback' not in output
    checkpoint = load(save_dir / 'last.pth.tar')
    epoch, iteration = checkpoint['epoch'], checkpoint['iteration']
    assert f'SIGTERM received: stopped after epoch {epoch} iteration {iteration}' in output
    assert checkpoint['global_step'] == 3 * (epoch - 1) + iteration
    resume = run_args(glyphs_root, save_dir, '--resume', str(save_dir / 'last.pth.tar'),
                      mmsi=1, epochs=epoch + 1)
    assert MMSI_train.main(resume) == 0
    assert load(save_dir / 'last.pth.tar')['global_step'] == 3 * (epoch + 1)
    assert epochs_in(save_dir) == list(range(epoch + 2))


def inject_nan(monkeypatch, global_iteration):
    """Turn the loss of one global iteration (counted from 1) into NaN."""
    original = trainer.optimizer_step

    def poisoned(run, loss):
        if run.global_step + 1 == global_iteration:
            loss = loss * float('nan')
        return original(run, loss)
    monkeypatch.setattr(trainer, 'optimizer_step', poisoned)


def test_nan_loss_stops_after_saving_the_last_finite_state(glyphs_root, tmp_path, monkeypatch,
                                                           capsys):
    save_dir = tmp_path / 'nan'
    inject_nan(monkeypatch, 5)  # global iteration 5 = epoch 2, iteration 2
    status = MMSI_train.main(run_args(glyphs_root, save_dir, mmsi=1, epochs=3))
    assert status == MMSI_train.EXIT_NON_FINITE
    log = (save_dir / 'log.txt').read_text()
    assert 'error: non-finite loss at epoch 2 iteration 2 (loss is nan)' in log
    checkpoint = load(save_dir / 'last.pth.tar')
    assert (checkpoint['epoch'], checkpoint['iteration'], checkpoint['global_step']) == (2, 1, 4)
    assert all(torch.isfinite(t).all() for t in checkpoint['model'].values()
               if t.is_floating_point())
    monkeypatch.undo()
    resume = run_args(glyphs_root, save_dir, '--resume', str(save_dir / 'last.pth.tar'),
                      mmsi=1, epochs=3)
    assert MMSI_train.main(resume) == 0
    assert epochs_in(save_dir) == [0, 1, 2, 3]


# ---- bad input: one message, exit status 2, nothing written or changed ----------------------

def snapshot(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(folder))}


@pytest.fixture(scope='module')
def finished_run(glyphs_root, tmp_path_factory):
    """A finished one-epoch run whose files the bad-input tests must leave alone."""
    save_dir = tmp_path_factory.mktemp('finished') / 'run'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, epochs=1)) == 0
    return save_dir


def resnet_file(tmp_path):
    import torchvision
    path = tmp_path / 'resnet18.pth'
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def ours_with(tmp_path, finished_run, **changes):
    checkpoint = load(finished_run / 'last.pth.tar')
    checkpoint['args'] = dict(checkpoint['args'], **changes)
    path = tmp_path / 'changed.pth.tar'
    torch.save(checkpoint, path)
    return path


def read_only_dir(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits: sysfs refuses new entries even to root
        return '/sys/mmsi_read_only_test/run'
    folder = tmp_path / 'read_only'
    folder.mkdir()
    folder.chmod(0o500)
    return str(folder / 'run')


BAD_INPUTS = {
    'missing data set folder': (
        lambda t, r: ['--data', 'cub', '--data_root', str(t / 'nowhere')],
        r'data set folder not found: .*nowhere/CUB_200_2011'),
    'unknown --data': (lambda t, r: ['--data', 'birds'], r"--data 'birds' is unknown"),
    'batch_size not a multiple of num_instances': (
        lambda t, r: ['--batch_size', '7'], r'--batch_size 7 must be a multiple .* \(3\)'),
    'val_batch_size larger than the classes': (
        lambda t, r: ['--MMSI', '1', '--val_batch_size', '9', '--val_num_instances', '1'],
        r'--val_batch_size 9 asks for 9 classes .* only 6 classes'),
    'unsupported --width': (lambda t, r: ['--width', '80'], r'--width 80: BN-Inception needs'),
    '--resume missing file': (
        lambda t, r: ['--resume', str(t / 'missing.pth.tar')], r'--resume .*missing.pth.tar: no such file'),
    '--resume not a checkpoint': (
        lambda t, r: ['--resume', str(r / 'log.txt')], r'--resume .*log.txt: not a readable checkpoint'),
    '--resume of another architecture': (
        lambda t, r: ['--resume', str(ours_with(t, r, net='ResNet50'))],
        r'was trained with --net ResNet50, this run has --net BN_Inception'),
    '--resume official checkpoint of another network': (
        lambda t, r: ['--resume', str(official(t))], r'does not hold BN-Inception weights'),
    '--resume with another embedding size': (
        lambda t, r: ['--resume', str(r / 'last.pth.tar'), '--dim', '128'],
        r'was trained with --dim 512, this run has --dim 128'),
    '--pretrained of the wrong network': (
        lambda t, r: ['--pretrained', str(resnet_file(t))],
        r'resnet18.pth does not hold BN-Inception weights'),
    'save_dir on a read-only path': (
        lambda t, r: ['--save_dir', read_only_dir(t)], r'--save_dir .* is not writable'),
    'save_dir already holding a run': (
        lambda t, r: ['--save_dir', str(r)], r'already holds a run .* --resume'),
}


def official(tmp_path):
    import torchvision
    path = tmp_path / 'official_resnet.pth.tar'
    torch.save({'state_dict': torchvision.models.resnet18().state_dict(), 'epoch': 3}, path)
    return path


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_gets_one_clear_message(case, glyphs_root, finished_run, tmp_path, capsys):
    make_flags, message = BAD_INPUTS[case]
    before = snapshot(finished_run)
    flags = make_flags(tmp_path, finished_run)
    save_dir = tmp_path / 'fresh'
    args = run_args(glyphs_root, save_dir, *flags)
    capsys.readouterr()
    assert MMSI_train.main(args) == MMSI_train.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    assert re.search(message, err[0]), err[0]
    assert snapshot(finished_run) == before
    assert not save_dir.exists() or not os.listdir(save_dir)


def write_corrupt_copy(glyphs_root, tmp_path):
    """The Glyphs subset with one test image replaced by garbage bytes."""
    import shutil
    root = tmp_path / 'corrupt_root'
    shutil.copytree(os.path.join(glyphs_root, 'Glyphs'), root / 'Glyphs', symlinks=False)
    with open(root / 'Glyphs' / 'images.txt') as f:
        last = f.read().split()[-1]
    (root / 'Glyphs' / 'images' / last).write_bytes(b'not an image')
    return str(root), last


def test_undecodable_image_is_named_and_can_be_skipped(glyphs_root, tmp_path, capsys):
    root, bad = write_corrupt_copy(glyphs_root, tmp_path)
    assert MMSI_train.main(run_args(root, tmp_path / 'stop', epochs=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'cannot decode image' in err[0] and bad in err[0]
    with pytest.warns(UserWarning, match=f'skipping unreadable image .*{bad}'):
        assert MMSI_train.main(run_args(root, tmp_path / 'skip', '--skip_bad_images', '1',
                                        epochs=1)) == 0
    log = (tmp_path / 'skip' / 'log.txt').read_text()
    assert len(re.findall(f'skipping unreadable image .*{bad}', log)) == 1

    # The tensor pipeline in a loader worker process: the worker appends the line to log.txt
    # without clobbering what the main process writes, once although the gallery is read twice.
    assert MMSI_train.main(run_args(root, tmp_path / 'worker', '--skip_bad_images', '1',
                                    '--input_pipeline', 'tensor', '--nThreads', '1',
                                    epochs=1)) == 0
    log = (tmp_path / 'worker' / 'log.txt').read_text()
    assert len(re.findall(f'skipping unreadable image .*{bad}', log)) == 1
    assert log.startswith('[') and 'New run' in log.splitlines()[0]
    assert 'Recall epoch 0' in log and 'Recall epoch 1' in log and 'Training finished' in log
