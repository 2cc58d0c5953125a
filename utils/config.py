"""From the command line to a run's final configuration, in one place.

`resolve(argv)` parses the flags (utils/args.py), reads the --resume checkpoint (once: the
checkpoint is handed on, never read again), compares the given flags with the checkpoint's
(once), computes every value that depends on others (the seed, --meta_lr, the loss's parameters
and pair-weight form, the device, the ImageNet weights file (fetched if need be, or refused),
the dictionary's warm-up threshold and capacity), and checks
the input, all before anything is written. The configuration it returns is read-only: nothing
downstream changes a setting, so `config.pair_weights` means the same everywhere.

The warm-up threshold and the batch checks depend on the number of training classes, so the
data set's split listing (image paths and labels, no pixels) is read here and handed on too.
"""
import argparse
from typing import NamedTuple, Optional

import numpy as np
import torch

import DataSet
import losses
import models
from common.errors import InputError
from DataSet.noise import noisy_labels
from DataSet.specs import warmup_classes
from models.pretrained import resolve_pretrained
from utils.args import (FIXED_IN_RUN, FIXED_WITHIN_EPOCH, NOT_COMPARED, NOT_INHERITED,
                        OFFICIAL_LOSS, build_parser, flags_with, import_loss_module)
from utils.checkpoint import is_ours, load_checkpoint, newest_checkpoint_in
from utils.sampler import check_batch_size
from utils.tracking import check_backends

# The flags' roles on --resume (inherited, compared, fixed) are declared with the flags, in
# utils/args.py. Two values resolve_loss_flags derives are not flags: the loss's parameters,
# compared with the checkpoint's by their effect (as LOSS_PARAMETERS, which a run cannot
# change), and the official loss flags the loss ignores, which change nothing.
LOSS_PARAMETERS = 'loss_parameters'
DERIVED_LOSS_VALUES = ('loss_params', 'ignored_loss_flags')
# float32 holds up to 3.4e38; Adam's first step is 10 times the rate (bias correction).
MAX_LEARNING_RATE = 3e37


class Config(argparse.Namespace):
    """The resolved flags of a run, read-only. `vars(config)` is what checkpoints save;
    `config.replace(name=value)` makes a changed copy (tests, benchmarks)."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __setattr__(self, name, value):
        raise AttributeError(f'the configuration is final (utils/config.py): cannot set {name!r}; '
                             f'use .replace({name}=...) for a changed copy')

    def __delattr__(self, name):
        raise AttributeError(f'the configuration is final (utils/config.py): cannot delete '
                             f'{name!r}')

    def replace(self, **changes):
        return Config(**{**vars(self), **changes})


class Change(NamedTuple):
    """A flag whose value differs from the checkpoint's."""
    name: str
    saved: object
    now: object

    def as_typed(self, value):
        """The flag with `value` as a user would type it: `--lr 0.001`, `--freeze_BN 1`,
        `--dict_min_classes (unset)`; the loss's parameters as `--loss_param margin=0.5`, those
        that differ only."""
        if self.name == LOSS_PARAMETERS:
            other = self.now if value is self.saved else self.saved
            differ = [key for key in sorted(set(value) | set(other))
                      if value.get(key) != other.get(key)]
            return ' '.join(f'--loss_param {key}={value.get(key, "(unset)")}' for key in differ)
        return f'--{self.name} {self.typed_value(value)}'

    @staticmethod
    def typed_value(value):
        if value is None:
            return '(unset)'
        return str(int(value)) if isinstance(value, bool) else str(value)

    def __str__(self):
        """`--lr 0.0001 -> 0.001`; `--loss_param alpha=40.0 -> --loss_param alpha=20.0`."""
        if self.name == LOSS_PARAMETERS:
            return f'{self.as_typed(self.saved)} -> {self.as_typed(self.now)}'
        return f'{self.as_typed(self.saved)} -> {self.typed_value(self.now)}'


class Resolved(NamedTuple):
    config: Config
    checkpoint: Optional[dict]    # the --resume checkpoint, loaded once; None for a new run
    splits: Optional[tuple]       # DataSet.Splits: read_splits, then the holdout classes
    #                               and the label noise applied to its training items
    changes: tuple = ()           # Change for each flag given differently from the checkpoint


