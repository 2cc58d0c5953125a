"""compare.py's command line: the harness's options before `--`, the training flags of every
trial after it, and the checks of the options (each error one line, an InputError)."""
import argparse
import os

from common.errors import InputError
from utils.args import flag_names, positive_float, positive_int

QUICK = dict(seeds=[0, 1], stage1_epochs=4, epochs=2)


class HarnessParser(argparse.ArgumentParser):
    """argparse whose errors are one line (an InputError, printed by main), not the usage."""

    def error(self, message):
        raise InputError(f'{message} (python compare.py --help)')


def vary_axis(text):
    flag, sep, values = str(text).partition('=')
    flag = flag.lstrip('-')
    if not sep or not flag or not values:
        raise argparse.ArgumentTypeError(f'expected FLAG=V1,V2,..., got {text!r}')
    return flag, [value for value in values.split(',') if value]


def build_parser(description=None):
    """The harness's options; `description` is the first paragraph of compare.py's --help."""
    parser = HarnessParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Training flags for every run follow a "--".')
    parser.add_argument('--out', help='output folder (runs, console logs, summary)')
    parser.add_argument('--losses', nargs='+', default=['MS'])
    parser.add_argument('--mmsi', nargs='+', type=int, choices=(0, 1), default=[0, 1])
    parser.add_argument('--pair_weights', nargs='+', default=['auto'],
                        choices=('auto', 'official', 'gradient'),
                        help='forms of the MMSI cells (auto: official where it exists)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--vary', type=vary_axis, action='append', default=[],
                        metavar='FLAG=V1,V2', help='another axis over a training flag; repeatable')
    parser.add_argument('--vary_losses', nargs='+', default=None,
                        help='give the --vary axes to these losses only (default: all)')
    parser.add_argument('--select', type=vary_axis, action='append', default=[],
                        metavar='FLAG=V1,V2',
                        help='tune every cell over these values of a training flag, '
                             'repeatable: the summary reports each cell at the values and '
                             'epoch with the best holdout MAP@R averaged over seeds (needs '
                             '--holdout_classes N after --); finished runs are reused by a '
                             'wider --select')
    parser.add_argument('--protocol', choices=('finetune', 'scratch'), default='finetune')
    parser.add_argument('--stage1_epochs', type=positive_int, default=12,
                        help='finetune: epochs of the plain MS stage 1')
    parser.add_argument('--stage1_lr', type=positive_float, default=1e-4)
    parser.add_argument('--jobs', type=positive_int, default=1, help='runs at a time')
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='CPU threads per run (default: usable CPUs / jobs)')
    parser.add_argument('--quick', action='store_true',
                        help='seeds 0 1, stage 1 of 4 epochs, cells of 2 epochs')
    parser.add_argument('--keep_checkpoints', choices=('all', 'last'), default='all',
                        help='last: when a run finishes, delete its ckp_epN.pth.tar files but '
                             'last.pth.tar and the stage-1 checkpoint the cells start from '
                             '(a study of many runs then fits a small disk)')
    parser.add_argument('--extend', action='store_true',
                        help='allow a higher --epochs than the existing runs were trained for: '
                             'they continue to it (stage-1 runs are never extended)')
    parser.add_argument('--summarise', metavar='DIR',
                        help='only (re)write the summary of an existing output folder')
    return parser


def parse_command_line(argv, description=None):
    """(harness options, training flags) of a command line, checked; --out made absolute
    once: trainings run in the repository's folder, not in the caller's."""
    split = argv.index('--') if '--' in argv else len(argv)
    options = build_parser(description).parse_args(argv[:split])
    common = argv[split + 1:]
    if options.summarise:
        options.summarise = os.path.abspath(options.summarise)
        return options, common
    if not options.out:
        raise InputError('--out: give the output folder')
    options.out = os.path.abspath(options.out)
    if options.quick:
        options.seeds = QUICK['seeds']
        options.stage1_epochs = QUICK['stage1_epochs']
        common = common + ['--epochs', str(QUICK['epochs'])]
    check_distinct(options)
    check_vary(options.vary)
    check_vary(options.select, '--select')
    return options, common


def check_distinct(options):
    """Each value of a grid axis once: a repeated one would count its trials twice."""
    axes = [('--losses', options.losses), ('--mmsi', options.mmsi), ('--seeds', options.seeds)]
    axes += [(f'--vary {flag}', values) for flag, values in options.vary]
    axes += [(f'--select {flag}', values) for flag, values in options.select]
    for name, values in axes:
        repeated = [value for i, value in enumerate(values) if value in values[:i]]
        if repeated:
            raise InputError(f'{name}: {repeated[0]} is given twice')
    axes = [('--vary', flag) for flag, _ in options.vary]
    axes += [('--select', flag) for flag, _ in options.select]
    for i, (option, flag) in enumerate(axes):
        earlier = [other for other, same in axes[:i] if same == flag]
        if earlier and earlier[0] == option:
            raise InputError(f'{option} {flag}: given twice; put all its values in one axis')
        if earlier:
            raise InputError(f'{earlier[0]} {flag} and {option} {flag}: a flag is either varied '
                             f'or selected, not both')


def check_vary(vary, option='--vary'):
    known = flag_names()
    for flag, values in vary:
        if flag not in known:
            raise InputError(f'{option} {flag}: not a training flag (python MMSI_train.py '
                             f'--help)')
        if not values:
            raise InputError(f'{option} {flag}: give at least one value')
