"""ViT-S/16 embedder: shapes, the crop to whole patches, the explicit attention MMSI needs,
no dropout, loading timm-format files and own checkpoints, and the meta-gradient through it."""
import copy
import re

import pytest
import timm
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

import models
from models.BN_Inception_MetaAda import functional_forward
from models.parts import CaffeToImageNet
from backbone_problems import images, meta_gradients, mmsi_problem
from models.vit import ViTS16



@pytest.fixture(scope='module')
def vit64():
    """One randomly initialised model (timm's init takes about a second); tests copy it."""
    torch.manual_seed(0)
    return ViTS16(dim=16, width=64).eval()


def timm_reference(seed=3):
    torch.manual_seed(seed)
    return timm.create_model('vit_small_patch16_224', pretrained=False).eval()  # 1000-class head


# ---- shapes, crop, pooling ---------------------------------------------------------------------

@pytest.mark.parametrize('width, grid', [(32, 2), (64, 4)])
def test_output_shapes_and_unit_norm(width, grid):
    torch.manual_seed(0)
    model = ViTS16(dim=16, width=width).eval()
    assert model.backbone.pos_embed.shape == (1, grid * grid + 1, 384)
    with torch.no_grad():
        emb = model(images(2, width))
    assert emb.shape == (2, 16) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_width_227_is_centre_cropped_to_224_with_the_imagenet_grid():
    torch.manual_seed(0)
    model = ViTS16(dim=8, width=227).eval()
    assert model.image_size == 224 and model.backbone.pos_embed.shape == (1, 197, 384)
    x = images(1, 227)
    with torch.no_grad():
        # 3 extra pixels: 1 off the top and left, 2 off the bottom and right
        torch.testing.assert_close(model(x), model(x[..., 1:225, 1:225]), rtol=0, atol=0)
        assert not torch.equal(model(x), model(x[..., :224, :224]))


def test_dim_zero_returns_the_class_token(vit64):
    model = copy.deepcopy(vit64)
    model.classifier = None
    x = images(2, 64)
    with torch.no_grad():
        tokens = model.backbone.forward_features(CaffeToImageNet()(x))
        out = model(x)
    assert out.shape == (2, 384) and models.feature_dim('ViT_S16') == 384
    torch.testing.assert_close(out, tokens[:, 0], rtol=0, atol=0)  # after the final norm
    assert models.create('ViT_S16', dim=0, width=32).classifier is None


def test_embedding_is_the_normalised_linear_map_of_the_class_token(vit64):
    x = images(2, 64)
    with torch.no_grad():
        token = vit64.features(x)
        linear = vit64.classifier.linear
        expected = F.normalize(token @ linear.weight.T + linear.bias, dim=1)
        torch.testing.assert_close(vit64(x), expected, rtol=1e-5, atol=1e-6)
    head = [name for name, _ in vit64.named_parameters() if name.startswith('classifier.')]
    assert head == ['classifier.linear.weight', 'classifier.linear.bias']


