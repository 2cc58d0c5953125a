"""Speed wrappers around an embedding network: autocast and channels-last memory format.

`MixedPrecision(model, amp='bf16', channels_last=True)` runs the network under autocast and
hands back float32 embeddings, so every loss, the pair weights and the meta-gradient are
computed in float32 outside autocast. It is a module, so `torch.func.functional_call` and
forward-mode products see through it (its parameters are the inner model's, prefixed `model.`).
With channels_last it feeds the network channels-last images; the network's own weights are
converted once by `to_channels_last(model)` (before any DistributedDataParallel wrapping).
"""
import torch
from torch import nn

AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


class MixedPrecision(nn.Module):

    def __init__(self, model, amp='off', channels_last=False):
        super().__init__()
        if amp not in AMP_DTYPES:
            raise ValueError(f'--amp {amp!r}: choose one of {", ".join(AMP_DTYPES)}')
        self.model = model
        self.amp_dtype = AMP_DTYPES[amp]
        self.channels_last = channels_last

    @property
    def full_precision(self):
        """The same network (same parameters, same names) without autocast, for the meta step
        (which also needs it because autocast does not carry forward-mode tangents through its
        casts: seen on the CPU)."""
        return MixedPrecision(self.model, 'off', self.channels_last)

    def forward(self, images):
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype is not None):
            emb = self.model(images)
        return emb.float()


def to_channels_last(model):
    return model.to(memory_format=torch.channels_last)
