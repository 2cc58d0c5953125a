"""--amp: bf16 autocast on the CPU. The network runs in bf16, the meta step in float32: each
checked where it happens (the dtypes inside the network), not only by its results."""
import torch

import losses
import models
from models.meta_layers import meta_gradient, normalize_weights
from models.precision import MixedPrecision
from tiny_network import loss_closures


def setup():
    torch.manual_seed(0)
    model = models.create('BN_Inception', dim=64)
    x = torch.randn(12, 3, 64, 64) * 50
    y = torch.arange(12) // 3
    x_val, y_val = torch.randn(4, 3, 64, 64) * 50, torch.tensor([0, 1, 2, 5])
    with torch.no_grad():
        memory = MixedPrecision(model)(torch.randn(20, 3, 64, 64) * 50)
    return model, x, y, x_val, y_val, memory, torch.arange(20) % 6


def conv_output_dtypes(model):
    """Records the dtype of every convolution's output while the hooks are installed, and
    whether autocast was on."""
    seen = []

    def hook(module, inputs, output):
        seen.append((output.dtype, torch.is_autocast_enabled(output.device.type)))
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    return seen, handles


def test_bf16_runs_the_network_in_bf16_and_returns_float32_embeddings_close_to_float32():
    model, x, *_ = setup()
    seen, handles = conv_output_dtypes(model)
    with torch.no_grad():
        half = MixedPrecision(model, 'bf16')(x)
        assert seen and set(seen) == {(torch.bfloat16, True)}
        seen.clear()
        full = MixedPrecision(model)(x)
        assert set(seen) == {(torch.float32, False)}
    for handle in handles:
        handle.remove()
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert not torch.equal(half, full)  # really computed in bf16
    # bf16 keeps ~3 significant digits through ~30 layers: embeddings agree to a few percent
    assert ((half - full).norm(dim=1) / full.norm(dim=1)).max() < 0.1


def test_meta_step_under_bf16_runs_in_float32():
    """The meta step leaves autocast (models/meta_layers.py): every convolution of it runs in
    float32 with autocast off, and for the same mined pairs the weights equal float32's to
    1e-5 (weights in [0, 1])."""
    model, x, y, x_val, y_val, memory, memory_labels = setup()
    crit_s, crit_w, crit_g = (losses.create(p + 'MS', margin=0.1) for p in 'SWG')
    full, half = MixedPrecision(model), MixedPrecision(model, 'bf16')
    masks = crit_s(half(x).detach(), y)
    assert (masks[0] | masks[1]).any()
    closures = loss_closures(crit_w, crit_g, y, *masks, y_val, memory, memory_labels)
    for method in ('jvp', 'exact'):
        reference = normalize_weights(
            meta_gradient(full, x, x_val, *closures, 1e-4, method=method)[0])
        emb = half(x)
        seen, handles = conv_output_dtypes(model)
        under_amp = normalize_weights(
            meta_gradient(half, x, x_val, *closures, 1e-4, method=method, emb=emb)[0])
        for handle in handles:
            handle.remove()
        assert seen and set(seen) == {(torch.float32, False)}
        assert under_amp.dtype == torch.float32
        assert (under_amp - reference).abs().max() < 1e-5
