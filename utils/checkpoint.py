"""Checkpoints, in one place: their file names, their format, writing them, reading them back,
and restoring a run from one.

    last.pth.tar     the newest checkpoint (every epoch, mid-epoch saves, stops)
    ckp_epN.pth.tar  kept every --save_step epochs

Ours are dicts with 'format': FORMAT (what `save_checkpoint` lists); the official code's are
{'state_dict', 'epoch'}, and load too. Every checkpoint we write carries, under 'checksum', a
SHA-256 of all its other entries (`contents_checksum`: tensors by their bytes). It is inside
the file rather than in a file beside it: a checkpoint copied or moved keeps it, and one file
replaced by one rename can never be out of step with its checksum, as a pair of files can after
a crash between two renames. torch.load checks none of the zip archive's CRCs, so this is what
finds damaged bytes: `load_checkpoint` (--resume, test.py) and `load_pretrained_weights`
(--pretrained) refuse a file whose contents do not match; a file without a checksum (official,
or saved before checksums were kept) loads with a note for the log (`unverified_note`).
"""
import hashlib
import io
import os
import random
import re
import time
from collections.abc import Mapping
from typing import NamedTuple, Optional

import numpy as np
import torch

import models
import trainer
from common.errors import InputError
from utils.files import atomic_write_bytes

FORMAT = 'mmsi-checkpoint-1'
CHECKSUM = 'checksum'  # the entry holding 'sha256:<hex digest>' of all the others

# ---- file names ---------------------------------------------------------------------------------

LAST_CHECKPOINT = 'last.pth.tar'
EPOCH_CHECKPOINT = re.compile(r'ckp_ep(\d+)\.pth\.tar')


def epoch_checkpoint_name(epoch):
    return f'ckp_ep{epoch}.pth.tar'


def is_checkpoint(name):
    return name == LAST_CHECKPOINT or EPOCH_CHECKPOINT.fullmatch(name) is not None


def newest_checkpoint(names):
    """Of the file names `names`, the newest checkpoint: last.pth.tar, else the highest
    ckp_epN."""
    if LAST_CHECKPOINT in names:
        return LAST_CHECKPOINT
    return max((name for name in names if is_checkpoint(name)),
               key=lambda name: int(EPOCH_CHECKPOINT.fullmatch(name).group(1)))


def newest_checkpoint_in(save_dir):
    """The path of the newest checkpoint in `save_dir`, or None when it holds none."""
    names = os.listdir(save_dir) if os.path.isdir(save_dir) else []
    if not any(is_checkpoint(name) for name in names):
        return None
    return os.path.join(save_dir, newest_checkpoint(names))


# ---- the format and its checksum ----------------------------------------------------------------

def is_ours(checkpoint):
    """Whether `checkpoint` (a loaded file, or None) was written by this project."""
    return isinstance(checkpoint, Mapping) and checkpoint.get('format') == FORMAT


def contents_checksum(checkpoint):
    """'sha256:<hex>' of every entry of `checkpoint` but the checksum: tensors and arrays by
    dtype, shape and bytes, everything else by a canonical text of its value, so that a file
    read back gives the digest it was written with (whatever device its tensors were on)."""
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in checkpoint.items() if key != CHECKSUM})
    return f'sha256:{digest.hexdigest()}'


def _feed(digest, value):
    if torch.is_tensor(value):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f'tensor {flat.dtype} {tuple(value.shape)};'.encode())
        digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, np.ndarray):
        digest.update(f'array {value.dtype.str} {value.shape};'.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, np.generic):  # a NumPy scalar hashes as the Python number it holds
        _feed(digest, value.item())
    elif isinstance(value, Mapping):
        digest.update(f'dict {len(value)};'.encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f'{"list" if isinstance(value, list) else "tuple"} {len(value)};'.encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, (set, frozenset)):
        _feed(digest, sorted(map(repr, value)))
    else:
        digest.update(f'{_scalar_text(value)};'.encode('utf-8', 'surrogatepass'))


def _scalar_text(value):
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return f'int {int(value)}'
    if isinstance(value, float):
        return f'float {float(value)!r}'
    if isinstance(value, str):
        return f'str {len(value)}:{value}'
    if isinstance(value, bytes):
        return f'bytes {value.hex()}'
    return f'{type(value).__qualname__} {value!r}'


def verify(contents, flag, path):
    """InputError when the loaded file `contents` carries a checksum that its contents do not
    match; nothing to do for a file without one."""
    saved = contents.get(CHECKSUM) if isinstance(contents, Mapping) else None
    if isinstance(saved, str) and saved != contents_checksum(contents):
        raise InputError(f'{flag} {path} is damaged: its checksum does not match its contents; '
                         f'use an intact copy or another checkpoint')


def unverified_note(contents, flag, path):
    """The log's note for a checkpoint that carries no checksum (the official code's, or one of
    ours saved before checksums were kept); None for a verified one and for a plain weights
    file (ImageNet)."""
    if (not isinstance(contents, Mapping) or CHECKSUM in contents
            or not (is_ours(contents) or 'state_dict' in contents)):
        return None
    return (f'{flag} {path} carries no checksum to verify (an official checkpoint, or one saved '
            f'before checkpoints carried one): loaded as it is')


