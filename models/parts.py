"""Pieces the ResNet-50 and ViT-S/16 embedders share: the input conversion from this project's
Caffe convention to torchvision's / timm's, and the reading of weight files.

The data pipeline (DataSet/transforms.py) produces what BN-Inception's Caffe weights expect:
BGR, 0..255, minus the mean (104, 117, 128). The torchvision ResNet-50 and the DeiT / DINO ViT-S
weights expect RGB in 0..1, normalised with the ImageNet mean and standard deviation. Rather
than a second pipeline per network, these networks convert their input first: one flip of the
channels and one per-channel affine map, exact and cheap, so every loader, the GPU pipeline and
every checkpoint stay as they are.
"""
import os
import pickle
import warnings
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from DataSet.transforms import BGR_MEAN
from common.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, of images in 0..1
IMAGENET_STD = (0.229, 0.224, 0.225)


class CaffeToImageNet(nn.Module):
    """[B, 3, H, W] BGR 0..255 minus the Caffe mean -> RGB normalised with `mean` / `std`.

    rgb01 = (bgr.flip + caffe_mean) / 255 and out = (rgb01 - mean) / std, i.e. per channel
    out = bgr.flip * scale + shift. The constants are non-persistent buffers: they follow
    .to() / .double() but are not in state_dict (weight files stay the networks' own)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        caffe_rgb = torch.tensor(BGR_MEAN[::-1], dtype=torch.float64)
        mean, std = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
        self.register_buffer('scale', (1 / (255 * std)).float().view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('shift', ((caffe_rgb / 255 - mean) / std).float().view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, bgr):
        return bgr.flip(1) * self.scale + self.shift


def global_pool(feature_map, pooling):
    """[B, C, h, w] -> [B, C]: max pooling, plus average pooling for 'max+avg' (the data set's
    spec says which: DataSet/specs.py)."""
    pooled = F.adaptive_max_pool2d(feature_map, 1)
    if pooling == 'max+avg':
        pooled = pooled + F.adaptive_avg_pool2d(feature_map, 1)
    return pooled.flatten(1)


def embed(features, classifier):
    """The embedding head on the pooled features; dim=0 (no head): the features themselves."""
    return features if classifier is None else classifier(features)


def check_pretrained_argument(pretrained):
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f'pretrained must be None or the path of a weights file, '
                        f'not {pretrained!r}')


def warn_missing(path):
    """Same behaviour as BN-Inception's loader for a missing file (the caller, utils/build.py
    via models.pretrained.resolve_pretrained, refuses it first on the real data sets)."""
    message = (f'WARNING: pretrained weights file {path} not found: the backbone starts from '
               'RANDOM initialisation')
    print(message)
    warnings.warn(message, stacklevel=3)


def read_state_dict(path, expected, loaded=None):
    """The state dict of tensors inside `path`: a bare state dict, or one under 'model' (this
    project's checkpoints, DeiT's files) or 'state_dict'; DataParallel's `module.` removed.
    `expected` describes the right file for the error messages. `loaded`: the file's contents
    when the caller has read it already (it is not read again)."""
    checkpoint = read_file(path, expected) if loaded is None else loaded
    if isinstance(checkpoint, Mapping):
        for key in ('model', 'state_dict'):
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if (not isinstance(checkpoint, Mapping) or not checkpoint
            or not all(torch.is_tensor(value) for value in checkpoint.values())):
        raise InputError(f'{path} is not a recognisable checkpoint: expected a state dict of '
                         f'tensors, or one under "model" or "state_dict". Expected {expected}.')
    state = {}
    for key, value in checkpoint.items():
        while key.startswith('module.'):
            key = key[len('module.'):]
        state[key] = value
    return state


def read_file(path, expected):
    """torch.load of a weights file or checkpoint; InputError when it cannot be read."""
    try:
        try:
            return torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError:
            # Our own checkpoints also hold the options and RNG states, which the restricted
            # loader refuses; such a file is one the user wrote, so read it fully.
            return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as err:  # any failure to read means: not a checkpoint we can use
        raise InputError(f'{path} is not a readable PyTorch file ({type(err).__name__}: '
                         f'{err}). Expected {expected}.') from err


def load_matching(model, source, path, expected, is_required, adapt=None):
    """Copies into `model` the tensors of `source` (already renamed to the model's keys).

    is_required(key): the model keys the file must hold (the backbone), InputError otherwise.
    adapt(key, tensor, target_shape) may reshape a tensor (e.g. resample position embeddings);
    any remaining shape mismatch is an InputError naming the key (and --dim for the head).
    Prints what was loaded, ignored and left at initialisation, as BN-Inception's loader does.
    """
    target = model.state_dict()
    missing = [key for key in target if is_required(key) and key not in source]
    if missing:
        required = sum(1 for key in target if is_required(key))
        raise InputError(f'{path} does not hold {expected}: {len(missing)} of {required} '
                         f'backbone tensors are missing (e.g. {", ".join(missing[:3])}).')
    matched, ignored = {}, []
    for key, tensor in source.items():
        if key not in target:
            ignored.append(key)
            continue
        if adapt is not None:
            tensor = adapt(key, tensor, target[key].shape)
        if tensor.shape != target[key].shape:
            message = (f'{path}: shape mismatch for {key}: the model expects '
                       f'{tuple(target[key].shape)}, the file has {tuple(tensor.shape)}')
            if key.startswith('classifier.linear.'):
                message += (f'. The checkpoint was trained with embedding size '
                            f'{tensor.shape[0]}: --dim must match it (--dim {tensor.shape[0]})')
            raise InputError(message)
        matched[key] = tensor
    model.load_state_dict(matched, strict=False)
    message = f'loaded {len(matched)}/{len(source)} tensors from {path}'
    if ignored:
        message += f'; ignored: {summarise(ignored)}'
    kept = [key for key in target if key not in matched and not key.endswith('num_batches_tracked')]
    if kept:
        message += f'; left at initialisation: {summarise(kept)}'
    print(message)
    return model


def summarise(keys, limit=6):
    shown = ', '.join(keys[:limit])
    return shown if len(keys) <= limit else f'{shown} and {len(keys) - limit} more'
