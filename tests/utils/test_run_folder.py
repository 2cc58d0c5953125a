"""utils/run_folder.py: the file names of a run folder, atomic writes, and which files a run
may replace (the end-to-end refusals are in tests/test_reliability.py)."""
import errno
import os
import re

import pytest
import torch

from common.errors import InputError
from utils import run_folder


def test_the_newest_checkpoint_is_last_else_the_highest_epoch():
    assert run_folder.newest_checkpoint(['ckp_ep2.pth.tar', 'ckp_ep10.pth.tar']) == \
        'ckp_ep10.pth.tar'
    assert run_folder.newest_checkpoint(['ckp_ep10.pth.tar', 'last.pth.tar']) == 'last.pth.tar'


def test_run_files_are_log_metrics_and_checkpoints_only(tmp_path):
    for name in ('log.txt', 'metrics.jsonl', 'ckp_ep3.pth.tar', 'last.pth.tar', 'notes.md',
                 'ckp_epX.pth.tar', 'curves.png'):
        (tmp_path / name).write_text('x')
    assert run_folder.run_files(str(tmp_path)) == [
        'ckp_ep3.pth.tar', 'last.pth.tar', 'log.txt', 'metrics.jsonl']
    assert run_folder.run_files(str(tmp_path / 'missing')) == []


def test_an_atomic_write_leaves_no_temporary_file(tmp_path):
    run_folder.atomic_write_text('hello\n', str(tmp_path / 'a.txt'))
    run_folder.atomic_torch_save({'x': 1}, str(tmp_path / 'b.pth'))
    assert sorted(os.listdir(tmp_path)) == ['a.txt', 'b.pth']
    assert torch.load(tmp_path / 'b.pth') == {'x': 1}


def test_the_resumed_file_is_not_read_again(tmp_path, monkeypatch):
    last = tmp_path / 'last.pth.tar'
    torch.save({'run_id': 'abc', 'epoch': 1, 'iteration': 0}, last)
    monkeypatch.setattr(run_folder, 'peek_checkpoint', lambda path: pytest.fail('read again'))
    checkpoint = {'run_id': 'abc', 'epoch': 1, 'iteration': 0}
    found = run_folder.run_files(str(tmp_path))
    assert run_folder.files_in_the_way(str(tmp_path), str(last), checkpoint, found) == (
        [], None, None)


def test_a_new_run_over_checkpoints_needs_overwrite(tmp_path):
    (tmp_path / 'log.txt').write_text('[t] New run (run abc)\n')
    (tmp_path / 'ckp_ep1.pth.tar').write_text('x')
    with pytest.raises(InputError, match=r'already holds a run .*--resume .*ckp_ep1.pth.tar'):
        run_folder.prepare(str(tmp_path), None, None, overwrite=False)
    assert run_folder.prepare(str(tmp_path), None, None, overwrite=True) == [
        '--overwrite: deleted ckp_ep1.pth.tar, log.txt from --save_dir']
    assert os.listdir(tmp_path) == []


class FullDisk:
    """open() for run_folder whose files hold `room` bytes, then fail as a full disk does."""

    def __init__(self, room, only=None):
        self.room, self.only = room, only

    def __call__(self, path, mode='r', **kwargs):
        f = open(path, mode, **kwargs)
        if 'w' not in mode or (self.only and not str(path).endswith(self.only)):
            return f
        room, write = self.room, f.write

        def limited(data):
            nonlocal room
            if len(data) > room:
                write(bytes(data[:room]))
                room = 0
                raise OSError(errno.ENOSPC, 'No space left on device')
            room -= len(data)
            return write(data)
        f.write = limited
        return f


def test_a_full_disk_names_the_folder_and_the_space_and_keeps_the_old_file(tmp_path,
                                                                          monkeypatch):
    path = tmp_path / 'last.pth.tar'
    run_folder.atomic_torch_save({'weights': torch.zeros(1000)}, str(path))
    before = path.read_bytes()
    monkeypatch.setattr(run_folder, 'open', FullDisk(room=100), raising=False)
    with pytest.raises(run_folder.NoSpace) as full:
        run_folder.atomic_torch_save({'weights': torch.ones(1000)}, str(path))
    assert re.fullmatch(rf'no space left in {re.escape(str(tmp_path))} to write last.pth.tar '
                        r'\(it needs [0-9.]+ KiB, [0-9.]+ [KM]iB free; No space left on device\); '
                        r'free some space and resume the run with --resume auto',
                        full.value.strerror)
    assert os.listdir(tmp_path) == ['last.pth.tar'] and path.read_bytes() == before