# ---- writing ------------------------------------------------------------------------------------

class ResumePoint(NamedTuple):
    """Where training continues: `epoch`, after its first `batch` batches, with the statistics
    `meter_state` of those batches (None at an epoch start)."""
    epoch: int = 1
    batch: int = 0
    meter_state: Optional[dict] = None


def save_checkpoint(run, epoch, iteration=0, meter=None, name=LAST_CHECKPOINT):
    """Save a TrainingRun to save_dir/`name`. `iteration` 0: epochs 1..epoch are complete;
    else `iteration` batches of `epoch`, whose statistics `meter` holds. Only the main process
    writes; every process gets the path. Raises trainer.NonFinite, writing nothing, when the
    last optimizer step left a NaN or an infinity in the parameters: no checkpoint holds one."""
    trainer.check_parameters(run)
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
    write_checkpoint(state, path)
    return path


def write_checkpoint(state, path):
    """torch.save of `state` with its checksum added, replacing `path` atomically
    (utils/files.py). Serialised in memory first, so that a full disk is told with the size the
    file needs."""
    buffer = io.BytesIO()
    torch.save({**state, CHECKSUM: contents_checksum(state)}, buffer)
    atomic_write_bytes(buffer.getbuffer(), path, sync_folder=True)


# ---- reading ------------------------------------------------------------------------------------

def _read(path, mmap=False):
    # weights_only=False: ours also hold the options and random states
    return torch.load(path, map_location='cpu', mmap=mmap, weights_only=False)


def load_checkpoint(path, flag='--resume'):
    """A checkpoint of this project, its checksum verified, or of the official code (returned
    with 'format' absent). InputError when the file is missing, is not a checkpoint at all, or
    is damaged. Read once per run: utils/config.resolve hands it on."""
    if not os.path.isfile(path):
        raise InputError(f'{flag} {path}: no such file')
    try:
        checkpoint = _read(path)
    except Exception as err:  # torch.load raises many types for a file that is not a checkpoint
        raise InputError(f'{flag} {path}: not a readable checkpoint ({type(err).__name__}: '
                         f'{err})') from None
    if not isinstance(checkpoint, dict) or not ({'model', 'state_dict'} & set(checkpoint)):
        raise InputError(f'{flag} {path}: not a checkpoint (expected a dict with "model" or '
                         f'"state_dict")')
    verify(checkpoint, flag, path)
    return checkpoint


def peek_checkpoint(path):
    """A checkpoint with its tensors left on disk (memory-mapped, not verified): its arguments,
    run id and position, cheaply. None when it cannot be read that way (load_checkpoint says
    why)."""
    try:
        checkpoint = _read(path, mmap=True)
    except Exception:  # missing, not a checkpoint, or an old non-zip file: many exception types
        return None
    return checkpoint if isinstance(checkpoint, dict) else None


def progress(checkpoint):
    """(epochs completed, batches of the next epoch) of a checkpoint: comparable between the
    checkpoints of a run. An official checkpoint counts its epochs."""
    epoch, iteration = int(checkpoint.get('epoch') or 0), int(checkpoint.get('iteration') or 0)
    return (epoch - 1, iteration) if iteration else (epoch, 0)


# ---- restoring ----------------------------------------------------------------------------------

def load_resume_weights(model, checkpoint, path):
    """The weights of the --resume `checkpoint` (read from `path`) into `model`."""
    if not is_ours(checkpoint):  # the official code's {'state_dict', 'epoch'}
        try:
            models.load_pretrained(model, path, loaded=checkpoint)
        except ValueError as err:
            raise InputError(str(err)) from None
        return
    try:
        model.load_state_dict(checkpoint['model'])
    except RuntimeError as err:
        raise InputError(f'--resume {path} does not fit this model: '
                         f'{str(err).splitlines()[0]}') from None


def load_pretrained_weights(model, path):
    """The --pretrained file `path` into `model` (models.load_pretrained matches its tensors),
    read once and verified when it carries a checksum. Returns the log's note for a checkpoint
    without one, else None."""
    contents = read_pretrained(path)
    try:
        models.load_pretrained(model, path, loaded=contents)
    except ValueError as err:  # a file of another network
        raise InputError(str(err)) from None
    return unverified_note(contents, '--pretrained', path)


def read_pretrained(path):
    """The contents of a --pretrained file, verified against its checksum when it carries one.
    None when it is missing or unreadable: models.load_pretrained then warns or says why, in
    the words of the network it expected."""
    if not os.path.isfile(path):
        return None
    try:
        contents = _read(path)
    except Exception:  # many types, as in load_checkpoint
        return None
    verify(contents, '--pretrained', path)
    return contents


def restore_training_state(run, checkpoint):
    """Everything but the weights (load_resume_weights): optimizer, dictionary, random states
    and where to continue. An official checkpoint gives only its epoch counter."""
    if not is_ours(checkpoint):
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
    run.position = (epoch, iteration)


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
