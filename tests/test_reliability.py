"""Reliability: exact resume, SIGKILL / SIGTERM, NaN losses, and every bad input of the
README table (one clear message, a non-zero exit, existing files untouched)."""
import errno
import hashlib
import json
import os
import re
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
from utils.config import parse_args
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
    original = MMSI_train.extract_features

    def overflowing(*args, **kwargs):
        emb, labels = original(*args, **kwargs)
        return emb * float('inf'), labels
    monkeypatch.setattr(MMSI_train, 'extract_features', overflowing)
    save_dir = tmp_path / 'overflow'
    assert MMSI_train.main(run_args(glyphs_root, save_dir)) == MMSI_train.EXIT_NON_FINITE
    assert ('error: non-finite embeddings at epoch 0 iteration 0 (in the evaluation; the '
            'parameters are finite); no checkpoint had been written') in capsys.readouterr().err
    assert not (save_dir / 'metrics.jsonl').exists()


def test_a_full_disk_stops_the_run_with_one_line_and_the_last_checkpoint_intact(
        glyphs_root, tmp_path, monkeypatch, capsys):
    """The checkpoint of epoch 2 finds the disk full: one line naming the folder and the space
    needed, exit 4, the checkpoint of epoch 1 intact, no temporary file left."""
    from utils import run_folder
    opened = []

    def full_on_the_second_checkpoint(path, mode='r', **kwargs):
        if str(path).endswith('last.pth.tar.tmp'):
            opened.append(path)
            if len(opened) == 2:
                open(path, mode).close()
                raise OSError(errno.ENOSPC, 'No space left on device')
        return open(path, mode, **kwargs)
    monkeypatch.setattr(run_folder, 'open', full_on_the_second_checkpoint, raising=False)
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


# ---- bad input: one message, exit status 2, nothing written or changed ----------------------

def snapshot(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(folder))}


def resnet_file(tmp_path):
    import torchvision
    path = tmp_path / 'resnet18.pth'
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def ours_with(tmp_path, finished_run, fields=(), **changes):
    """A copy of the finished run's checkpoint with `changes` to its arguments and `fields`
    (name, value) to the checkpoint itself."""
    checkpoint = load(finished_run / 'last.pth.tar')
    checkpoint['args'] = dict(checkpoint['args'], **changes)
    checkpoint.update(fields)
    path = tmp_path / 'changed.pth.tar'
    torch.save(checkpoint, path)
    return path


