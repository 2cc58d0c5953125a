"""Reliability: exact resume, SIGKILL / SIGTERM, NaN losses, a full disk (bad input and the
run-folder rules: tests/test_bad_input.py)."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

import MMSI_train
import trainer
import trainer_MMSI
from tiny_run import run_args
from utils import evaluation
from utils.distributed import Distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    return torch.load(path, weights_only=False)


def epochs_in(save_dir):
    with open(os.path.join(save_dir, 'metrics.jsonl')) as f:
        return [json.loads(line)['epoch'] for line in f]


STRAIGHT = ('--save_step', '100')  # evaluate at the start and the end only


@pytest.fixture(scope='module')
def straight_run(glyphs_root, tmp_path_factory):
    """The last checkpoint of an uninterrupted 3-epoch MMSI run, to compare resumed runs with."""
    save_dir = tmp_path_factory.mktemp('straight') / 'run'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, *STRAIGHT, mmsi=1, epochs=3)) == 0
    return load(save_dir / 'last.pth.tar')


def assert_same_run(a, b):
    """Parameters, dictionary, optimizer state, progress and per-epoch losses equal, bit for
    bit."""
    assert a['epoch'] == b['epoch'] and a['global_step'] == b['global_step']
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


def test_three_epochs_equal_one_plus_two_with_resume(glyphs_root, tmp_path, straight_run):
    split = tmp_path / 'split'
    assert MMSI_train.main(run_args(glyphs_root, split, *STRAIGHT, mmsi=1, epochs=1)) == 0
    assert MMSI_train.main(run_args(glyphs_root, split, *STRAIGHT, '--resume',
                                    str(split / 'last.pth.tar'), mmsi=1, epochs=3)) == 0
    resumed = load(split / 'last.pth.tar')
    assert resumed['epoch'] == 3 and resumed['global_step'] == 9
    assert_same_run(straight_run, resumed)


def test_same_seed_same_run_twice(glyphs_root, tmp_path):
    rows = []
    for name in ('first', 'second'):
        assert MMSI_train.main(run_args(glyphs_root, tmp_path / name, mmsi=1)) == 0
        with open(tmp_path / name / 'metrics.jsonl') as f:
            rows.append([{k: v for k, v in json.loads(line).items() if 'seconds' not in k}
                         for line in f])
    assert rows[0] == rows[1]


def test_image_check_and_first_evaluation_leave_the_training_unchanged(glyphs_root, tmp_path):
    # Both create DataLoaders, which draw a seed from the global generator: that must not move
    # the seeded state the network's initial weights and the training are drawn from.
    runs = {'default': (), 'neither': ('--check_images', '0', '--eval_first', '0')}
    for name, flags in runs.items():
        assert MMSI_train.main(run_args(glyphs_root, tmp_path / name, *flags, mmsi=1,
                                        epochs=1)) == 0
    default, neither = (load(tmp_path / name / 'last.pth.tar') for name in runs)
    for key in default['model']:
        assert torch.equal(default['model'][key], neither['model'][key]), key
    assert default['metrics'][-1]['R@1'] == neither['metrics'][-1]['R@1']


def start_training(glyphs_root, save_dir, *extra, epochs=4, mmsi=1, interruption=()):
    """MMSI_train.py (or tests/interrupted_run.py with `interruption`) in a child process with
    its own process group, as a batch system starts it."""
    script = ('tests/interrupted_run.py', *interruption) if interruption else ('MMSI_train.py',)
    command = [sys.executable, *script, *run_args(glyphs_root, save_dir, *extra, mmsi=mmsi,
                                                   epochs=epochs)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def wait_for(condition, process, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[0]
        assert time.time() < deadline, 'timed out'
        time.sleep(0.05)


def log_contains(save_dir, text):
    log = save_dir / 'log.txt'
    return log.exists() and text in log.read_text()


def resume_args(glyphs_root, save_dir, *extra, epochs=3):
    return run_args(glyphs_root, save_dir, *extra, '--resume', str(save_dir / 'last.pth.tar'),
                    mmsi=1, epochs=epochs)


def test_checkpoint_minutes_decide_the_mid_epoch_checkpoints(monkeypatch):
    written = []
    monkeypatch.setattr(MMSI_train, 'save_checkpoint',
                        lambda run, *position: written.append(position))

    def boundary(minutes, seconds_since_last_checkpoint):
        run = SimpleNamespace(
            args=SimpleNamespace(eval_every=0, checkpoint_minutes=minutes), dist=Distributed(),
            device=torch.device('cpu'), stop_signal=None, global_step=5, last_step=5,
            parameters_finite=None,
            last_checkpoint_time=time.monotonic() - seconds_since_last_checkpoint)
        MMSI_train.after_iteration(run, 2, 2, 'meter')
    boundary(0, 10 ** 6)  # 0: off
    boundary(1.5, 80)
    assert written == []
    boundary(1.5, 100)
    assert written == [(2, 2, 'meter')]


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(glyphs_root, tmp_path,
                                                                    straight_run):
    save_dir = tmp_path / 'killed'
    # --checkpoint_minutes 1e-6: last.pth.tar at every iteration boundary; killed in iteration
    # 3, after the warm-up iteration and the first update
    process = start_training(glyphs_root, save_dir, *STRAIGHT, '--checkpoint_minutes', '1e-6',
                             epochs=3, interruption=('kill_in_iteration', '3'))
    output, _ = process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL, output
    checkpoint = load(save_dir / 'last.pth.tar')  # complete, whatever moment it was killed
    assert (checkpoint['epoch'], checkpoint['iteration'], checkpoint['global_step']) == (1, 2, 2)
    assert checkpoint['optimizer']['state']
    assert MMSI_train.main(resume_args(glyphs_root, save_dir, *STRAIGHT)) == 0
    assert_same_run(straight_run, load(save_dir / 'last.pth.tar'))


def test_sigterm_to_the_process_group_with_loader_workers(glyphs_root, tmp_path, straight_run):
    """As SLURM, scancel or timeout send it: the loader workers get it too."""
    save_dir = tmp_path / 'terminated'
    process = start_training(glyphs_root, save_dir, *STRAIGHT, '--nThreads', '2', epochs=3)
    wait_for(lambda: log_contains(save_dir, 'Epoch: [2][1/3]'), process)
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert 'Traceback' not in output and 'Error' not in output
    checkpoint = load(save_dir / 'last.pth.tar')
    epoch, iteration = checkpoint['epoch'], checkpoint['iteration']
    assert f'SIGTERM received: stopped after epoch {epoch} iteration {iteration}' in output
    assert checkpoint['global_step'] == 3 * (epoch - 1) + iteration >= 4
    assert MMSI_train.main(resume_args(glyphs_root, save_dir, *STRAIGHT)) == 0
    assert_same_run(straight_run, load(save_dir / 'last.pth.tar'))


def test_sigterm_during_evaluation_abandons_it_and_resumes(glyphs_root, tmp_path):
    save_dir = tmp_path / 'evaluating'
    small_batches = ('--nThreads', '1', '--eval_batch_size', '6')  # 4 batches, loader workers
    # the second evaluation: after epoch 1
    process = start_training(glyphs_root, save_dir, *small_batches, epochs=1, mmsi=0,
                             interruption=('term_in_evaluation', '2'))
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert 'Traceback' not in output
    assert ('SIGTERM received during the evaluation (abandoned): stopped after epoch 1 '
            'iteration 3') in output
    checkpoint = load(save_dir / 'last.pth.tar')
    assert (checkpoint['epoch'], checkpoint['iteration'], checkpoint['global_step']) == (1, 3, 3)
    assert epochs_in(save_dir) == [0]
    resume = run_args(glyphs_root, save_dir, *small_batches, '--resume',
                      str(save_dir / 'last.pth.tar'), epochs=1)
    assert MMSI_train.main(resume) == 0
    assert epochs_in(save_dir) == [0, 1]  # the abandoned evaluation is done on resuming
    final = load(save_dir / 'last.pth.tar')
    assert final['global_step'] == 3 and all('R@1' in row for row in final['metrics'])


def test_a_requeued_job_reruns_the_same_command_with_resume_auto(glyphs_root, tmp_path):
    """SIGTERM during the first evaluation saves a checkpoint of epoch 0; the batch system then
    reruns the very same command, which continues the run instead of refusing the folder."""
    save_dir = tmp_path / 'requeued'
    flags = ('--resume', 'auto', '--eval_batch_size', '6')
    process = start_training(glyphs_root, save_dir, *flags, epochs=1, mmsi=0,
                             interruption=('term_in_evaluation', '1'))
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert load(save_dir / 'last.pth.tar')['epoch'] == 0
    assert MMSI_train.main(run_args(glyphs_root, save_dir, *flags, epochs=1)) == 0
    log = (save_dir / 'log.txt').read_text()
    assert f'Resuming {save_dir / "last.pth.tar"}' in log and 'Epoch 1 done' in log
    assert epochs_in(save_dir) == [0, 1]


def test_resume_auto_starts_a_new_run_in_an_empty_folder(glyphs_root, tmp_path):
    save_dir = tmp_path / 'fresh'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, '--resume', 'auto', epochs=1)) == 0
    assert (save_dir / 'log.txt').read_text().splitlines()[0].endswith(')')
    assert 'New run' in (save_dir / 'log.txt').read_text()


def test_a_second_signal_exits_at_once(glyphs_root, tmp_path):
    save_dir = tmp_path / 'twice'
    process = start_training(glyphs_root, save_dir, '--checkpoint_minutes', '1e-6', epochs=1,
                             mmsi=0, interruption=('term_thrice_in_iteration', '2'))
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert output.count('SIGTERM received: stopping at the next iteration boundary') == 1
    assert 'second SIGTERM: exiting at once' in output
    assert 'stopped after' not in output and 'Traceback' not in output
    checkpoint = load(save_dir / 'last.pth.tar')  # the one of the boundary before, intact
    assert (checkpoint['epoch'], checkpoint['iteration']) == (1, 1)


def test_sigint_in_the_warm_up_then_handlers_restored(glyphs_root, tmp_path, monkeypatch,
                                                     request):
    """main() in this process: Ctrl-C in the MMSI warm-up stops at the next boundary, and
    afterwards Ctrl-C raises KeyboardInterrupt again. Python's default SIGINT handler is
    installed first: a background job of a non-interactive shell (or nohup) starts with SIGINT
    ignored, and the test must not depend on how the suite was launched."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    original = trainer_MMSI.step

    def step(run, images, labels):
        stats = original(run, images, labels)
        assert stats == {'skipped': 'warmup'}
        os.kill(os.getpid(), signal.SIGINT)
        return stats
    monkeypatch.setattr(trainer_MMSI, 'step', step)
    save_dir = tmp_path / 'interrupted'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, mmsi=1, epochs=1)) == 130
    assert {signum: signal.getsignal(signum) for signum in before} == before
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    checkpoint = load(save_dir / 'last.pth.tar')
    assert (checkpoint['epoch'], checkpoint['iteration']) == (1, 1)
    assert checkpoint['meter']['skipped'] == {'warmup': 1}
    assert 'SIGINT received: stopped after epoch 1 iteration 1' in (save_dir / 'log.txt').read_text()
    monkeypatch.undo()
    assert MMSI_train.main(resume_args(glyphs_root, save_dir, epochs=1)) == 0
    assert epochs_in(save_dir) == [0, 1]


