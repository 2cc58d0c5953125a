"""utils/files.py: atomic writes leave the old file or the new one, never a temporary file, and a
full disk is told in one line naming the folder and the space needed."""
import errno
import os
import re

import pytest

from utils import files


def test_an_atomic_write_leaves_no_temporary_file(tmp_path):
    files.atomic_write_text('hello\n', str(tmp_path / 'a.txt'))
    files.atomic_write_bytes(b'\x00\x01', str(tmp_path / 'b.bin'), sync_folder=True)
    assert sorted(os.listdir(tmp_path)) == ['a.txt', 'b.bin']
    assert (tmp_path / 'a.txt').read_text() == 'hello\n'
    assert (tmp_path / 'b.bin').read_bytes() == b'\x00\x01'


class FullDisk:
    """open() for utils/files.py whose files hold `room` bytes, then fail as a full disk does."""

    def __init__(self, room):
        self.room = room

    def __call__(self, path, mode='r', **kwargs):
        f = open(path, mode, **kwargs)
        if 'w' not in mode:
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
    files.atomic_write_bytes(bytes(4000), str(path))
    before = path.read_bytes()
    monkeypatch.setattr(files, 'open', FullDisk(room=100), raising=False)
    with pytest.raises(files.NoSpace) as full:
        files.atomic_write_bytes(b'\x01' * 4000, str(path))
    assert re.fullmatch(rf'no space left in {re.escape(str(tmp_path))} to write last.pth.tar '
                        r'\(it needs [0-9.]+ KiB, [0-9.]+ [KM]iB free; No space left on device\); '
                        r'free some space and resume the run with --resume auto',
                        full.value.strerror)
    assert os.listdir(tmp_path) == ['last.pth.tar'] and path.read_bytes() == before
