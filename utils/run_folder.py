"""The files of a run folder (--save_dir): their names, how they are written and read back, and
the rules for whether a run may write into a folder.

    log.txt          everything printed; its lock marks the folder as in use (utils/logger.py)
    metrics.jsonl    one JSON object per epoch or evaluation
    last.pth.tar     the newest checkpoint (every epoch, mid-epoch saves, stops)
    ckp_epN.pth.tar  kept every --save_step epochs
    noisy_labels.csv --label_noise: image path, true label, given label of each changed image

Writes are atomic (a temporary file in the same folder, fsync, rename): a crash leaves the old
file or the new one, never half of one.
"""
import contextlib
import csv
import errno
import fcntl
import io
import os
import re
import shutil

import torch

from common.errors import InputError

LOG_FILE = 'log.txt'
METRICS_FILE = 'metrics.jsonl'
LAST_CHECKPOINT = 'last.pth.tar'
NOISY_LABELS_FILE = 'noisy_labels.csv'
EPOCH_CHECKPOINT = re.compile(r'ckp_ep(\d+)\.pth\.tar')


def epoch_checkpoint_name(epoch):
    return f'ckp_ep{epoch}.pth.tar'


def is_checkpoint(name):
    return name == LAST_CHECKPOINT or EPOCH_CHECKPOINT.fullmatch(name) is not None


# ---- writing and reading ------------------------------------------------------------------------

class NoSpace(OSError):
    """A run's file could not be written for lack of space (or quota); the message names the
    folder and the space the file needed. The previous version of the file is intact."""