def parse_flags(argv=None, **defaults):
    """The flags of `argv` with the checkpoint's arguments as defaults on --resume (except
    the flags not inherited), and the checkpoint. `defaults` override the flags' defaults
    (train.py: MMSI=0; MMSI_SOP_train.py: the SOP configuration)."""
    parser = build_parser(**defaults)
    flags = parser.parse_args(argv)
    # --resume auto: a batch system that requeues a preempted job reruns the same command; the
    # first launch starts the run (no checkpoint yet), every later one continues it
    resume = (newest_checkpoint_in(flags.save_dir) if flags.resume == AUTO
              else flags.resume)
    checkpoint = load_checkpoint(resume) if resume else None
    if ours(checkpoint):
        known, not_inherited = vars(flags), flags_with(NOT_INHERITED)
        parser.set_defaults(**{key: value for key, value in checkpoint['args'].items()
                               if key in known and key not in not_inherited})
        parser.set_defaults(**defaults)
        flags = parser.parse_args(argv)
    flags.resume = resume
    return flags, checkpoint


AUTO = 'auto'


def ours(checkpoint):
    return is_ours(checkpoint)  # utils/checkpoint.py owns the format


def resolve(argv=None, *, read_data=True, evaluate_only=False, **defaults):
    """The final configuration of a run (see the module docstring). InputError, before
    anything is written, for any bad flag, data set or checkpoint.

    `read_data=False`: the flags alone (no data set is read; the warm-up threshold and the
    dictionary capacity stay as given). `evaluate_only`: for test.py, which reads a checkpoint
    to evaluate it: the loss, the training-only checks and the refusal of changed flags are
    left out."""
    # `flags` is resolved in place, then frozen into the Config
    flags, checkpoint = parse_flags(argv, **defaults)
    flags.seed = resolve_seed(flags, checkpoint)
    if flags.noise_seed is None:
        flags.noise_seed = flags.seed
    if flags.meta_lr is None:
        flags.meta_lr = flags.lr
    flags.device = resolve_device(flags.device)
    if ours(checkpoint):  # a resumed run has its weights: what it started from stays as saved
        flags.pretrained = checkpoint['args'].get('pretrained')
    changes = ()
    if not evaluate_only:
        vars(flags).update(resolve_loss_flags(flags))
        changes = changed_flags(flags, checkpoint)
        refuse_fixed_changes(changes, flags.resume, checkpoint)
        check_training_flags(flags)
    splits = None
    if read_data:
        splits = training_split(DataSet.read_splits(flags.data, flags.data_root), flags,
                                evaluate_only)
        num_classes = len({label for _, label in splits.train})
        if flags.dict_min_classes is None:
            flags.dict_min_classes = warmup_classes(flags.data, num_classes)
        flags.dict_capacity = flags.dict_capacity or num_classes * flags.d_size
        if not evaluate_only:
            check_against_data(flags, num_classes)
            if checkpoint is None:  # a resumed run takes its weights from the checkpoint
                # last: it may download the ImageNet file, which no other check should wait for
                flags.pretrained = resolve_pretrained(flags.net, flags.data, flags.pretrained)
    return Resolved(Config(**vars(flags)), checkpoint, splits, changes)


def training_split(splits, flags, evaluate_only=False):
    """`splits` with the last --holdout_classes training classes moved to `.holdout`, then
    --label_noise applied to the remaining training items (DataSet/noise.py, seed
    --noise_seed; the changes in `.relabelled`). InputError naming --holdout_classes when too
    few training classes would remain."""
    count = flags.holdout_classes
    total = len({label for _, label in splits.train})
    if count:
        remaining = total - count
        needed = [(2, 'at least 2')]
        if not evaluate_only:
            needed.append((flags.batch_size // flags.num_instances,
                           f'--batch_size {flags.batch_size} / --num_instances '
                           f'{flags.num_instances}'))
            if flags.MMSI:
                needed.append((flags.val_batch_size // flags.val_num_instances,
                               f'--val_batch_size {flags.val_batch_size} / '
                               f'--val_num_instances {flags.val_num_instances}'))
        for classes, what in needed:
            if remaining < classes:
                raise InputError(f'--holdout_classes {count} leaves {max(remaining, 0)} of the '
                                 f'{total} training classes; training needs {classes} ({what})')
    train, holdout = DataSet.hold_out_classes(splits.train, count)
    train, relabelled = noisy_labels(train, flags.label_noise, flags.noise_seed)
    return splits._replace(train=train, holdout=holdout, relabelled=tuple(relabelled))


