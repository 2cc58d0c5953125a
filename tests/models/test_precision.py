"""--amp: bf16 autocast on the CPU. The network runs in bf16, the meta step in float32."""
import torch

import losses
import models
from models.meta_layers import meta_gradient, normalize_weights
from models.precision import MixedPrecision


def setup():
    torch.manual_seed(0)
    model = models.create('BN_Inception', dim=64)
    x = torch.randn(12, 3, 64, 64) * 50
    y = torch.arange(12) // 3
    x_val, y_val = torch.randn(4, 3, 64, 64) * 50, torch.tensor([0, 1, 2, 5])
    with torch.no_grad():
        memory = MixedPrecision(model)(torch.randn(20, 3, 64, 64) * 50)
    return model, x, y, x_val, y_val, memory, torch.arange(20) % 6


def test_bf16_embeddings_are_float32_and_close():
    model, x, *_ = setup()
    with torch.no_grad():
        full, half = MixedPrecision(model)(x), MixedPrecision(model, 'bf16')(x)
    assert half.dtype == torch.float32
    # bf16 keeps ~3 significant digits through ~30 layers: embeddings agree to a few percent
    assert ((half - full).norm(dim=1) / full.norm(dim=1)).max() < 0.1


def test_pair_weights_under_bf16_autocast_match_float32():
    """Tolerance: 1e-5 absolute on weights in [0, 1] for the same mined pairs (the meta step
    runs in float32 whatever --amp says); the mined pairs themselves come from the bf16
    embeddings and agree on at least 90% of the pairs."""
    model, x, y, x_val, y_val, memory, memory_labels = setup()
    crit_s, crit_w, crit_g = (losses.create(p + 'MS', margin=0.1) for p in 'SWG')
    full, half = MixedPrecision(model), MixedPrecision(model, 'bf16')
    masks = crit_s(full(x).detach(), y)
    half_masks = crit_s(half(x).detach(), y)
    agree = ((masks[0] | masks[1]) == (half_masks[0] | half_masks[1])).float().mean()
    assert agree >= 0.9
    for method in ('jvp', 'exact'):
        reference = normalize_weights(meta_gradient(
            full, x, y, *masks, x_val, y_val, memory, memory_labels, crit_w, crit_g, 1e-4,
            method=method))
        emb = half(x)
        under_amp = normalize_weights(meta_gradient(
            half, x, y, *masks, x_val, y_val, memory, memory_labels, crit_w, crit_g, 1e-4,
            method=method, emb=emb))
        assert under_amp.dtype == torch.float32
        assert (under_amp - reference).abs().max() < 1e-5
