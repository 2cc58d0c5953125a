"""BN-Inception (Ioffe & Szegedy 2015) with the MMSI embedding head.

The backbone is the Caffe network converted to PyTorch and distributed as
`bn_inception-52deb4733.pth` (Cadene's pretrainedmodels): every layer is registered flat on the
network under its Caffe name (`inception_3a_1x1`, `inception_3a_1x1_bn`, ...), so that file and
the official MMSI checkpoints load with no renaming.

Inputs are BGR images in 0-255 minus the mean (104, 117, 128); the data pipeline does that.
The forward pass is purely functional (no in-place operation on activations, no state changed in
Python) because MMSI's meta step runs this model under `torch.func` transforms.
"""
import os
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from DataSet.specs import SPECS
from models.parts import embed, global_pool, load_matching, read_state_dict, warn_missing

FEATURE_DIM = 1024  # channels of the last inception block
BN_EPS = 1e-5
# Value of the official network (and of the Caffe conversion). In PyTorch's convention 0.9 puts
# 90% of the weight on the current batch; it only matters with freeze_bn=False.
BN_MOMENTUM = 0.9


class InceptionSpec(NamedTuple):
    """Widths of one inception block; conv_1x1 and pool_proj are None where the block has none."""
    block_id: str
    in_channels: int
    conv_1x1: Optional[int]
    reduce_3x3: int
    conv_3x3: int
    reduce_double: int
    conv_double: int     # double_3x3_1 and double_3x3_2
    pool: str            # 'avg' or 'max'
    pool_proj: Optional[int]
    stride: int          # 2: reduction block (strided 3x3 convs, pooled input passed through)


INCEPTION_BLOCKS = (
    #             id    in   1x1   3x3r  3x3  dblr  dbl  pool   proj  stride
    InceptionSpec('3a', 192, 64,   64,   64,  64,   96,  'avg', 32,   1),
    InceptionSpec('3b', 256, 64,   64,   96,  64,   96,  'avg', 64,   1),
    InceptionSpec('3c', 320, None, 128,  160, 64,   96,  'max', None, 2),
    InceptionSpec('4a', 576, 224,  64,   96,  96,   128, 'avg', 128,  1),
    InceptionSpec('4b', 576, 192,  96,   128, 96,   128, 'avg', 128,  1),
    InceptionSpec('4c', 576, 160,  128,  160, 128,  160, 'avg', 128,  1),
    InceptionSpec('4d', 608, 96,   128,  192, 160,  192, 'avg', 128,  1),
    InceptionSpec('4e', 608, None, 128,  192, 192,  256, 'max', None, 2),
    InceptionSpec('5a', 1056, 352, 192,  320, 160,  224, 'avg', 128,  1),
    InceptionSpec('5b', 1024, 352, 192,  320, 192,  224, 'max', 128,  1),
)
BLOCKS = {spec.block_id: spec for spec in INCEPTION_BLOCKS}


def block_out_channels(spec):
    pool_channels = spec.in_channels if spec.pool_proj is None else spec.pool_proj
    return (spec.conv_1x1 or 0) + spec.conv_3x3 + spec.conv_double + pool_channels


class Embedding(nn.Module):
    """The official `classifier`: Linear(in_dim, dim) then L2 normalisation."""

    def __init__(self, in_dim, dim):
        super().__init__()
        self.linear = nn.Linear(in_dim, dim)

    def forward(self, x):
        # float32: under fp16 autocast the squared norm of a 512-d vector can overflow to inf
        out = self.linear(x)
        return F.normalize(out.to(torch.promote_types(out.dtype, torch.float32)), dim=1)


def embedding_head(in_dim, dim):
    """The embedding of a backbone's pooled features, with BN-Inception's initialisation of
    it (Kaiming normal, fan_out; zero bias); None for dim 0 (the pooled features themselves)."""
    if dim <= 0:
        return None
    head = Embedding(in_dim, dim)
    nn.init.kaiming_normal_(head.linear.weight, mode='fan_out')
    nn.init.zeros_(head.linear.bias)
    return head