def inject_nan(monkeypatch, global_iteration):
    """Turn the loss of one global iteration (counted from 1) into NaN."""
    original = trainer.optimizer_step

    def poisoned(run, loss):
        if run.global_step + 1 == global_iteration:
            loss = loss * float('nan')
        return original(run, loss)
    monkeypatch.setattr(trainer, 'optimizer_step', poisoned)


def all_finite(checkpoint):
    return all(torch.isfinite(t).all() for t in checkpoint['model'].values()
               if t.is_floating_point())


def test_nan_loss_stops_and_keeps_the_last_checkpoint(glyphs_root, tmp_path, monkeypatch,
                                                      capsys):
    save_dir = tmp_path / 'nan'
    inject_nan(monkeypatch, 5)  # global iteration 5 = epoch 2, iteration 2
    status = MMSI_train.main(run_args(glyphs_root, save_dir, epochs=2))
    assert status == MMSI_train.EXIT_NON_FINITE
    message = 'error: non-finite loss at epoch 2 iteration 2 (loss is nan)'
    assert message in capsys.readouterr().err and message in (save_dir / 'log.txt').read_text()
    checkpoint = load(save_dir / 'last.pth.tar')  # the one of epoch 1, not overwritten
    assert (checkpoint['epoch'], checkpoint['iteration'], checkpoint['global_step']) == (1, 0, 3)
    assert all_finite(checkpoint)
    monkeypatch.undo()
    resume = run_args(glyphs_root, save_dir, '--resume', str(save_dir / 'last.pth.tar'),
                      epochs=2)
    assert MMSI_train.main(resume) == 0
    assert epochs_in(save_dir) == [0, 1, 2]


