"""Image transforms in the BN-Inception (Caffe) convention.

The ImageNet weights of BN-Inception were converted from Caffe: they expect BGR channel order,
pixel values in 0..255 and the per-channel mean (B, G, R) = (104, 117, 128) subtracted, with no
division by a standard deviation. A pixel (r, g, b) therefore becomes (b - 104, g - 117, r - 128).
"""
import torch
from torchvision import transforms as T

BGR_MEAN = (104.0, 117.0, 128.0)


class RGBToBGR255(torch.nn.Module):
    """[3, H, W] RGB tensor in 0..1 -> BGR tensor in 0..255 with the Caffe mean subtracted."""

    def forward(self, rgb):
        bgr = rgb.flip(0) * 255.0
        mean = torch.tensor(BGR_MEAN, dtype=bgr.dtype).view(3, 1, 1)
        return bgr - mean


def train_transform(width=227, origin_width=256, ratio=0.16):
    """Resize the shorter side to origin_width, random-resized crop of width x width covering
    `ratio`..100% of the area, random horizontal flip."""
    return T.Compose([
        T.Resize(origin_width),
        T.RandomResizedCrop(width, scale=(ratio, 1.0)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        RGBToBGR255(),
    ])


def eval_transform(width=227, origin_width=256):
    """Resize the shorter side to origin_width, then a centre crop of width x width."""
    return T.Compose([
        T.Resize(origin_width),
        T.CenterCrop(width),
        T.ToTensor(),
        RGBToBGR255(),
    ])
