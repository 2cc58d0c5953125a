"""ResNet-50 (He et al. 2016) with the MMSI embedding head, as `models.create('ResNet50', ...)`.

The backbone is torchvision's `resnet50(weights=None)`; its layers are registered on this
module under torchvision's own names (conv1, bn1, layer1 ... layer4), so torchvision's ImageNet
file (`resnet50-0676ba61.pth`, IMAGENET1K_V1) loads with no renaming (its fc.* is ignored).
Then, as BN-Inception: the data set's global pooling (max; max + average for 'product'), the
embedding `classifier` (Linear, then L2 normalisation in float32 or wider) and frozen BatchNorm.

Inputs are the project's Caffe-convention images (DataSet/transforms.py); the network converts
them to torchvision's normalisation first (models/parts.CaffeToImageNet).
"""
import os

import torchvision
from torch import nn

from DataSet.specs import SPECS
from models.BN_Inception import embedding_head
from models.parts import (CaffeToImageNet, check_pretrained_argument, embed, global_pool,
                          load_matching, read_state_dict, warn_missing)

FEATURE_DIM = 2048  # channels of layer4
MIN_WIDTH = 32      # five stride-2 stages: 32 px is the smallest input with a 1 x 1 map

EXPECTED_WEIGHTS = ('ResNet-50 weights: torchvision\'s ImageNet file (resnet50-0676ba61.pth) or '
                    'a ResNet-50 checkpoint of this project')
# torchvision's stages, in forward order; fc and avgpool are replaced by the head below.
STAGES = ('conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4')


class ResNet50(nn.Module):
    """ResNet-50 backbone + global pooling + embedding.

    dim=0: forward returns the pooled 2048-d vector (not normalised), as BN-Inception does.
    freeze_bn=True keeps every BatchNorm layer in eval mode, also after `model.train()`; their
    affine parameters still train (the same mechanism as models/BN_Inception.py).
    """

    def __init__(self, data='cub', dim=512, freeze_bn=True):
        super().__init__()
        self.pooling = SPECS[data].pooling if data in SPECS else 'max'
        self.dim = dim
        self.freeze_bn = freeze_bn
        self.input_norm = CaffeToImageNet()
        torchvision_net = torchvision.models.resnet50(weights=None)
        for name in STAGES:
            self.add_module(name, getattr(torchvision_net, name))
        self.classifier = embedding_head(FEATURE_DIM, dim)
        self.train()  # puts the BN layers in eval mode when frozen

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def features(self, x):
        """[B, 3, H, W] Caffe-convention images -> the [B, 2048, h, w] map of layer4."""
        x = self.input_norm(x)
        for name in STAGES:
            x = getattr(self, name)(x)
        return x

    def global_pool(self, feature_map):
        return global_pool(feature_map, self.pooling)

    def forward(self, x):
        return embed(self.global_pool(self.features(x)), self.classifier)


def supported_width(width):
    return width >= MIN_WIDTH


def _is_backbone_key(key):
    return not key.startswith('classifier.') and not key.endswith('num_batches_tracked')


def load_pretrained(model, path, loaded=None):
    """Loads torchvision's ImageNet file or a checkpoint of this project into `model` (in place).

    A missing file leaves the random initialisation with a loud warning; a file that is not
    ResNet-50, or whose embedding size differs, raises InputError."""
    if loaded is None and not os.path.exists(path):
        warn_missing(path)
        return model
    source = read_state_dict(path, EXPECTED_WEIGHTS, loaded)
    return load_matching(model, source, path, EXPECTED_WEIGHTS, _is_backbone_key)


def create(data='cub', dim=512, pretrained=None, freeze_bn=True):
    """The registry's constructor: `pretrained` is None (random init) or a weights file path."""
    check_pretrained_argument(pretrained)
    model = ResNet50(data=data, dim=dim, freeze_bn=freeze_bn)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model
