"""Checkpoints: what a run saves and how it is restored, and the random-number-generator
states. File names, atomic writes and reading checkpoint files back: utils/run_folder.py."""
import os
import random
import time
from typing import NamedTuple, Optional

import numpy as np
import torch

import trainer
from common.errors import InputError
from utils.run_folder import LAST_CHECKPOINT, atomic_torch_save

FORMAT = 'mmsi-checkpoint-1'


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


