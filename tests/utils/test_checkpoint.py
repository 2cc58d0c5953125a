"""utils/checkpoint.py: the names of checkpoint files; a checkpoint refuses non-finite parameters
by itself, carries a checksum that finds damaged bytes, and restoring one puts the run where it
stopped."""
import os
import random
import shutil
import struct
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import MMSI_train
import test as evaluate_script
import trainer
from common.errors import InputError
from tiny_run import run_args
from utils.checkpoint import (FORMAT, ResumePoint, load_checkpoint, newest_checkpoint,
                              newest_checkpoint_in, restore_training_state, rng_states,
                              save_checkpoint, set_rng_states, unverified_note,
                              write_checkpoint)
from utils.config import Config
from utils.distributed import Distributed


def test_the_newest_checkpoint_is_last_else_the_highest_epoch(tmp_path):
    assert newest_checkpoint(['ckp_ep2.pth.tar', 'ckp_ep10.pth.tar']) == 'ckp_ep10.pth.tar'
    assert newest_checkpoint(['ckp_ep10.pth.tar', 'last.pth.tar']) == 'last.pth.tar'
    for name in ('ckp_ep2.pth.tar', 'ckp_ep10.pth.tar', 'log.txt'):
        (tmp_path / name).write_text('x')
    assert newest_checkpoint_in(str(tmp_path)) == str(tmp_path / 'ckp_ep10.pth.tar')
    assert newest_checkpoint_in(str(tmp_path / 'missing')) is None


def tiny_run(save_dir, parameters_finite=None):
    model = torch.nn.Linear(2, 2)
    return SimpleNamespace(
        args=Config(save_dir=str(save_dir), resume=None), dist=Distributed(), run_id='abc',
        model=model, optimizer=torch.optim.Adam(model.parameters()), dictionary=None,
        log=SimpleNamespace(history=[{'epoch': 0}]), global_step=7, val_consumed=0, seed=3,
        device=torch.device('cpu'), parameters_finite=parameters_finite, last_step=7,
        position=(2, 3), last_checkpoint_time=0.0, resume_point=ResumePoint())


def test_a_checkpoint_of_non_finite_parameters_is_refused_and_nothing_is_written(tmp_path):
    run = tiny_run(tmp_path, parameters_finite=torch.tensor(False))
    with pytest.raises(trainer.NonFinite) as stop:
        save_checkpoint(run, 2, 3)
    assert stop.value.what == 'parameters' and (stop.value.epoch, stop.value.iteration) == (2, 3)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('iteration, resume_point', [(0, (3, 0)), (3, (2, 3))])
def test_restoring_puts_the_run_where_it_stopped(tmp_path, iteration, resume_point):
    run = tiny_run(tmp_path)
    path = save_checkpoint(run, 2, iteration, meter=trainer.EpochMeter() if iteration else None)
    checkpoint = load_checkpoint(path)  # its checksum verified
    assert (checkpoint['format'], checkpoint['run_id'], checkpoint['seed']) == (FORMAT, 'abc', 3)
    assert checkpoint['args'] == {'save_dir': str(tmp_path), 'resume': None}
    restored = tiny_run(tmp_path)
    restored.global_step = 0
    restore_training_state(restored, checkpoint)
    assert restored.resume_point[:2] == resume_point
    assert (restored.global_step, restored.position) == (7, (2, iteration))


def test_an_official_checkpoint_gives_its_epoch_counter_only(tmp_path):
    run = tiny_run(tmp_path)
    restore_training_state(run, {'state_dict': {}, 'epoch': 5})
    assert run.resume_point == ResumePoint(6) and run.global_step == 7


def test_random_states_round_trip():
    states = rng_states()
    draws = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_states(states)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == draws


# ---- the checksum -------------------------------------------------------------------------------

def weights_state():
    """A checkpoint of ours with one 128 KiB tensor, and values of every kind a run saves."""
    return {'format': FORMAT, 'run_id': 'abc', 'epoch': 1, 'iteration': 0,
            'model': {'weight': torch.randn(128, 256, generator=torch.Generator().manual_seed(0)),
                      'step': torch.tensor(3)},
            'rng': {'python': random.getstate(), 'numpy': np.random.get_state()},
            'metrics': [{'epoch': 0, 'R@1': np.float64(0.5), 'skipped': {}}],
            'args': {'lr': 1e-4, 'data': 'glyphs', 'resume': None, 'ks': (1, 2)}}


