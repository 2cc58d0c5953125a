"""Every command-line flag, defined once, grouped by concern, with the official default.

Flag names are the official code's (including `--weight-decay` with a dash and `--epochs`,
which the official scripts abbreviate to `--epoch`: argparse accepts unambiguous prefixes).
Entry points may override defaults (train.py: --MMSI 0; MMSI_SOP_train.py: --data product).
"""
import argparse
import importlib
import importlib.util
import os
import sys

import losses
from DataSet.specs import SPECS
from common.errors import InputError


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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except a None one (the help says what unset means)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser(**defaults):
    parser = argparse.ArgumentParser(
        description='Deep metric learning with MMSI (meta-mining with semi-global information).',
        formatter_class=HelpFormatter)

    data = parser.add_argument_group('data')
    data.add_argument('--data', default='cub', help=' | '.join(SPECS))
    data.add_argument('--data_root', default='DataSet',
                      help='folder holding the data set folders (CUB_200_2011, Cars196, ...)')
    data.add_argument('--width', type=positive_int, default=227, help='crop size fed to the network')
    data.add_argument('--origin_width', type=positive_int, default=256,
                      help='shorter side after resizing, before cropping')
    data.add_argument('--ratio', type=area_fraction, default=0.16,
                      help='smallest area fraction of the random resized crop')
    data.add_argument('--nThreads', '-j', type=nonnegative_int, default=default_workers(),
                      help='data loading workers; by default the CPUs this process may use, at '
                           'most 16')
    data.add_argument('--input_pipeline', choices=('pil', 'tensor', 'gpu'), default='pil',
                      help='pil: the reference transforms; tensor: torchvision.io decoding and '
                           'one resampling in the workers; gpu: nvJPEG decoding and cropping on '
                           'the GPU (same crop distribution; DataSet/tensor_pipeline.py)')
    data.add_argument('--skip_bad_images', type=str2bool, default=False,
                      help='log undecodable images and use another image of the class')
    data.add_argument('--check_images', type=str2bool, default=True,
                      help='before training, read the header (format and size, not the pixels) '
                           'of every listed image, with --nThreads workers')
    data.add_argument('--holdout_classes', type=nonnegative_int, default=0,
                      help='set the last N training classes (by sorted label) aside: they never '
                           'train, and every evaluation also reports R@1, MAP@R and R-Precision '
                           'on them (holdout/...: a selection set; our extension)')
    data.add_argument('--label_noise', type=noise_fraction, default=0.0,
                      help='give this fraction of the training images (rounded, over the whole '
                           'set) the label of another training class, drawn with --noise_seed; '
                           'the changes go to <save_dir>/noisy_labels.csv (our extension)')
    data.add_argument('--noise_seed', type=nonnegative_int, default=None,
                      help='seed of the --label_noise draw (default: --seed), so that runs of '
                           'one noise seed see the same noisy labels')

    model = parser.add_argument_group('model')
    model.add_argument('--net', default='BN_Inception',
                       help='backbone: BN_Inception | ResNet50 | ViT_S16 (models/__init__.py)')
    model.add_argument('--dim', type=nonnegative_int, default=512, help='embedding size')
    model.add_argument('--pretrained', default=None,
                       help='imagenet (the standard ImageNet file of --net, from '
                            'pretrained_models/ or the torch hub cache, downloaded there when '
                            'missing), a weights file or checkpoint to start from, or none '
                            '(random initialisation). Default: imagenet on cub, car, product '
                            'and shop, where a run without ImageNet weights is refused unless '
                            '"none" is given; none on glyphs and glyphs_many')
    model.add_argument('--freeze_BN', type=str2bool, default=True,
                       help='keep every BatchNorm layer in eval mode (affine parameters train)')

    loss = parser.add_argument_group('loss')
    loss.add_argument('--loss', default='Con',
                      help=' | '.join(losses.RULES) + ', or a rule that --loss_module registers')
    # The official flags; None: the loss's own default (each loss declares its parameters).
    loss.add_argument('--margin', type=nonnegative_float, default=None,
                      help='pair margin of Con (0.5), MS (0.1) and Triplet (0.1); default: the '
                           "loss's own")
    loss.add_argument('--alpha', type=positive_float, default=None,
                      help="MS negative scale (default: the loss's own, 40)")
    loss.add_argument('--beta', type=positive_float, default=None,
                      help="MS positive scale (default: the loss's own, 2)")
    loss.add_argument('--loss_param', type=loss_parameter, action='append', default=[],
                      metavar='NAME=VALUE',
                      help='any parameter of the loss, repeatable: MS base, Circle m and gamma, '
                           'SupCon temperature, ... (losses/__init__.py lists them)')
    loss.add_argument('--loss_module', type=optional_path, default=None,
                      help='a Python file or module imported first, whose '
                           'losses.register(name, Rule) adds a loss of your own')

    optim = parser.add_argument_group('optimisation')
    optim.add_argument('--lr', type=positive_float, default=1e-5, help='Adam learning rate')
    optim.add_argument('--base_lr_mult', type=nonnegative_float, default=1.0,
                       help='learning-rate factor of the backbone (the embedding layer uses 1)')
    optim.add_argument('--weight-decay', '--weight_decay', dest='weight_decay', type=nonnegative_float,
                       default=5e-4)
    optim.add_argument('--batch_size', '-b', type=positive_int, default=80, help='P x K images')
    optim.add_argument('--num_instances', type=positive_int, default=5, help='K: images per class')
    optim.add_argument('--epochs', type=nonnegative_int, default=600)
    optim.add_argument('--seed', type=nonnegative_int, default=None,
                       help='seed of every random draw; drawn at random (and logged) if unset')

    add_mmsi_flags(parser.add_argument_group('MMSI'))

    output = parser.add_argument_group('output and evaluation')
    output.add_argument('--save_dir', default='ckps/run', help='log, metrics and checkpoints')
    output.add_argument('--save_step', type=positive_int, default=3,
                        help='evaluate and keep a checkpoint every this many epochs')
    output.add_argument('--eval_first', type=int, choices=(0, 1), default=1,
                        help='evaluate the starting weights before the first epoch (0: skip, '
                             'when they were evaluated already, as compare.py does)')
    output.add_argument('--eval_every', type=nonnegative_int, default=0,
                        help='also evaluate every this many iterations (0: only per epoch)')
    output.add_argument('--eval_batch_size', type=positive_int, default=100)
    output.add_argument('--print_freq', type=positive_int, default=20, help='iterations per log line')
    output.add_argument('--resume', type=optional_path, default=None,
                        help='checkpoint of this project to continue a run from, with its own '
                             'flags unless given (an official checkpoint: weights and epoch '
                             'counter); "auto": the newest checkpoint in --save_dir if it holds '
                             'one, else a new run (for batch systems that requeue a job)')
    output.add_argument('--checkpoint_minutes', type=nonnegative_float, default=10.0,
                        help='also write last.pth.tar at the first iteration boundary this many '
                             'minutes after the last one (0: only at epoch ends)')
    output.add_argument('--overwrite', type=str2bool, default=False,
                        help='write into a --save_dir that holds another run, or later '
                             'checkpoints than --resume: those files are deleted first')
    output.add_argument('--progress', type=str2bool, default=True,
                        help='progress bars during feature extraction')
    output.add_argument('--nmi', choices=('final', 'every', 'off'), default='final',
                        help='NMI of k-means on the test embeddings: at the last evaluation, at '
                             'every evaluation, or never')
    output.add_argument('--tensorboard', type=str2bool, default=False,
                        help='also write the per-iteration and per-evaluation scalars as '
                             'TensorBoard events under <save_dir>/tensorboard')
    output.add_argument('--wandb', default=None, metavar='PROJECT',
                        help='also send the same scalars to this Weights & Biases project '
                             '(needs the wandb package)')
    output.add_argument('--wandb_mode', choices=('online', 'offline', 'disabled'),
                        default='online', help='W&B mode (offline works without a network)')

    device = parser.add_argument_group('device')
    device.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    device.add_argument('--amp', choices=('off', 'bf16', 'fp16'), default='off',
                        help='autocast precision of the network; losses, pair weights and the '
                             'meta-gradient stay float32')
    device.add_argument('--channels_last', type=str2bool, default=False,
                        help='channels-last memory format (faster convolutions on recent GPUs)')

    parser.set_defaults(**defaults)
    return parser