def test_absurd_learning_rate_stops_with_every_checkpoint_finite(glyphs_root, tmp_path, capsys):
    """The step of iteration 2 makes the parameters huge; the next forward overflows."""
    save_dir = tmp_path / 'absurd'
    status = MMSI_train.main(run_args(glyphs_root, save_dir, '--lr', '1e30',
                                      '--checkpoint_minutes', '1e-6', mmsi=1, epochs=2))
    assert status == MMSI_train.EXIT_NON_FINITE
    err = capsys.readouterr().err
    assert 'error: non-finite validation loss at epoch 1 iteration 3 (L_G is nan)' in err, err
    checkpoints = sorted(save_dir.glob('*.pth.tar'))
    assert [path.name for path in checkpoints] == ['last.pth.tar']
    assert load(checkpoints[0])['iteration'] == 2 and all_finite(load(checkpoints[0]))


def test_non_finite_embeddings_stop_the_evaluation(glyphs_root, tmp_path, monkeypatch, capsys):
    original = evaluation.extract_features

    def overflowing(*args, **kwargs):
        emb, labels = original(*args, **kwargs)
        return emb * float('inf'), labels
    monkeypatch.setattr(evaluation, 'extract_features', overflowing)
    save_dir = tmp_path / 'overflow'
    assert MMSI_train.main(run_args(glyphs_root, save_dir)) == MMSI_train.EXIT_NON_FINITE
    assert ('error: non-finite embeddings at epoch 0 iteration 0 (in the evaluation; the '
            'parameters are finite); no checkpoint had been written') in capsys.readouterr().err
    assert not (save_dir / 'metrics.jsonl').exists()