def resolve_seed(flags, checkpoint):
    """--seed; else the checkpoint's; else drawn at random (then logged and saved)."""
    if flags.seed is not None:
        return flags.seed
    if checkpoint is not None and checkpoint.get('seed') is not None:
        return checkpoint['seed']
    return int(np.random.SeedSequence().entropy % 2 ** 31)


def resolve_device(name):
    """'auto' -> 'cuda' where there is a GPU, else 'cpu'. Each process of a multi-process
    run takes its own GPU later (utils/distributed.py)."""
    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f'--device {name!r}: expected auto, cpu, cuda or cuda:N') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise InputError(f'--device {name}: no CUDA device is available here')
    return name


def resolve_loss_flags(flags):
    """Import --loss_module, check --loss, and return
    loss_params: what the rule is given (flags the user set that it declares, and every
      --loss_param; the rule's own defaults for the rest),
    ignored_loss_flags: official flags given that the rule does not declare (the Run scripts
      always pass --margin and --alpha),
    pair_weights: 'official' or 'gradient' ('auto' resolved for this loss).
    InputError for an unknown loss, a --loss_param the rule does not declare, or
    --pair_weights official for a loss without an official weighted form."""
    if flags.loss_module:
        import_loss_module(flags.loss_module)
    _, rule = losses.split_name(flags.loss)
    if rule != flags.loss:
        raise InputError(f'--loss {flags.loss!r}: give the loss itself ({rule}); the trainers '
                         f'build its forms')
    declared = losses.parameters(rule)
    given = {flag: getattr(flags, flag) for flag in flags_with(OFFICIAL_LOSS)
             if getattr(flags, flag) is not None}
    extra = dict(flags.loss_param)
    repeated = sorted({name for name, _ in flags.loss_param
                       if sum(other == name for other, _ in flags.loss_param) > 1})
    if repeated:
        values = [f'{name}={value}' for name, value in flags.loss_param if name == repeated[0]]
        raise InputError(f'--loss_param {repeated[0]} is given {len(values)} times '
                         f'({", ".join(values)}); give it once')
    unknown = [name for name in extra if name not in declared]
    if unknown:
        raise InputError(f'--loss_param {unknown[0]}: {rule} has no such parameter; its '
                         f'parameters: {", ".join(declared) or "none"}')
    both = [name for name in extra if name in given and given[name] != extra[name]]
    if both:
        raise InputError(f'--{both[0]} {given[both[0]]} and --loss_param {both[0]}='
                         f'{extra[both[0]]} disagree; give one')
    params = losses.checked_parameters(rule, {**{k: v for k, v in given.items()
                                                 if k in declared}, **extra})
    return dict(loss_params=params,
                ignored_loss_flags={k: v for k, v in given.items() if k not in declared},
                pair_weights=losses.resolve_pair_weights(rule, flags.pair_weights))


def changed_flags(flags, checkpoint):
    """The flags whose resolved value differs from the checkpoint's (the one comparison of
    saved and given flags: the refusal below and the log's "Changed since the checkpoint"
    line both read it). The loss's parameters are compared by their effect: `--margin 0.5` on
    a Contrastive run whose margin already is 0.5 (its default) changes nothing."""
    if not ours(checkpoint):
        return ()
    saved = dict(checkpoint['args'], seed=checkpoint.get('seed'))
    not_compared = flags_with(NOT_COMPARED) + DERIVED_LOSS_VALUES
    changes = [Change(name, saved[name], value) for name, value in sorted(vars(flags).items())
               if name in saved and name not in not_compared
               and not same_flag_value(name, saved[name], value)]
    if flags.loss == saved['loss']:  # else the loss changed, which says it all
        now = effective_loss_parameters(flags.loss, flags.loss_params)
        before = effective_loss_parameters(saved['loss'], saved.get('loss_params') or {})
        if now != before:
            changes.append(Change(LOSS_PARAMETERS, before, now))
    return tuple(changes)


