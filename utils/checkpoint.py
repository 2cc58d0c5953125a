"""Checkpoints: what a run saves and how it is restored, atomic writes, random-number-generator
states, and reading checkpoint files back."""
import os
import random
import re
import time
from typing import NamedTuple, Optional

import numpy as np
import torch

from utils.errors import InputError

FORMAT = 'mmsi-checkpoint-1'
LAST_CHECKPOINT = 'last.pth.tar'
EPOCH_CHECKPOINT = re.compile(r'ckp_ep(\d+)\.pth\.tar')  # kept every --save_step epochs


def epoch_checkpoint_name(epoch):
    return f'ckp_ep{epoch}.pth.tar'


class ResumePoint(NamedTuple):
    """Where training continues: `epoch`, after its first `batch` batches, with the statistics
    `meter_state` of those batches (None at an epoch start)."""
    epoch: int = 1
    batch: int = 0
    meter_state: Optional[dict] = None


def save_checkpoint(run, epoch, iteration=0, meter=None, name=LAST_CHECKPOINT):
    """Save a TrainingRun to save_dir/`name`. `iteration` 0: epochs 1..epoch are complete;
    else `iteration` batches of `epoch`, whose statistics `meter` holds. Only the main process
    writes; every process gets the path."""
    path = os.path.join(run.args.save_dir, name)
    if name == LAST_CHECKPOINT:
        run.last_checkpoint_time = time.monotonic()
    if not run.dist.is_main:
        return path
    state = {
        'format': FORMAT, 'run_id': run.run_id, 'epoch': epoch, 'iteration': iteration,
        'global_step': run.global_step, 'meter': meter.state() if meter else None,
        'model': run.model.state_dict(), 'optimizer': run.optimizer.state_dict(),
        'dictionary': run.dictionary.state_dict() if run.dictionary else None,
        'val_consumed': run.val_consumed, 'rng': rng_states(), 'seed': run.seed,
        'metrics': run.log.history, 'args': vars(run.args),
    }
    atomic_torch_save(state, path)
    return path


def restore_training_state(run, checkpoint):
    """Everything but the weights (utils/build.py loads those): optimizer, dictionary, random
    states and where to continue. An official checkpoint gives only its epoch counter."""
    if checkpoint.get('format') != FORMAT:
        run.resume_point = ResumePoint(int(checkpoint.get('epoch', 0)) + 1)
        return
    try:
        run.optimizer.load_state_dict(checkpoint['optimizer'])
    except (ValueError, KeyError) as err:
        raise InputError(f'--resume {run.args.resume}: optimizer state does not fit ({err})')
    if run.dictionary is not None and checkpoint.get('dictionary'):
        run.dictionary.load_state_dict(checkpoint['dictionary'])
    set_rng_states(checkpoint['rng'])
    run.global_step = checkpoint['global_step']
    run.val_consumed = checkpoint['val_consumed']
    epoch, iteration = checkpoint['epoch'], checkpoint['iteration']
    if iteration:  # stopped inside `epoch`, after `iteration` batches
        run.resume_point = ResumePoint(epoch, iteration, checkpoint['meter'])
    else:
        run.resume_point = ResumePoint(epoch + 1)


def progress(checkpoint):
    """(epochs completed, batches of the next epoch) of a checkpoint: comparable between the
    checkpoints of a run. An official checkpoint counts its epochs."""
    epoch, iteration = int(checkpoint.get('epoch') or 0), int(checkpoint.get('iteration') or 0)
    return (epoch - 1, iteration) if iteration else (epoch, 0)


def atomic_torch_save(obj, path):
    """Write to a temporary file in the same folder, fsync, then rename over `path`: a crash
    leaves either the old file or the new one, never a truncated one."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f'{path}.tmp'
    with open(tmp, 'wb') as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(text, path):
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_states():
    states = {'python': random.getstate(), 'numpy': np.random.get_state(),
              'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def peek_checkpoint(path):
    """A checkpoint with its tensors left on disk (memory-mapped): its arguments, run id and
    position, cheaply. None when it cannot be read that way (load_checkpoint says why)."""
    try:
        checkpoint = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
    except Exception:  # missing, not a checkpoint, or an old non-zip file: many exception types
        return None
    return checkpoint if isinstance(checkpoint, dict) else None


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
