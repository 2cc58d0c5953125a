"""ViT-S/16 (Dosovitskiy et al. 2021; the DeiT-S shape: 384 wide, 12 blocks, 6 heads) with the
MMSI embedding head, as `models.create('ViT_S16', ...)`.

The backbone is timm's VisionTransformer of `vit_small_patch16_224`, kept as the submodule
`backbone`: weight files in timm's key format (DeiT-S `deit_small_patch16_224-cd65a155.pth`,
DINO `dino_deitsmall16_pretrain.pth`, a state dict saved from timm) load with a `backbone.`
prefix added; their classification head, if any, is ignored. Then: class token (after the
final LayerNorm) -> embedding `classifier` (Linear, then L2 normalisation in float32 or wider).

Choices, each forced by MMSI's meta step (models/meta_layers.py):
- Attention is timm's explicit path (q k^T, softmax, v), not F.scaled_dot_product_attention:
  PyTorch's fused kernels have neither a forward-mode derivative (the 'jvp' meta-gradient) nor
  a second derivative (the 'exact' one); on the CPU both raise NotImplementedError for
  `_scaled_dot_product_flash_attention_for_cpu`. `fused_attention=True` restores the fused
  kernels for runs without MMSI (about 20% faster forward on the CPU at 224 px); with it the meta
  step fails loudly, never silently.
- Dropout, attention dropout and drop-path are 0, so that a forward is deterministic: the MMSI
  step reuses the training batch's embeddings for the real update.
- No BatchNorm (LayerNorm normalises each token on its own): `freeze_bn` does not apply and is
  accepted only so that every network takes the same arguments.

Width: the patch grid must be whole. The network is built for a grid of width // 16 patches
(227 -> 14, as ImageNet's 224 -> 14, so the pretrained position embeddings are used as they are)
and centre-crops its input to a multiple of 16 (227 -> 224: 1 pixel off the top and left, 2
off the bottom and right). Dropping 3 pixels was preferred to timm's padding (227 -> 240, a 15 x
15 grid of resampled position embeddings, one patch row partly black). A file whose grid
differs (e.g. 14 x 14 weights at width 64) has its position embeddings resampled once when
loaded (timm's resample_abs_pos_embed, bicubic). Other input sizes still run (timm's
dynamic_img_size resamples on the fly), but the width given here is the one to train at.
"""
import os

import timm
from timm.layers import resample_abs_pos_embed
from torch import nn

from models.BN_Inception import embedding_head
from models.parts import (CaffeToImageNet, check_pretrained_argument, embed, load_matching,
                           read_state_dict, warn_missing)

PATCH = 16
FEATURE_DIM = 384
MIN_WIDTH = PATCH
TIMM_ARCH = 'vit_small_patch16_224'
EXPECTED_WEIGHTS = ('ViT-S/16 weights in timm\'s format (DeiT-S '
                    'deit_small_patch16_224-cd65a155.pth, DINO dino_deitsmall16_pretrain.pth, '
                    f'a state dict saved from timm\'s {TIMM_ARCH}) or a ViT-S/16 checkpoint '
                    'of this project')


class ViTS16(nn.Module):
    """ViT-S/16 backbone + class token + embedding; dim=0 returns the 384-d class token
    (not normalised), as BN-Inception returns its pooled features."""

    def __init__(self, data='cub', dim=512, freeze_bn=True, width=227, fused_attention=False):
        super().__init__()
        del data, freeze_bn  # one pooling (the class token), no BatchNorm: see the module doc
        if width < MIN_WIDTH:
            raise ValueError(f'ViT-S/16 needs a width of at least {MIN_WIDTH} pixels, got {width}')
        self.dim = dim
        self.image_size = width // PATCH * PATCH
        self.input_norm = CaffeToImageNet()  # DeiT and DINO use the ImageNet mean and std
        self.backbone = timm.create_model(
            TIMM_ARCH, pretrained=False, num_classes=0, img_size=self.image_size,
            dynamic_img_size=True, drop_rate=0.0, pos_drop_rate=0.0, patch_drop_rate=0.0,
            proj_drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)
        self.set_fused_attention(fused_attention)
        self.classifier = embedding_head(FEATURE_DIM, dim)

    def set_fused_attention(self, fused):
        for block in self.backbone.blocks:
            block.attn.fused_attn = bool(fused)

    def crop(self, x):
        """Centre crop to a whole number of patches (a no-op when the width is a multiple)."""
        height, width = x.shape[-2:]
        top, left = (height % PATCH) // 2, (width % PATCH) // 2
        return x[..., top:top + height // PATCH * PATCH, left:left + width // PATCH * PATCH]

    def features(self, x):
        """[B, 3, H, W] Caffe-convention images -> [B, 384] class token after the final norm."""
        tokens = self.backbone.forward_features(self.crop(self.input_norm(x)))
        return self.backbone.forward_head(tokens, pre_logits=True)

    def forward(self, x):
        return embed(self.features(x), self.classifier)


def supported_width(width):
    return width >= MIN_WIDTH


def _is_backbone_key(key):
    return key.startswith('backbone.')


def to_model_keys(source, model):
    """timm's keys (cls_token, blocks.0.attn.qkv.weight, ...) -> this module's (backbone.*);
    keys already prefixed (our checkpoints) are kept, and so are those the backbone lacks (a
    classification head, DeiT's distillation token), for the loader to report as ignored
    under the file's own names."""
    backbone_keys = set(model.backbone.state_dict())
    return {f'backbone.{key}' if key in backbone_keys else key: value
            for key, value in source.items()}


def _resample_position_embeddings(key, tensor, target_shape):
    if key == 'backbone.pos_embed' and tensor.shape != target_shape and tensor.dim() == 3:
        side = int(round((target_shape[1] - 1) ** 0.5))
        tensor = resample_abs_pos_embed(tensor, new_size=[side, side], num_prefix_tokens=1)
    return tensor


def load_pretrained(model, path, loaded=None):
    """Loads a timm-format ViT-S/16 file or a checkpoint of this project into `model` (in place).
    A missing file leaves the random initialisation with a loud warning; a file of another
    network, or with another embedding size, raises InputError."""
    if loaded is None and not os.path.exists(path):
        warn_missing(path)
        return model
    source = to_model_keys(read_state_dict(path, EXPECTED_WEIGHTS, loaded), model)
    return load_matching(model, source, path, EXPECTED_WEIGHTS, _is_backbone_key,
                         adapt=_resample_position_embeddings)


def create(data='cub', dim=512, pretrained=None, freeze_bn=True, width=227,
           fused_attention=False):
    """The registry's constructor: `pretrained` is None (random init) or a weights file path."""
    check_pretrained_argument(pretrained)
    model = ViTS16(data=data, dim=dim, freeze_bn=freeze_bn, width=width,
                   fused_attention=fused_attention)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


__all__ = ['ViTS16', 'create', 'load_pretrained', 'supported_width', 'FEATURE_DIM']