def add_mmsi_flags(mmsi):
    """The MMSI group: the flags that change nothing when --MMSI is 0."""
    mmsi.add_argument('--MMSI', type=int, choices=(0, 1), default=1,
                      help='1: meta-learned pair weights; 0: plain DML training')
    mmsi.add_argument('--d_size', type=int, default=5,
                      help='semi-global dictionary: embeddings kept per class')
    mmsi.add_argument('--dict_capacity', type=nonnegative_int, default=0,
                      help='dictionary bound in rows; 0: training classes x d_size')
    mmsi.add_argument('--dict_min_classes', type=nonnegative_int, default=None,
                      help='warm-up: classes the dictionary must hold before MMSI updates '
                           '(default: cub/car 98, product 1000, glyphs its classes minus 2, '
                           'glyphs_many 300)')
    mmsi.add_argument('--val_batch_size', type=positive_int, default=10)
    mmsi.add_argument('--val_num_instances', type=positive_int, default=1)
    mmsi.add_argument('--meta_lr', type=positive_float, default=None,
                      help='step size of the virtual update (default: --lr)')
    mmsi.add_argument('--pair_weights', choices=losses.PAIR_WEIGHTS, default='auto',
                      help='how pair weights enter the weighted loss: official (the official '
                           'code, Con and MS only), gradient (any loss: weights on dL/dS), auto '
                           '(official where it exists); resolved when parsed')
    mmsi.add_argument('--meta_grad', choices=('jvp', 'exact'), default='jvp',
                      help='jvp: forward-mode fast path; exact: double-backward reference')


def mmsi_only_flags():
    """The flags of the MMSI group except --MMSI itself (those that change nothing when --MMSI
    is 0)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_mmsi_flags(parser)
    return set(vars(parser.parse_args([]))) - {'MMSI'}


def flag_names():
    """The name (argparse dest) of every training flag."""
    return set(vars(build_parser().parse_args([])))


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


def default_workers():
    """The CPUs this process may use, at most 16."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity on this platform
        usable = os.cpu_count() or 1
    return min(16, usable)