MID_EPOCH = [('epoch', 1), ('iteration', 1)]


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
    'unsupported --width': (lambda t, r: ['--width', '80'], r'--width 80: BN_Inception needs'),
    'a --loss_param of the wrong type': (
        lambda t, r: ['--loss', 'SupCon', '--loss_param', 'temperature=abc'],
        r"SupCon parameter temperature='abc': expected a finite number above 0"),
    'a --loss_param out of range': (
        lambda t, r: ['--loss', 'SupCon', '--loss_param', 'temperature=0'],
        r'SupCon parameter temperature=0: expected a finite number above 0'),
    'a repeated --loss_param': (
        lambda t, r: ['--loss', 'SupCon', '--loss_param', 'temperature=0.1', '--loss_param',
                      'temperature=0.2'], r'--loss_param temperature is given 2 times'),
    'a --loss_module replacing a built-in loss': (
        lambda t, r: ['--loss_module', str(module_registering(t, 'MS'))],
        r"cannot import it \(ValueError: loss name 'MS' is taken by "
        r"losses.multi_similarity.MultiSimilarity; register with replace=True"),
    '--resume missing file': (
        lambda t, r: ['--resume', str(t / 'missing.pth.tar')], r'--resume .*missing.pth.tar: no such file'),
    '--resume not a checkpoint': (
        lambda t, r: ['--resume', str(r / 'log.txt')], r'--resume .*log.txt: not a readable checkpoint'),
    '--resume of another architecture': (
        lambda t, r: ['--resume', str(ours_with(t, r, net='ResNet50')), '--net', 'BN_Inception'],
        r'was trained with --net ResNet50, this run has --net BN_Inception'),
    '--resume official checkpoint of another network': (
        lambda t, r: ['--resume', str(official(t))], r'does not hold the Caffe-converted BN-Inception ImageNet weights'),
    '--resume with another embedding size': (
        lambda t, r: ['--resume', str(r / 'last.pth.tar'), '--dim', '128'],
        r'was trained with --dim 512, this run has --dim 128'),
    '--pretrained of the wrong network': (
        lambda t, r: ['--pretrained', str(resnet_file(t))],
        r'resnet18.pth does not hold the Caffe-converted BN-Inception ImageNet weights'),
    'save_dir on a read-only path': (
        lambda t, r: ['--save_dir', read_only_dir(t)], r'--save_dir .* is not writable'),
    'save_dir already holding a run': (
        lambda t, r: ['--save_dir', str(r)], r'already holds a run .* --resume'),
    '--resume changing the loss': (
        lambda t, r: ['--resume', str(r / 'last.pth.tar'), '--loss', 'Con', '--margin', '0.5'],
        r'was trained with --loss MS, this run has --loss Con; these cannot change within a '
        r'run'),
    '--resume changing the seed': (
        lambda t, r: ['--resume', str(r / 'last.pth.tar'), '--seed', '1'],
        r'was trained with --seed 0, this run has --seed 1'),
    '--resume mid-epoch changing the batches': (
        lambda t, r: ['--resume', str(ours_with(t, r, MID_EPOCH)), '--batch_size', '9'],
        r'was trained with --batch_size 6, this run has --batch_size 9; .*until the epoch ends'),
    'tiny --width': (lambda t, r: ['--width', '6'], r'--width 6: .* with k >= 1'),
    '--num_instances 1': (
        lambda t, r: ['--num_instances', '1'], r'--num_instances 1: .* no positive pair'),
    'unreachable --dict_min_classes': (
        lambda t, r: ['--MMSI', '1', '--dict_min_classes', '7'],
        r'--dict_min_classes 7 is more than the 6 training classes: MMSI would never leave'),
    'absurd --lr': (lambda t, r: ['--lr', '1e38'], r'--lr 1e\+38 .* is above 3e\+37'),
}


