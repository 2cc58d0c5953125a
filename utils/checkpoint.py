"""Checkpoints: atomic writes, random-number-generator states, and reading them back."""
import os
import random

import numpy as np
import torch

from utils.errors import InputError

FORMAT = 'mmsi-checkpoint-1'


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
