"""Writing a run's files safely: atomic replacement, and the one message for a full disk.

A file is written to a temporary file in the same folder, fsync'ed and renamed over the old one:
a crash leaves the old file or the new one, never half of one. What is written here knows
nothing of what the file holds (checkpoints: utils/checkpoint.py; the folder's other files:
utils/run_folder.py, utils/logger.py).
"""
import contextlib
import errno
import os
import shutil


class NoSpace(OSError):
    """A run's file could not be written for lack of space (or quota); the message names the
    folder and the space the file needed. The previous version of the file is intact."""


def atomic_write_text(text, path):
    atomic_write_bytes(text.encode('utf-8'), path)


def atomic_write_bytes(data, path, sync_folder=False):
    """Replace `path` by `data` atomically. `sync_folder`: fsync the folder too, so that the
    rename itself survives a power cut (checkpoints). NoSpace on a full disk."""
    tmp = f'{path}.tmp'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if is_no_space(err):
            raise no_space(err, path, len(data)) from None
        raise
    if sync_folder:
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def is_no_space(err):
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def no_space(err, path, needed=None):
    """NoSpace for an OSError `err` of writing `path` (`needed` bytes, when known)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = f'{_size(shutil.disk_usage(folder).free)} free'
    except OSError:
        free = 'free space unknown'
    size = f'it needs {_size(needed)}, ' if needed is not None else ''
    return NoSpace(err.errno, f'no space left in {folder} to write {os.path.basename(path)} '
                              f'({size}{free}; {err.strerror}); free some space and resume the '
                              f'run with --resume auto')


def _size(count):
    return f'{count / 2 ** 10:.1f} KiB' if count < 2 ** 20 else f'{count / 2 ** 20:.1f} MiB'
