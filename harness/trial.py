"""A trial: one seed of one cell of the grid (or of stage 1), trained by one MMSI_train.py
process in a folder of its own. Its flags are its identity, stored in its descriptor
(DIR/<folder>/<name>.cell.json) before it first starts; the summary reads the descriptors."""
import json
import os
import sys

from common.errors import InputError
from harness.messages import say
from utils.checkpoint import (EPOCH_CHECKPOINT, LAST_CHECKPOINT, epoch_checkpoint_name,
                              newest_checkpoint_in)
from utils.config import parse_args
from utils.files import atomic_write_text
from utils.run_folder import folder_in_use

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where MMSI_train.py is
TRAINER = os.path.join(ROOT, 'MMSI_train.py')  # what every trial executes
DONE = 'finished'  # marker file the harness writes in a trial's folder after a clean exit


class Trial:
    """One trial of the grid: its folder, flags and what it is for."""

    def __init__(self, out, name, flags, cell, seed, folder='runs', start=None, select=()):
        self.name, self.flags, self.cell, self.seed = name, flags, cell, seed
        self.select = list(select)  # the --select flags among the cell's values
        self.relative_dir = os.path.join(folder, name)  # within DIR
        self.dir = os.path.join(out, self.relative_dir)
        self.descriptor_path = f'{self.dir}.cell.json'
        self.is_stage1 = folder == 'stage1'
        self.start = start  # the stage-1 Trial it fine-tunes, whose last evaluation is epoch 0
        self.console = os.path.join(out, 'console', f'{name}.txt')
        self.args = parse_args(flags + ['--save_dir', self.dir])  # InputError before any trial

    @property
    def finished(self):
        return os.path.exists(os.path.join(self.dir, DONE))

    def in_use(self):
        """Whether a training holds the folder, this harness's child or not."""
        return folder_in_use(self.dir)

    def checkpoint(self):
        """The newest checkpoint in the folder, or None."""
        return newest_checkpoint_in(self.dir)

    def has_trained(self):
        """Whether the folder holds this trial's training: finished, a checkpoint, or a
        training at work. A folder with none of them (a trial that died before its first
        checkpoint) is abandoned: nothing in it is worth keeping."""
        return self.finished or self.in_use() or self.checkpoint() is not None

    def command(self):
        """The training command; the supervisor calls it when no training holds the folder.
        With `--resume auto` the trainer continues from the folder's newest checkpoint (an
        interrupted or extended trial), or starts the trial when it holds none, clearing the
        files of one that died before its first checkpoint; it refuses a folder in use
        (utils/config.py, utils.run_folder.prepare). The harness itself never deletes a trial."""
        return [sys.executable, TRAINER, *self.flags, '--save_dir', self.dir, '--resume', 'auto']

    def describe(self, trained_by=()):
        """The trial's descriptor: its identity (the flags), what the summary reads, and the
        harness commands that trained it."""
        described = dict(self.cell.descriptor(), seed=self.seed, name=self.name,
                         epochs=self.args.epochs, flags=self.flags, trained_by=list(trained_by),
                         select=self.select)
        if self.start:
            described['start'] = self.start.relative_dir
        return described

    def stored(self):
        """The descriptor an earlier harness wrote, or None."""
        return read_descriptor(self.descriptor_path) if os.path.exists(self.descriptor_path) \
            else None

    def prune_checkpoints(self):
        """--keep_checkpoints last, on a finished trial: delete its per-epoch checkpoints but the
        one the cells fine-tune from (a stage-1 trial's). last.pth.tar stays: an --extend
        continues from it. The summary reads only metrics.jsonl, so a grid then needs one or two
        checkpoints' space per trial instead of one per evaluation."""
        if self.in_use():  # a training started by hand in a finished trial's folder
            say(f'warning: {self.name}: a training holds its folder, so its checkpoints are kept '
                f'(--keep_checkpoints last)')
            return
        names = sorted(os.listdir(self.dir))
        if LAST_CHECKPOINT not in names:  # nothing else to continue from: keep them all
            say(f'warning: {self.name}: no {LAST_CHECKPOINT}, so its epoch checkpoints are kept '
                f'(--keep_checkpoints last)')
            return
        keep = epoch_checkpoint_name(self.args.epochs) if self.is_stage1 else None
        for name in names:
            if EPOCH_CHECKPOINT.fullmatch(name) and name != keep:
                try:
                    os.remove(os.path.join(self.dir, name))
                except OSError as err:  # disk space is not worth stopping the grid for
                    say(f'warning: {self.name}: could not delete {name} ({err.strerror})')


def read_descriptor(path):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise InputError(f'{path}: not a readable run descriptor ({err})') from None


def write_descriptor(path, descriptor):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(json.dumps(descriptor, indent=1) + '\n', path)
