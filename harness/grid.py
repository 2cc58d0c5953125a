"""The grid: its cells (losses x MMSI x pair-weight forms x --vary and --select values) and the
trials that train them, one per cell and seed, planned and checked before anything starts.
--protocol finetune adds one plain MS stage-1 trial per seed that the seed's cells start from."""
import itertools
import os
from typing import NamedTuple, Tuple

from common.errors import InputError
from DataSet.specs import is_real
from harness.messages import complain
from harness.trial import Trial
from models.pretrained import is_none
from utils.args import flags_with
from utils.checkpoint import epoch_checkpoint_name
from utils.config import parse_args, resolve


class Cell(NamedTuple):
    """One cell of the grid (hashable: the summary's key). `vary` holds the --vary values as
    sorted (flag, value) pairs, values as strings."""
    loss: str
    mmsi: int
    pair_weights: str  # 'official' or 'gradient'; 'none' when mmsi is 0
    vary: Tuple[Tuple[str, str], ...] = ()

    @classmethod
    def make(cls, loss, mmsi, pair_weights, vary=()):
        """From plain values; `vary` a dict or (flag, value) pairs."""
        return cls(loss, int(mmsi), pair_weights,
                   tuple(sorted((str(flag), str(value)) for flag, value in dict(vary).items())))

    @classmethod
    def from_descriptor(cls, descriptor):
        """The cell of a trial's descriptor (DIR/runs/<name>.cell.json)."""
        return cls.make(descriptor['loss'], descriptor['mmsi'], descriptor['pair_weights'],
                        descriptor.get('vary') or {})

    def descriptor(self):
        """The cell's fields of a descriptor (vary as a {flag: value} object)."""
        return dict(loss=self.loss, mmsi=self.mmsi, pair_weights=self.pair_weights,
                    vary=dict(self.vary))

    def plain_partner(self, mmsi_flags):
        """The MMSI=0 cell of the same loss (and the same values of the flags that are not
        MMSI-only) that this cell's paired differences are taken against."""
        return Cell(self.loss, 0, 'none',
                    tuple((flag, value) for flag, value in self.vary if flag not in mmsi_flags))

    def sort_key(self):
        """Tables list cells by loss, MMSI, pair weights, then values: numbers in numeric
        order (lr 1e-5, 3e-5, 1e-4), not as text (1e-4, 1e-5, 3e-4, 3e-5)."""
        def value_key(value):
            try:
                return (0, float(value), value)
            except ValueError:
                return (1, 0.0, value)
        return (self.loss, self.mmsi, self.pair_weights,
                tuple((flag, value_key(value)) for flag, value in self.vary))

    def label(self):
        label = f'{self.loss} ' + (f'MMSI {self.pair_weights}' if self.mmsi else 'plain')
        return label + ''.join(f' {flag}={value}' for flag, value in self.vary)


STAGE1 = Cell('MS', 0, 'none')  # the cell of the stage-1 trials


def grid_cells(losses, mmsi_values, pair_weights, vary, vary_losses=None, select=()):
    """[Cell] of the grid: one per loss, MMSI value and pair-weight form (resolved per
    loss: 'auto' becomes 'official' or 'gradient'; forms a loss does not have are left out),
    times every --vary axis that applies (MMSI-only flags do not multiply MMSI=0 cells;
    `vary_losses` restricts the axes to some losses) and every --select axis (for every
    loss: each cell is tuned over them)."""
    import losses as loss_registry
    mmsi_flags = flags_with('mmsi_only')
    cells = []
    for loss in losses:
        loss_registry.split_name(loss)  # InputError for an unknown loss
        for mmsi in mmsi_values:
            forms = ['none'] if not mmsi else []
            for requested in (pair_weights if mmsi else []):
                try:
                    form = loss_registry.resolve_pair_weights(loss, requested)
                except InputError:
                    complain(f'note: {loss} has no official weighted form: no {loss} MMSI cell '
                             f'with --pair_weights official')
                    continue
                if form not in forms:
                    forms.append(form)
            for form in forms:
                axes = [(flag, values) for flag, values in vary
                        if (vary_losses is None or loss in vary_losses)
                        and (mmsi or flag not in mmsi_flags)]
                axes += [(flag, values) for flag, values in select
                         if mmsi or flag not in mmsi_flags]
                for combination in itertools.product(*(values for _, values in axes)):
                    cells.append(Cell.make(loss, mmsi, form,
                                           zip((flag for flag, _ in axes), combination)))
    return cells


def trial_name(cell, seed):
    """The name of a cell's trial of `seed`: its folder under DIR/runs."""
    suffix = ''.join(f'_{flag}{value}' for flag, value in cell.vary)
    return f'{cell.loss}_mmsi{cell.mmsi}_{cell.pair_weights}_seed{seed}{suffix}'


