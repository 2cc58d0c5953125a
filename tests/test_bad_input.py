"""Bad input and the rules of where a run may write: every case of docs/reliability.md's table
gets one clear message, exit status 2, and existing files untouched; a run folder holds one
run."""
import hashlib
import os
import re

import pytest
import torch

import MMSI_train
from tiny_run import run_args
from utils.checkpoint import write_checkpoint
from utils.config import parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    return torch.load(path, weights_only=False)


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
    (name, value) to the checkpoint itself, saved as the project saves one (with its checksum)."""
    checkpoint = load(finished_run / 'last.pth.tar')
    checkpoint['args'] = dict(checkpoint['args'], **changes)
    checkpoint.update(fields)
    path = tmp_path / 'changed.pth.tar'
    write_checkpoint(checkpoint, str(path))
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
    # without the check, the image is found when it is decoded (here: the epoch 0 evaluation),
    # after the log was opened: the error line is also its last line
    assert MMSI_train.main(run_args(root, tmp_path / 'late', '--check_images', '0',
                                    epochs=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: cannot decode image ') and bad in err[0]
    assert (tmp_path / 'late' / 'log.txt').read_text().splitlines()[-1] == err[0]
    # --skip_bad_images: the image leaves the test set before the run starts, named once in the
    # log; also with the tensor pipeline in a loader worker process
    in_a_worker = ('--input_pipeline', 'tensor', '--nThreads', '1')
    for name, extra in (('skip', ()), ('worker', in_a_worker)):
        assert MMSI_train.main(run_args(root, tmp_path / name, '--skip_bad_images', '1', *extra,
                                        epochs=1)) == 0
        log = (tmp_path / name / 'log.txt').read_text()
        assert len(re.findall(f'skipped: cannot decode image .*{bad}', log)) == 1
        assert '23 test images of 6 classes' in log  # of the 24 listed
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
