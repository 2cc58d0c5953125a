"""Experiment tracking: TensorBoard and Weights & Biases, fed by the rows metrics.jsonl holds.

One interface for every backend:
    writer.record(row, step=None)   a metrics.jsonl row (an epoch's or an evaluation's): every
                                    number in it becomes a scalar under its key ('loss', 'R@1',
                                    'MAP@R', ...); a nested dict ('skipped') becomes key/sub-key;
                                    the position keys (epoch, iteration, ...) are not plotted
    writer.scalars(values, step)    per-iteration numbers (a step's statistics), under 'train/'
    writer.close()
The step is the x axis: by default the row's 'global_step', else its 'epoch'; a run should pass
its global step every time, so that epoch rows and mid-epoch evaluations share one axis.

`open_writer(tensorboard=DIR, wandb=PROJECT, ...)` returns one writer for the backends asked
for (none: a writer that does nothing). Both backends are imported on first use; a missing
package is one InputError naming what to install. wandb is not in requirements.txt (a 20 MB
wheel with its own service binary, used by few); tensorboard is.
"""
import importlib
import numbers

from common.errors import InputError

# Keys of a metrics.jsonl row that say where it was taken, not what was measured.
POSITION_KEYS = ('epoch', 'iteration', 'iterations', 'global_step', 'per_epoch')
WANDB_MODES = ('online', 'offline', 'disabled')


def numeric_items(row, prefix=''):
    """(tag, float) for every number in `row`, NaN and infinities included (0-d tensors too;
    bools, strings and lists left out); nested dicts flattened as 'key/sub-key'."""
    for key, value in row.items():
        tag = f'{prefix}{key}'
        if isinstance(value, dict):
            yield from numeric_items(value, prefix=f'{tag}/')
            continue
        if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:  # 0-d tensor or numpy
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            yield tag, float(value)


def row_step(row, step=None):
    if step is not None:
        return int(step)
    for key in ('global_step', 'epoch'):
        if row.get(key) is not None:
            return int(row[key])
    raise ValueError(f'no step for this row (no global_step or epoch, and none given): {row}')


class Writer:
    """The interface; also the writer that does nothing (no backend asked for)."""

    def record(self, row, step=None):
        step = row_step(row, step)
        self.write({tag: value for tag, value in numeric_items(row)
                    if tag not in POSITION_KEYS}, step)

    def scalars(self, values, step):
        self.write(dict(numeric_items(values, prefix='train/')), int(step))

    def write(self, values, step):
        """values: {tag: float} at `step`."""

    def close(self):
        pass


def _summary_writer_class(log_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise InputError(f'--tensorboard {log_dir}: the tensorboard package is missing ({err}); '
                         f'install it: pip install tensorboard==2.21.0 (as requirements.txt '
                         f'pins it)') from None
    return SummaryWriter


def _wandb_module(project):
    try:
        return importlib.import_module('wandb')
    except ImportError:
        raise InputError(f'--wandb {project}: the wandb package is not installed; install it '
                         f'(pip install wandb) and log in (wandb login), or use --wandb_mode '
                         f'offline') from None


def check_backends(tensorboard=None, wandb=None, wandb_mode='online'):
    """The InputError open_writer would raise, without creating any file: for the checks a run
    makes before its first write."""
    if tensorboard:
        _summary_writer_class(tensorboard)
    if wandb:
        if wandb_mode not in WANDB_MODES:
            raise InputError(f'--wandb_mode {wandb_mode!r}: choose one of '
                             f'{", ".join(WANDB_MODES)}')
        _wandb_module(wandb)


class TensorBoardWriter(Writer):
    """Event files under `log_dir` (`tensorboard --logdir DIR`)."""

    def __init__(self, log_dir):
        SummaryWriter = _summary_writer_class(log_dir)
        self.log_dir = str(log_dir)
        self.summary = SummaryWriter(log_dir=self.log_dir)

    def write(self, values, step):
        for tag, value in values.items():
            self.summary.add_scalar(tag, value, global_step=step)
        self.summary.flush()

    def close(self):
        self.summary.close()


class WandbWriter(Writer):
    """A Weights & Biases run in `project`, its local files under `dir`; mode 'online',
    'offline' (synced later with `wandb sync`) or 'disabled'."""

    def __init__(self, project, dir, mode='online', name=None, config=None):
        check_backends(wandb=project, wandb_mode=mode)
        wandb = _wandb_module(project)
        self.run = wandb.init(project=project, dir=str(dir), mode=mode, name=name,
                              config=dict(config or {}))

    def write(self, values, step):
        self.run.log(dict(values), step=step)

    def close(self):
        self.run.finish()


class Writers(Writer):
    """Several writers fed at once."""

    def __init__(self, writers):
        self.writers = list(writers)

    def write(self, values, step):
        for writer in self.writers:
            writer.write(values, step)

    def close(self):
        for writer in self.writers:
            writer.close()


def open_writer(tensorboard=None, wandb=None, wandb_dir='.', wandb_mode='online', run_name=None,
                config=None):
    """The writer for the backends asked for: a TensorBoard log dir, a W&B project, both or
    neither (then a Writer that does nothing)."""
    writers = []
    if tensorboard:
        writers.append(TensorBoardWriter(tensorboard))
    if wandb:
        writers.append(WandbWriter(wandb, wandb_dir, wandb_mode, run_name, config))
    if not writers:
        return Writer()
    return writers[0] if len(writers) == 1 else Writers(writers)


__all__ = ['Writer', 'TensorBoardWriter', 'WandbWriter', 'Writers', 'open_writer', 'check_backends',
           'numeric_items', 'row_step']