def trial_flags(cell, seed, common, start=None):
    """The training flags of one trial: the common ones, then the cell's, then the seed and the
    starting checkpoint (argparse keeps the last value of a flag given twice). A trial that
    starts from stage 1 skips evaluating it again: the summary takes its epoch 0 from stage 1."""
    flags = list(common) + ['--loss', cell.loss, '--MMSI', str(cell.mmsi), '--seed', str(seed)]
    if cell.mmsi:
        flags += ['--pair_weights', cell.pair_weights]
    for flag, value in cell.vary:
        flags += [f'--{flag}', value]
    if start:
        flags += ['--pretrained', start, '--eval_first', '0']
    return flags


def without_foreign_loss_params(flags, loss):
    """(`flags` without the `--loss_param NAME=VALUE` entries that `loss` has no parameter
    for, the values left out). Stage 1 is plain MS whatever the cells' losses are: a
    parameter given for them (SupCon's temperature) is none of its business."""
    import losses as loss_registry
    declared = loss_registry.parameters(loss)
    kept, dropped, i = [], [], 0
    while i < len(flags):
        if flags[i] == '--loss_param' and i + 1 < len(flags):
            value, width = flags[i + 1], 2
        elif flags[i].startswith('--loss_param='):
            value, width = flags[i].split('=', 1)[1], 1
        else:
            kept.append(flags[i])
            i += 1
            continue
        if value.partition('=')[0] in declared:
            kept += flags[i:i + width]
        else:
            dropped.append(value)
        i += width
    return kept, dropped


def plan(options, common):
    """(stage-1 trials, cell trials) of the grid; every trial's flags are parsed (and so
    checked) here, before anything starts."""
    check_common_flags(common, options.losses)
    if options.select and not parse_args(list(common)).holdout_classes:
        raise InputError('--select needs --holdout_classes N among the training flags (after '
                         '--): the values and the epoch are chosen on held-out training '
                         'classes, never on the test classes')
    select_flags = sorted(flag for flag, _ in options.select)
    stage1, trials = {}, []
    for seed in options.seeds:
        start = None
        if options.protocol == 'finetune':
            stage1[seed] = stage1_trial(options, common, seed)
            start = os.path.join(stage1[seed].dir, epoch_checkpoint_name(options.stage1_epochs))
        for cell in grid_cells(options.losses, options.mmsi, options.pair_weights,
                               options.vary, options.vary_losses, options.select):
            trials.append(Trial(options.out, trial_name(cell, seed),
                                trial_flags(cell, seed, common, start), cell, seed,
                                start=stage1.get(seed), select=select_flags))
    return list(stage1.values()), trials


def check_common_flags(common, losses):
    """The flags after `--` with each loss of the grid (a --loss_param fits some losses only;
    alone they would be checked against the default loss). Imports a --loss_module first."""
    for loss in losses:
        parse_args(list(common) + ['--loss', loss])


def stage1_trial(options, common, seed):
    """The plain MS trial of `seed` that its cells fine-tune from."""
    common, dropped = without_foreign_loss_params(common, STAGE1.loss)
    if dropped and seed == options.seeds[0]:
        names = ', '.join(value.partition('=')[0] for value in dropped)
        complain(f'note: stage 1 is plain {STAGE1.loss}, which has no {names}: left out of its '
                 f'flags')
    # stage 1 starts where the common flags say (--pretrained, or the data set's default:
    # ImageNet on a real data set); it evaluates that start unless it is random, so that the
    # summary shows what fine-tuning adds to the ImageNet weights
    flags = trial_flags(STAGE1, seed, common) + [
        '--lr', str(options.stage1_lr), '--epochs', str(options.stage1_epochs),
        '--save_step', str(options.stage1_epochs),
        '--eval_first', '0' if starts_at_random(common) else '1']
    return Trial(options.out, f'{STAGE1.loss}_seed{seed}', flags, STAGE1, seed, 'stage1')


def starts_at_random(flags):
    """Whether training flags start from random weights: --pretrained none, or no --pretrained
    on a generated data set (a real one defaults to its ImageNet weights)."""
    args = parse_args(flags)
    return is_none(args.pretrained) if args.pretrained is not None else not is_real(args.data)


def check_with_data(trials):
    """The trainer's checks that need the data set (a --batch_size that is no multiple of
    --num_instances, more classes than it has, ...), before anything starts: a bad flag would
    otherwise fail every trial. Once per distinct combination of the flags they read. The
    weights are each training's own check (`--pretrained none` here): a cell's starting
    checkpoint is written by its stage 1, after this check."""
    checked = set()
    for trial in trials:
        key = tuple(getattr(trial.args, name) for name in flags_with('data_checked'))
        if key not in checked:
            checked.add(key)
            try:
                resolve(trial.flags + ['--save_dir', trial.dir, '--pretrained', 'none'])
            except InputError as err:
                raise InputError(f'{trial.relative_dir}: {err}') from None