def test_no_dropout_no_drop_path_no_batchnorm_so_train_mode_is_deterministic(vit64):
    model = copy.deepcopy(vit64).train()
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.p == 0 for m in dropouts)
    assert not [m for m in model.modules() if type(m).__name__ == 'DropPath']
    assert not [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    x = images(2, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        assert torch.equal(model(x), model.eval()(x))


# ---- attention ------------------------------------------------------------------------------

def test_explicit_attention_by_default(vit64, monkeypatch):
    """The default path never calls scaled_dot_product_attention (whose fused kernels the meta
    step cannot differentiate); fused_attention=True does, with the same result."""
    x = images(2, 64)
    with torch.no_grad():
        explicit = vit64(x)
    calls = []
    original = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', counting)
    with torch.no_grad():
        vit64(x)
        assert not calls
        fused = copy.deepcopy(vit64)
        fused.set_fused_attention(True)
        torch.testing.assert_close(fused(x), explicit, rtol=1e-5, atol=1e-6)
    assert len(calls) == 12


@pytest.mark.filterwarnings('ignore:.*torch.jit.script.*:FutureWarning')
def test_fused_attention_has_no_forward_mode_derivative_on_the_cpu(vit64):
    """Why the default is the explicit path. If this starts failing, PyTorch has gained the
    derivative: revisit the note in models/vit.py."""
    model = copy.deepcopy(vit64).double()
    model.set_fused_attention(True)
    x = images(1, 32, dtype=torch.float64)
    params = dict(model.named_parameters())
    with pytest.raises(NotImplementedError, match='forward AD'), fwAD.dual_level():
        with torch.no_grad():
            dual = {name: fwAD.make_dual(p.detach(), torch.ones_like(p))
                    for name, p in params.items()}
            functional_forward(model, dual, x)


# ---- loading ---------------------------------------------------------------------------------

def test_load_timm_state_dict_equals_the_file(tmp_path, capsys):
    reference = timm_reference()
    state = reference.state_dict()
    path = tmp_path / 'vit_small_patch16_224.pth'
    torch.save(state, path)
    model = models.create('ViT_S16', dim=16, width=224, pretrained=str(path))
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith('head.'):
            assert torch.equal(loaded[f'backbone.{key}'], value), key
    assert 'ignored: head.weight, head.bias' in capsys.readouterr().out
    x = images(2, 224)
    with torch.no_grad():  # same features as timm's own forward on converted input
        expected = reference.forward_head(reference.forward_features(CaffeToImageNet()(x)),
                                          pre_logits=True)
        torch.testing.assert_close(model.features(x), expected, rtol=1e-5, atol=1e-5)


def test_deit_wrapped_file_at_another_width_resamples_position_embeddings(tmp_path):
    state = timm_reference(seed=4).state_dict()
    path = tmp_path / 'deit_small_patch16_224-cd65a155.pth'
    torch.save({'model': state, 'epoch': 299}, path)  # DeiT's own file layout
    model = models.create('ViT-S16', dim=16, width=64, pretrained=str(path))
    expected = resample_abs_pos_embed(state['pos_embed'], new_size=[4, 4], num_prefix_tokens=1)
    assert model.backbone.pos_embed.shape == (1, 17, 384)
    torch.testing.assert_close(model.backbone.pos_embed.data, expected, rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.pos_embed[0, 0], state['pos_embed'][0, 0])
    assert torch.equal(model.backbone.blocks[5].mlp.fc1.weight, state['blocks.5.mlp.fc1.weight'])


def test_own_checkpoint_reproduces_forward(tmp_path, vit64):
    path = tmp_path / 'ckp_ep1.pth.tar'
    torch.save({'model': vit64.state_dict(), 'epoch': 1}, path)
    model = models.create('ViT_S16', dim=16, width=64, pretrained=str(path)).eval()
    x = images(2, 64)
    with torch.no_grad():
        assert torch.equal(model(x), vit64(x))
    torch.manual_seed(9)
    other = ViTS16(dim=16, width=64).eval()
    models.load_pretrained(other, str(path))  # dispatch by type, as test.py calls it
    with torch.no_grad():
        assert torch.equal(other(x), vit64(x))


def test_resnet_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save(models.create('ResNet50', dim=0).state_dict(), path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + '.*ViT-S/16'):
        models.create('ViT_S16', dim=16, width=32, pretrained=str(path))


def test_registry_widths():
    assert models.canonical_name('ViT-S16') == 'ViT_S16'
    assert models.supported_width(16, 'ViT_S16') and models.supported_width(227, 'ViT-S16')
    assert not models.supported_width(15, 'ViT_S16')
    with pytest.raises(ValueError, match='--width 8: ViT_S16 needs a width of at least 16'):
        models.check_width('ViT_S16', 8)


# ---- MMSI's meta-gradient ----------------------------------------------------------------------

@pytest.mark.filterwarnings('ignore:.*torch.jit.script.*:FutureWarning')
@pytest.mark.parametrize('rule', ['Con', 'MS'])
def test_exact_and_jvp_meta_gradients_agree_in_float64(rule):
    """Full-depth ViT-S/16 at 32 px (2 x 2 patches) in float64, about 1 s per method: forward
    mode and the second derivative both pass through timm's attention, GELU and LayerNorm."""
    torch.manual_seed(1)
    net = ViTS16(dim=8, width=32).double().train()
    grads = meta_gradients(net, mmsi_problem(net, rule))
    exact, fast = grads['exact'], grads['jvp']
    assert exact.dtype == fast.dtype == torch.float64
    scale = exact.abs().max()
    assert scale > 0
    torch.testing.assert_close(fast, exact, rtol=1e-8, atol=1e-8 * scale)