def effective_loss_parameters(loss, given):
    """Every parameter of the loss as the rule gets it: its defaults, then what was given."""
    try:
        defaults = losses.parameters(loss)
    except KeyError:  # a rule of a --loss_module not imported now: what was given
        defaults = {}
    return {**defaults, **given}


def same_flag_value(name, a, b):
    if name == 'net':
        return models.canonical_name(a) == models.canonical_name(b)
    return a == b


def refuse_fixed_changes(changes, resume, checkpoint):
    """Refuse a --resume that changes a flag its run cannot change, naming each one."""
    if not ours(checkpoint):
        return
    within_epoch = flags_with(FIXED_WITHIN_EPOCH)
    fixed = flags_with(FIXED_IN_RUN) + (LOSS_PARAMETERS,)
    if checkpoint['iteration']:  # stopped inside an epoch, whose batches are drawn already
        fixed += within_epoch
    refused = [change for change in changes if change.name in fixed]
    if refused:
        within = ''
        if {change.name for change in refused} & set(within_epoch):
            within = f' ({" and ".join("--" + name for name in within_epoch)}: until the ' \
                     f'epoch ends)'
        raise InputError(
            f'--resume {resume} was trained with '
            f'{" ".join(c.as_typed(c.saved) for c in refused)}, this run has '
            f'{" ".join(c.as_typed(c.now) for c in refused)}; these cannot change within a '
            f'run{within}: start a new one in another --save_dir, with --pretrained {resume} '
            f'to begin from its weights')


def check_training_flags(flags):
    """The checks that need the flags alone."""
    if flags.input_pipeline == 'gpu' and not flags.device.startswith('cuda'):
        raise InputError(f'--input_pipeline gpu decodes on the GPU; this run is on '
                         f'{flags.device}')
    models.check_width(flags.net, flags.width)
    check_backends(tensorboard='1' if flags.tensorboard else None, wandb=flags.wandb,
                   wandb_mode=flags.wandb_mode)
    if flags.num_instances < 2:
        raise InputError(f'--num_instances {flags.num_instances}: a batch would hold one '
                         f'image per class, hence no positive pair; use at least 2')
    if flags.MMSI and not flags.freeze_BN:
        raise InputError('--MMSI 1 needs --freeze_BN 1 (the official setting): the meta step '
                         'assumes BatchNorm in eval mode')
    rate = max(flags.lr * flags.base_lr_mult, flags.lr)
    if rate > MAX_LEARNING_RATE:
        raise InputError(f'--lr {flags.lr} (x --base_lr_mult {flags.base_lr_mult} for '
                         f'the backbone) is above {MAX_LEARNING_RATE:g}: Adam\'s first step, 10 '
                         f'times the rate, would not fit in float32')


def check_against_data(flags, num_classes):
    """The checks that need the number of training classes."""
    check_batch_size(flags.batch_size, flags.num_instances, num_classes)
    if not flags.MMSI:
        return
    check_batch_size(flags.val_batch_size, flags.val_num_instances, num_classes,
                     flag='--val_batch_size')
    needed = flags.dict_min_classes
    if needed > num_classes:
        raise InputError(f'--dict_min_classes {needed} is more than the {num_classes} training '
                         f'classes: MMSI would never leave its warm-up')
    if needed > flags.dict_capacity:
        raise InputError(f'--dict_min_classes {needed} is more than a dictionary of '
                         f'--dict_capacity {flags.dict_capacity} rows can hold: MMSI would '
                         f'never leave its warm-up')


def parse_args(argv=None, **defaults):
    """The configuration from the flags alone, without reading any data set (the comparison
    harness, --help, tests): `resolve(argv, read_data=False)`."""
    return resolve(argv, read_data=False, **defaults).config