def damage_tensor_bytes(path, size=64 * 1024):
    """Overwrite `size` bytes in the middle of the largest tensor of the torch zip archive at
    `path` with other plausible floats: torch.load checks no CRC, so the file still loads."""
    with zipfile.ZipFile(path) as archive:
        record = max((info for info in archive.infolist() if '/data/' in info.filename),
                     key=lambda info: info.file_size)
    assert record.compress_type == zipfile.ZIP_STORED and record.file_size >= size
    with open(path, 'r+b') as f:
        f.seek(record.header_offset + 26)  # the local header's name and extra field lengths
        name_length, extra_length = struct.unpack('<HH', f.read(4))
        data_start = record.header_offset + 30 + name_length + extra_length
        f.seek(data_start + (record.file_size - size) // 2)
        f.write(torch.randn(size // 4, generator=torch.Generator().manual_seed(1)).numpy()
                .tobytes())


def test_a_checkpoint_is_written_atomically_with_its_checksum(tmp_path):
    path = str(tmp_path / 'last.pth.tar')
    state = weights_state()
    write_checkpoint(state, path)
    assert os.listdir(tmp_path) == ['last.pth.tar']
    loaded = load_checkpoint(path)
    assert loaded['checksum'].startswith('sha256:') and len(loaded['checksum']) == 71
    assert torch.equal(loaded['model']['weight'], state['model']['weight'])
    assert unverified_note(loaded, '--resume', path) is None


def test_damaged_tensor_bytes_are_refused(tmp_path):
    path = str(tmp_path / 'last.pth.tar')
    state = weights_state()
    write_checkpoint(state, path)
    damage_tensor_bytes(path)
    loaded = torch.load(path, weights_only=False)  # torch itself reads it without a word
    assert not torch.equal(loaded['model']['weight'], state['model']['weight'])
    with pytest.raises(InputError) as refused:
        load_checkpoint(path)
    assert str(refused.value) == (f'--resume {path} is damaged: its checksum does not match its '
                                  f'contents; use an intact copy or another checkpoint')


def test_an_edited_entry_is_refused(tmp_path):
    path = str(tmp_path / 'last.pth.tar')
    write_checkpoint(weights_state(), path)
    edited = torch.load(path, weights_only=False)
    edited['args']['lr'] = 1e-3
    torch.save(edited, path)
    with pytest.raises(InputError, match='is damaged: its checksum does not match'):
        load_checkpoint(path)


def test_a_checkpoint_without_checksum_loads_with_a_note(tmp_path):
    ours, official = str(tmp_path / 'older.pth.tar'), str(tmp_path / 'official.pth.tar')
    torch.save(weights_state(), ours)
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'epoch': 3}, official)
    for path in (ours, official):
        assert unverified_note(load_checkpoint(path), '--resume', path) == (
            f'--resume {path} carries no checksum to verify (an official checkpoint, or one '
            f'saved before checkpoints carried one): loaded as it is')
    # a plain weights file (ImageNet) is no checkpoint: nothing to note
    assert unverified_note({'conv1.weight': torch.zeros(1)}, '--pretrained', 'w.pth') is None


def test_resume_pretrained_and_test_py_refuse_a_damaged_checkpoint(glyphs_root, finished_run,
                                                                    tmp_path, capsys):
    damaged = tmp_path / 'damaged.pth.tar'
    shutil.copy(finished_run / 'last.pth.tar', damaged)
    damage_tensor_bytes(damaged)
    message = f'error: {{flag}} {damaged} is damaged: its checksum does not match its contents'
    for flag, main in [('--resume', MMSI_train.main), ('--pretrained', MMSI_train.main),
                       ('--resume', evaluate_script.main)]:
        save_dir = tmp_path / 'fresh'
        capsys.readouterr()
        assert main(run_args(glyphs_root, save_dir, flag, str(damaged))) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message.format(flag=flag)), err
        assert not save_dir.exists()