def module_registering(tmp_path, name, replace=False):
    """A --loss_module file that registers a copy of MS under `name`."""
    path = tmp_path / 'my_loss.py'
    path.write_text('import losses\nfrom losses.multi_similarity import MultiSimilarity\n\n\n'
                    'class MyMS(MultiSimilarity):\n    pass\n\n\n'
                    f'losses.register({name!r}, MyMS, replace={replace})\n')
    return path


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
    # --check_images (default): the header is read before anything is written
    assert MMSI_train.main(run_args(root, tmp_path / 'stop', epochs=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and bad in err[0]
    assert err[0].startswith('error: 1 listed image(s) cannot be read (--check_images), first: '
                             'cannot decode image ')
    assert not (tmp_path / 'stop').exists()
    # without the check, the image is found when it is decoded (here: the epoch 0 evaluation)
    assert MMSI_train.main(run_args(root, tmp_path / 'late', '--check_images', '0',
                                    epochs=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: cannot decode image ') and bad in err[0]
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


# ---- where a run may write -------------------------------------------------------------------

def fake_run_folder(folder, finished_run, links):
    """A run folder: a log of the finished run and checkpoint files linked to `links` (name ->
    path), cheap stand-ins for a longer run's checkpoints."""
    folder.mkdir()
    (folder / 'log.txt').write_text((finished_run / 'log.txt').read_text())
    for name, target in links.items():
        os.link(target, folder / name)
    return folder


def test_resume_refuses_later_checkpoints_and_another_run(glyphs_root, finished_run, tmp_path,
                                                          capsys):
    later = ours_with(tmp_path, finished_run, [('epoch', 2)])
    folder = fake_run_folder(tmp_path / 'run', finished_run, {
        'ckp_ep1.pth.tar': finished_run / 'ckp_ep1.pth.tar', 'ckp_ep2.pth.tar': later,
        'last.pth.tar': later})
    other = fake_run_folder(tmp_path / 'other', finished_run, {})
    (other / 'log.txt').write_text('[2026-01-01 00:00:00] New run (run 0123456789ab)\n')
    before = snapshot(folder), snapshot(other)
    older = str(folder / 'ckp_ep1.pth.tar')
    for save_dir, resume, message in [
            (folder, older, r'--save_dir .*run holds later checkpoints of this run than --resume '
                            r'.*ckp_ep1.pth.tar \(ckp_ep2.pth.tar, last.pth.tar\), which resuming '
                            r'would overwrite; resume from .*last.pth.tar, choose another '
                            r'--save_dir or give --overwrite 1'),
            (other, str(finished_run / 'last.pth.tar'),
             r'--save_dir .*other holds another run \(log.txt\) than --resume')]:
        capsys.readouterr()
        assert MMSI_train.main(run_args(glyphs_root, save_dir, '--resume', resume)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err
    assert (snapshot(folder), snapshot(other)) == before

    # explicitly: the later checkpoints are deleted
    run = MMSI_train.setup(run_args(
        glyphs_root, folder, '--resume', older, '--overwrite', '1'))
    run.log.close()
    assert sorted(os.listdir(folder)) == ['ckp_ep1.pth.tar', 'log.txt', 'metrics.jsonl']
    assert ('Note: --overwrite: deleted ckp_ep2.pth.tar, last.pth.tar from --save_dir'
            in (folder / 'log.txt').read_text())


def test_a_folder_whose_run_died_before_its_first_checkpoint_is_started_afresh(
        glyphs_root, finished_run, tmp_path):
    folder = fake_run_folder(tmp_path / 'died', finished_run, {})
    (folder / 'metrics.jsonl').write_text('{"epoch": 0, "R@1": 0.5}\n')
    run = MMSI_train.setup(run_args(glyphs_root, folder))
    run.log.close()
    log = (folder / 'log.txt').read_text()
    assert log.startswith('[') and 'New run' in log.splitlines()[0]
    assert ('Note: --save_dir ' + str(folder) + ' held log.txt, metrics.jsonl of a run that '
            'saved no checkpoint: started afresh') in log
    assert 'Epoch 1 done' not in log and not (folder / 'metrics.jsonl').exists()


def test_resume_continues_with_the_checkpoint_flags_and_applies_a_new_lr(
        glyphs_root, finished_run, tmp_path):
    checkpoint = str(finished_run / 'last.pth.tar')
    args = parse_args(['--resume', checkpoint])
    assert (args.loss, args.margin, args.width, args.batch_size, args.lr, args.save_dir) == (
        'MS', 0.1, 64, 6, 1e-4, str(finished_run))
    assert args.nThreads == parse_args([]).nThreads  # this machine's

    save_dir = tmp_path / 'continued'  # an empty folder is free to take it
    run = MMSI_train.setup(run_args(
        glyphs_root, save_dir, '--resume', checkpoint, '--lr', '1e-3', '--weight_decay', '0',
        '--base_lr_mult', '0.5', epochs=2))
    run.log.close()
    groups = {group['name']: group for group in run.optimizer.param_groups}
    assert (groups['backbone']['lr'], groups['embedding']['lr']) == (5e-4, 1e-3)
    assert groups['backbone']['weight_decay'] == groups['embedding']['weight_decay'] == 0
    assert run.optimizer.state  # the restored Adam moments
    assert (f'Changed since the checkpoint: --base_lr_mult 1.0 -> 0.5, --epochs 1 -> 2, --lr '
            f'0.0001 -> 0.001, --save_dir {finished_run} -> {save_dir}, --weight_decay 0.0005 '
            f'-> 0.0') in (save_dir / 'log.txt').read_text()


def test_a_folder_in_use_by_a_running_training_is_refused(glyphs_root, finished_run, tmp_path,
                                                          capsys):
    import fcntl
    folder = fake_run_folder(tmp_path / 'running', finished_run, {})
    before = snapshot(folder)
    with open(folder / 'log.txt', 'a') as log:  # what the running training's RunLog holds
        fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert MMSI_train.main(run_args(glyphs_root, folder, '--overwrite', '1')) == 2
    assert capsys.readouterr().err.strip().endswith(
        'is in use: a running training holds its log.txt; wait for it to end or choose another '
        '--save_dir')
    assert snapshot(folder) == before
