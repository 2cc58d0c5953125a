"""A run folder (--save_dir): the files a run keeps there, and whether a run may write into
it (a folder in use, another run's files, later checkpoints of the same run).

    log.txt          everything printed; its lock marks the folder as in use (utils/logger.py)
    metrics.jsonl    one JSON object per epoch or evaluation
    last.pth.tar     the newest checkpoint; ckp_epN.pth.tar every --save_step epochs: their
                     names, format and reading are utils/checkpoint.py's
    noisy_labels.csv --label_noise: image path, true label, given label of each changed image

How the files are written (atomically): utils/files.py.
"""
import csv
import fcntl
import io
import os

from common.errors import InputError
from utils.checkpoint import (EPOCH_CHECKPOINT, LAST_CHECKPOINT, is_checkpoint,
                              newest_checkpoint, peek_checkpoint, progress)

LOG_FILE = 'log.txt'
METRICS_FILE = 'metrics.jsonl'
NOISY_LABELS_FILE = 'noisy_labels.csv'


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


# ---- is a training using it? --------------------------------------------------------------------

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
    saved = FolderCheckpoints(save_dir, found, resume, checkpoint)
    if not holds_run_of(save_dir, resume, checkpoint, saved):
        return found, (f'{where} holds another run ({", ".join(found)}) than --resume '
                       f'{resume}; choose another --save_dir'), None
    later = later_checkpoints(checkpoint, saved)
    if later:
        return later, (f'{where} holds later checkpoints of this run than --resume '
                       f'{resume} ({", ".join(later)}), which resuming would overwrite; '
                       f'resume from {os.path.join(save_dir, newest_checkpoint(found))}, choose '
                       f'another --save_dir'), None
    return [], None, None


class FolderCheckpoints:
    """The checkpoints among the run files `found` in `save_dir`, each read at most once
    (memory-mapped), and not at all the file the run resumes from (`checkpoint`, already in
    memory)."""

    def __init__(self, save_dir, found, resume, checkpoint):
        self.save_dir, self.found, self.resume = save_dir, found, resume
        self.resumed = checkpoint
        self._read = {}

    def is_resumed(self, name):
        return name in self.found and os.path.samefile(os.path.join(self.save_dir, name),
                                                       self.resume)

    def get(self, name):
        """The checkpoint `name` of the folder; None when absent or unreadable."""
        if name not in self.found:
            return None
        if name not in self._read:
            self._read[name] = (self.resumed if self.is_resumed(name) else
                                peek_checkpoint(os.path.join(self.save_dir, name)))
        return self._read[name]

    def run_id(self):
        """The run id the folder's checkpoints give: last.pth.tar's, else the newest epoch
        checkpoint's; None when none names a run (older files, or no checkpoint)."""
        saved = self.get(LAST_CHECKPOINT)
        epochs = [name for name in self.found if EPOCH_CHECKPOINT.fullmatch(name)]
        if saved is None and epochs:
            saved = self.get(newest_checkpoint(epochs))
        return saved.get('run_id') if saved is not None else None


def holds_run_of(save_dir, resume, checkpoint, saved):
    """Whether the run files of `save_dir` (their checkpoints: `saved`) belong to the run
    `checkpoint` continues: the same run id; where either has none (older files, or a folder
    without checkpoints), the checkpoint lies in save_dir."""
    ours, theirs = checkpoint.get('run_id'), saved.run_id()
    if ours and theirs:
        return ours == theirs
    return os.path.samefile(os.path.dirname(os.path.abspath(resume)), save_dir)


def later_checkpoints(checkpoint, saved):
    """The checkpoints of the folder (`saved`) that are further in the run than
    `checkpoint`."""
    reached = progress(checkpoint)
    later = [name for name in saved.found if EPOCH_CHECKPOINT.fullmatch(name)
             and (int(EPOCH_CHECKPOINT.fullmatch(name).group(1)), 0) > reached]
    if not saved.is_resumed(LAST_CHECKPOINT):
        last = saved.get(LAST_CHECKPOINT)
        if last is not None and progress(last) > reached:
            later.append(LAST_CHECKPOINT)
    return later