def test_a_full_disk_stops_the_run_with_one_line_and_the_last_checkpoint_intact(
        glyphs_root, tmp_path, monkeypatch, capsys):
    """The checkpoint of epoch 2 finds the disk full: one line naming the folder and the space
    needed, exit 4, the checkpoint of epoch 1 intact, no temporary file left."""
    from utils import files
    opened = []

    def full_on_the_second_checkpoint(path, mode='r', **kwargs):
        if str(path).endswith('last.pth.tar.tmp'):
            opened.append(path)
            if len(opened) == 2:
                open(path, mode).close()
                raise OSError(errno.ENOSPC, 'No space left on device')
        return open(path, mode, **kwargs)
    monkeypatch.setattr(files, 'open', full_on_the_second_checkpoint, raising=False)
    save_dir = tmp_path / 'full'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, epochs=2)) == MMSI_train.EXIT_NO_SPACE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'error: no space left in {save_dir} to write '
                                               f'last.pth.tar (it needs '), err
    assert load(save_dir / 'last.pth.tar')['epoch'] == 1
    assert not list(save_dir.glob('*.tmp'))


def test_non_finite_parameters_are_never_saved(glyphs_root, tmp_path, monkeypatch, capsys):
    """A NaN put into a parameter by the optimizer step of global iteration 4 (epoch 2,
    iteration 1) is found before the checkpoint at the boundary after it, which is not
    written, nor is anything evaluated."""
    original, steps = torch.optim.Adam.step, []

    def poisoned_step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 4:
            with torch.no_grad():
                self.param_groups[0]['params'][0][0] = float('nan')
        return result
    monkeypatch.setattr(torch.optim.Adam, 'step', poisoned_step)
    save_dir = tmp_path / 'poisoned'
    status = MMSI_train.main(run_args(glyphs_root, save_dir, '--checkpoint_minutes', '1e-6',
                                      mmsi=0, epochs=2))
    assert status == MMSI_train.EXIT_NON_FINITE
    assert ('error: non-finite parameters at epoch 2 iteration 1 (after the optimizer step)'
            in capsys.readouterr().err)
    checkpoint = load(save_dir / 'last.pth.tar')
    assert (checkpoint['epoch'], checkpoint['iteration']) == (1, 0) and all_finite(checkpoint)
    assert epochs_in(save_dir) == [0, 1]
