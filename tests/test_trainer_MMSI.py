"""The MMSI step's wiring: what it passes to the meta step under each --amp."""
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

import losses
import trainer_MMSI
from utils.distributed import Distributed
from utils.semi_global import SemiGlobalDictionary


def fake_run(amp):
    """What mmsi_step reads of a run, with a network that only normalises its input."""
    def embed(images):
        return F.normalize(images.flatten(1), dim=1)
    dictionary = SemiGlobalDictionary(d_size=2, dim=4)
    dictionary.push(F.normalize(torch.randn(6, 4), dim=1), torch.arange(6) % 3)
    val_batch = (torch.randn(3, 4), torch.arange(3))
    return SimpleNamespace(
        args=SimpleNamespace(amp=amp, meta_lr=0.1, meta_grad='jvp'), dist=Distributed(),
        device=torch.device('cpu'), prepare=lambda images, to: images.to(to),
        train_embed=embed, local_embed=embed, dictionary=dictionary, dict_min_classes=0,
        criteria=losses.forms_of('MS', margin=0.5), next_val_batch=lambda: val_batch)


@pytest.mark.parametrize('amp', ['off', 'bf16', 'fp16'])
def test_only_fp16_scales_the_validation_loss(amp, monkeypatch):
    passed = []

    def meta_gradient(*args, **kwargs):
        passed.append(kwargs['val_loss_scale'])
        return torch.zeros(6, 6), torch.zeros(())  # L_G = 0: the step is skipped
    monkeypatch.setattr(trainer_MMSI, 'meta_gradient', meta_gradient)
    images, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    stats = trainer_MMSI.mmsi_step(fake_run(amp), images, labels)
    assert stats == {'skipped': 'zero_val_loss'}
    assert passed == [1024.0 if amp == 'fp16' else 1.0]