class BNInception(nn.Module):
    """BN-Inception backbone + global pooling + embedding.

    The global pooling is the data set's (DataSet/specs.py): max + average for 'product', as
    the official code does for SOP, max for the others. dim=0: forward returns the pooled 1024-d vector (not normalised).
    freeze_bn=True keeps every BatchNorm layer in eval mode, also after `model.train()`; their
    affine parameters still train.
    """

    def __init__(self, data='cub', dim=512, freeze_bn=True):
        super().__init__()
        self.pooling = SPECS[data].pooling if data in SPECS else 'max'
        self.dim = dim
        self.freeze_bn = freeze_bn

        self._add_conv('conv1_7x7_s2', 3, 64, kernel_size=7, stride=2)
        self._add_conv('conv2_3x3_reduce', 64, 64, kernel_size=1)
        self._add_conv('conv2_3x3', 64, 192, kernel_size=3)
        channels = 192
        for spec in INCEPTION_BLOCKS:
            assert spec.in_channels == channels, f'table error at inception_{spec.block_id}'
            self._add_inception_block(spec)
            channels = block_out_channels(spec)
        assert channels == FEATURE_DIM

        self.classifier = Embedding(FEATURE_DIM, dim) if dim > 0 else None
        self._init_weights()
        self.train()  # puts the BN layers in eval mode when frozen

    # ---- construction -------------------------------------------------------------------

    def _add_conv(self, name, in_channels, out_channels, kernel_size, stride=1):
        """Registers `name` (conv with bias) and `name_bn`, as in the Caffe network."""
        self.add_module(name, nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                        padding=kernel_size // 2))
        self.add_module(name + '_bn', nn.BatchNorm2d(out_channels, eps=BN_EPS,
                                                     momentum=BN_MOMENTUM))

    def _add_inception_block(self, spec):
        prefix = f'inception_{spec.block_id}'
        if spec.conv_1x1 is not None:
            self._add_conv(f'{prefix}_1x1', spec.in_channels, spec.conv_1x1, 1)
        self._add_conv(f'{prefix}_3x3_reduce', spec.in_channels, spec.reduce_3x3, 1)
        self._add_conv(f'{prefix}_3x3', spec.reduce_3x3, spec.conv_3x3, 3, stride=spec.stride)
        self._add_conv(f'{prefix}_double_3x3_reduce', spec.in_channels, spec.reduce_double, 1)
        self._add_conv(f'{prefix}_double_3x3_1', spec.reduce_double, spec.conv_double, 3)
        self._add_conv(f'{prefix}_double_3x3_2', spec.conv_double, spec.conv_double, 3,
                       stride=spec.stride)
        if spec.pool_proj is not None:
            self._add_conv(f'{prefix}_pool_proj', spec.in_channels, spec.pool_proj, 1)

    def _init_weights(self):
        """Random initialisation, used when no pretrained file is given."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.classifier is not None:
            nn.init.kaiming_normal_(self.classifier.linear.weight, mode='fan_out')
            nn.init.zeros_(self.classifier.linear.bias)

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    # ---- forward --------------------------------------------------------------------------

    def _conv_bn_relu(self, name, x):
        # Caffe applied ReLU in place, so every consumer of a layer reads the rectified tensor.
        return F.relu(getattr(self, name + '_bn')(getattr(self, name)(x)))

    def stem(self, x):
        x = self._conv_bn_relu('conv1_7x7_s2', x)
        x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)  # pool1_3x3_s2
        x = self._conv_bn_relu('conv2_3x3_reduce', x)
        x = self._conv_bn_relu('conv2_3x3', x)
        return F.max_pool2d(x, 3, stride=2, ceil_mode=True)  # pool2_3x3_s2

    def inception_block(self, block_id, x):
        """One inception block: branches 1x1, 3x3, double 3x3 and pool, concatenated."""
        spec = BLOCKS[block_id]
        prefix = f'inception_{block_id}'
        branches = []
        if spec.conv_1x1 is not None:
            branches.append(self._conv_bn_relu(f'{prefix}_1x1', x))
        branch_3x3 = self._conv_bn_relu(f'{prefix}_3x3_reduce', x)
        branches.append(self._conv_bn_relu(f'{prefix}_3x3', branch_3x3))
        branch_double = self._conv_bn_relu(f'{prefix}_double_3x3_reduce', x)
        branch_double = self._conv_bn_relu(f'{prefix}_double_3x3_1', branch_double)
        branches.append(self._conv_bn_relu(f'{prefix}_double_3x3_2', branch_double))

        if spec.stride == 2:  # reduction block: the pooled input passes through unprojected
            branches.append(F.max_pool2d(x, 3, stride=2, ceil_mode=True))
            _check_same_size(branches, block_id, x)
        else:
            if spec.pool == 'avg':
                pooled = F.avg_pool2d(x, 3, stride=1, padding=1, ceil_mode=True,
                                      count_include_pad=True)
            else:
                pooled = F.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
            branches.append(self._conv_bn_relu(f'{prefix}_pool_proj', pooled))
        return torch.cat(branches, dim=1)

    def features(self, x):
        """[B, 3, H, W] -> the [B, 1024, h, w] map of the last inception block."""
        x = self.stem(x)
        for spec in INCEPTION_BLOCKS:
            x = self.inception_block(spec.block_id, x)
        return x

    def global_pool(self, feature_map):
        return global_pool(feature_map, self.pooling)

    def forward(self, x):
        return embed(self.global_pool(self.features(x)), self.classifier)


def supported_width(width):
    """The reduction blocks (3c, 4e) need even map sizes: widths 32k-1 ... 32k+6 work, from
    k = 1 (below 31 pixels the pooling layers run out of map)."""
    return width >= 31 and (width + 1) % 32 <= 7


def _check_same_size(branches, block_id, x):
    """The strided convs and the ceil-mode pool of a reduction block disagree on odd sizes."""
    sizes = {tuple(branch.shape[2:]) for branch in branches}
    if len(sizes) > 1:
        raise ValueError(
            f'BN-Inception cannot take this image size: inception_{block_id} receives a '
            f'{x.shape[2]}x{x.shape[3]} map and its branches come out as {sorted(sizes)}. '
            'Reduction blocks need even sizes: the width must lie in 32k-1 ... 32k+6 '
            '(e.g. 64, 96, 224, 227).')


# ---- loading --------------------------------------------------------------------------------

EXPECTED_WEIGHTS = ('the Caffe-converted BN-Inception ImageNet weights (bn_inception-52deb4733.pth)'
                    ' or a BN-Inception checkpoint of the official MMSI code or of this project')


def load_pretrained(model, path, loaded=None):
    """Loads into `model` (in place) the ImageNet file, an official checkpoint or one of ours.
    `loaded`: the file's contents when the caller has read it already (it is not read again).

    A path that does not exist leaves the random initialisation, with a loud warning. A file
    that is not BN-Inception, or whose embedding size differs from the model's, raises InputError
    (a ValueError). The reading and matching are models/parts.py's, shared with ResNet and ViT.
    """
    if loaded is None and not os.path.exists(path):
        warn_missing(path)
        return model
    source = read_state_dict(path, EXPECTED_WEIGHTS, loaded)
    if any(key.startswith('classifier.bn.') for key in source):
        print("note: classifier.bn.* is the official head's BatchNorm, unused in its forward")
    return load_matching(model, source, path, EXPECTED_WEIGHTS, _is_backbone_key,
                         adapt=_squeeze_row)


def _squeeze_row(key, tensor, expected):
    """Some conversions of the ImageNet file store BN tensors as [1, C]."""
    if tensor.dim() == 2 and tensor.shape[0] == 1 and tensor.shape[1:] == expected:
        return tensor.squeeze(0)
    return tensor


def _is_backbone_key(key):
    return not key.startswith('classifier.') and not key.endswith('num_batches_tracked')


def BN_Inception(data='cub', dim=512, pretrained=None, freeze_bn=True):
    """The registry's constructor: `pretrained` is None (random init) or a weights file path."""
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f'pretrained must be None or the path of a weights file, '
                        f'not {pretrained!r}')
    model = BNInception(data=data, dim=dim, freeze_bn=freeze_bn)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model