def atomic_torch_save(obj, path):
    """torch.save through a temporary file, fsync'ed, renamed over `path`. Serialised in memory
    first, so that a full disk is told with the size the file needs."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(path, buffer.getbuffer())
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(text, path):
    _atomic_write(path, text.encode('utf-8'))


def _atomic_write(path, data):
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


def _size(count):
    return f'{count / 2 ** 10:.1f} KiB' if count < 2 ** 20 else f'{count / 2 ** 20:.1f} MiB'


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


def load_checkpoint(path, flag='--resume'):
    """A checkpoint of this project, or of the official code (returned with 'format' absent).
    InputError when the file is missing or is not a checkpoint at all."""
    if not os.path.isfile(path):
        raise InputError(f'{flag} {path}: no such file')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as err:  # torch.load raises many types for a file that is not a checkpoint
        raise InputError(f'{flag} {path}: not a readable checkpoint ({type(err).__name__}: '
                         f'{err})') from None
    if not isinstance(checkpoint, dict) or not ({'model', 'state_dict'} & set(checkpoint)):
        raise InputError(f'{flag} {path}: not a checkpoint (expected a dict with "model" or '
                         f'"state_dict")')
    return checkpoint


def peek_checkpoint(path):
    """A checkpoint with its tensors left on disk (memory-mapped): its arguments, run id and
    position, cheaply. None when it cannot be read that way (load_checkpoint says why)."""
    try:
        checkpoint = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
    except Exception:  # missing, not a checkpoint, or an old non-zip file: many exception types
        return None
    return checkpoint if isinstance(checkpoint, dict) else None


def progress(checkpoint):
    """(epochs completed, batches of the next epoch) of a checkpoint: comparable between the
    checkpoints of a run. An official checkpoint counts its epochs."""
    epoch, iteration = int(checkpoint.get('epoch') or 0), int(checkpoint.get('iteration') or 0)
    return (epoch - 1, iteration) if iteration else (epoch, 0)


def in_use(log_path):
    """Whether a running training holds the lock on `log_path` (False on a file system that
    has no locks)."""
    with open(log_path, 'rb') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
    return False


def folder_in_use(save_dir):
    """Whether a training holds the run folder: the lock on its log.txt (utils/logger.RunLog),
    whoever started it."""
    log = os.path.join(save_dir, LOG_FILE)
    return os.path.exists(log) and in_use(log)


# ---- may a run write here? ----------------------------------------------------------------------

def prepare(save_dir, resume, checkpoint, overwrite):
    """Make sure `save_dir` may take this run (a new one when `checkpoint` is None, else the
    run `checkpoint`, read from `resume`, continues): the first write of a run, after every
    check. Files in the way are deleted when that is safe or `overwrite` allows it (see
    `files_in_the_way`); never those of a run that is still training. Returns notes for the
    log."""
    found = run_files(save_dir)
    if folder_in_use(save_dir):
        raise InputError(f'--save_dir {save_dir} is in use: a running training holds its '
                         f'log.txt; wait for it to end or choose another --save_dir')
    doomed, refusal, note = files_in_the_way(save_dir, resume, checkpoint, found)
    if refusal and not overwrite:
        raise InputError(f'{refusal} or give --overwrite 1 to delete those files first')
    if refusal:
        note = f'--overwrite: deleted {", ".join(doomed)} from --save_dir'
    for name in doomed:
        os.remove(os.path.join(save_dir, name))
    try:
        os.makedirs(save_dir, exist_ok=True)
        probe = os.path.join(save_dir, f'.write-test-{os.getpid()}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as err:
        raise InputError(f'--save_dir {save_dir} is not writable ({err.strerror})') from None
    return [note] if note else []


def files_in_the_way(save_dir, resume, checkpoint, found):
    """(files to delete, why that needs --overwrite or None, a note) for the run files `found`
    in `save_dir`. A new run over a run that has checkpoints, a --resume into the folder of
    another run, or over checkpoints of its own run later than the one it continues need
    --overwrite; the files of a run that died before its first checkpoint go without."""
    where = f'--save_dir {save_dir}'
    if not found:
        return [], None, None
    if checkpoint is None:
        if not any(is_checkpoint(name) for name in found):
            return found, None, (f'{where} held {", ".join(found)} of a run that saved no '
                                 f'checkpoint: started afresh')
        return found, (f'{where} already holds a run ({", ".join(found)}); continue it with '
                       f'--resume {os.path.join(save_dir, newest_checkpoint(found))}, choose '
                       f'another --save_dir'), None
    last = FolderCheckpoint(save_dir, found, resume, checkpoint)
    if not holds_run_of(save_dir, found, resume, checkpoint, last):
        return found, (f'{where} holds another run ({", ".join(found)}) than --resume '
                       f'{resume}; choose another --save_dir'), None
    later = later_checkpoints(found, checkpoint, last)
    if later:
        return later, (f'{where} holds later checkpoints of this run than --resume '
                       f'{resume} ({", ".join(later)}), which resuming would overwrite; '
                       f'resume from {os.path.join(save_dir, newest_checkpoint(found))}, choose '
                       f'another --save_dir'), None
    return [], None, None


class FolderCheckpoint:
    """The folder's last.pth.tar, read at most once, and not at all when it is the file the run
    resumes from (that one is already in memory)."""

    def __init__(self, save_dir, found, resume, checkpoint):
        self.path = os.path.join(save_dir, LAST_CHECKPOINT)
        self.exists = LAST_CHECKPOINT in found
        self.is_resumed = self.exists and os.path.samefile(self.path, resume)
        self._checkpoint = checkpoint if self.is_resumed else None
        self._read = self.is_resumed

    def get(self):
        if not self._read and self.exists:
            self._checkpoint, self._read = peek_checkpoint(self.path), True
        return self._checkpoint


def run_files(save_dir):
    """The names of the files of a run in `save_dir`: log, metrics, noisy labels and
    checkpoints."""
    if not os.path.isdir(save_dir):
        return []
    return sorted(name for name in os.listdir(save_dir)
                  if name in (LOG_FILE, METRICS_FILE, NOISY_LABELS_FILE) or is_checkpoint(name))


def noisy_labels_csv(relabelled):
    """The text of noisy_labels.csv: a header, then `path,true label,given label` per changed
    image (labels as the data set's files give them)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator='\n')
    writer.writerow(('path', 'true_label', 'given_label'))
    writer.writerows(relabelled)
    return text.getvalue()


def newest_checkpoint_in(save_dir):
    """The path of the newest checkpoint in `save_dir`, or None when it holds none."""
    names = run_files(save_dir)
    if not any(is_checkpoint(name) for name in names):
        return None
    return os.path.join(save_dir, newest_checkpoint(names))


def newest_checkpoint(names):
    """Of the file names `names`, the newest checkpoint: last.pth.tar, else the highest
    ckp_epN."""
    if LAST_CHECKPOINT in names:
        return LAST_CHECKPOINT
    return max((name for name in names if is_checkpoint(name)),
               key=lambda name: int(EPOCH_CHECKPOINT.fullmatch(name).group(1)))


def holds_run_of(save_dir, found, resume, checkpoint, last):
    """Whether the run files `found` in `save_dir` belong to the run `checkpoint` continues:
    the same run id; where either has none (older files), the checkpoint lies in save_dir."""
    ours = checkpoint.get('run_id')
    theirs = folder_run_id(save_dir, found, last)
    if ours and theirs:
        return ours == theirs
    return os.path.samefile(os.path.dirname(os.path.abspath(resume)), save_dir)


# The first line of log.txt names its run: "[time] New run (run 0123456789ab)".
RUN_ID_IN_LOG = re.compile(r'\(run ([0-9a-f]+)\)')


def folder_run_id(save_dir, found, last):
    """The run id of the run in save_dir: its last.pth.tar's, else its log's, else None."""
    saved = last.get()
    if saved is not None and saved.get('run_id'):
        return saved['run_id']
    if LOG_FILE in found:
        with open(os.path.join(save_dir, LOG_FILE), encoding='utf-8', errors='replace') as f:
            match = RUN_ID_IN_LOG.search(f.readline())
        if match:
            return match.group(1)
    return None


def later_checkpoints(found, checkpoint, last):
    """The checkpoints among `found` that are further in the run than `checkpoint`."""
    reached = progress(checkpoint)
    later = [name for name in found if EPOCH_CHECKPOINT.fullmatch(name)
             and (int(EPOCH_CHECKPOINT.fullmatch(name).group(1)), 0) > reached]
    if last.exists and not last.is_resumed:
        saved = last.get()
        if saved is not None and progress(saved) > reached:
            later.append(LAST_CHECKPOINT)
    return later
