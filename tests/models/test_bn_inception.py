"""BN-Inception backbone and embedding head: shapes, pooling, block structure, frozen BN,
loading of ImageNet / official / own checkpoints, and torch.func transforms."""
import argparse
import copy
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.func import functional_call, jvp

import models
from models.BN_Inception import BNInception, Embedding


def make_model(seed=0, **kwargs):
    """A model whose BN layers hold random statistics and affine parameters, so that
    comparisons also exercise the BatchNorm arithmetic (a fresh BN is the identity)."""
    torch.manual_seed(seed)
    model = BNInception(**kwargs)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return model.eval()


def images(batch, width, seed=1):
    # BGR 0-255 minus mean: values of a few tens
    return torch.randn(batch, 3, width, width, generator=torch.Generator().manual_seed(seed)) * 50


def bn_modules(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


# ---- shapes and pooling ---------------------------------------------------------------------

@pytest.mark.parametrize('width, map_size', [(227, 7), (64, 2)])
def test_output_shapes_and_unit_norm(width, map_size):
    model = make_model(dim=32)
    x = images(2, width)
    with torch.no_grad():
        assert model.features(x).shape == (2, 1024, map_size, map_size)
        emb = model(x)
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_dim_zero_returns_pooled_features():
    model = make_model(dim=0)
    assert model.classifier is None
    x = images(2, 64)
    with torch.no_grad():
        out = model(x)
        expected = model.features(x).amax(dim=(2, 3))
    assert out.shape == (2, 1024)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize('data', ['cub', 'car', 'product'])
def test_pooling_per_dataset(data):
    model = make_model(data=data, dim=16)
    x = images(2, 64)
    with torch.no_grad():
        feature_map = model.features(x)
        pooled = feature_map.amax(dim=(2, 3))
        if data == 'product':
            pooled = pooled + feature_map.mean(dim=(2, 3))
        linear = model.classifier.linear
        expected = F.normalize(pooled @ linear.weight.T + linear.bias, dim=1)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_odd_reduction_input_gives_clear_error():
    model = make_model(dim=16)
    with pytest.raises(ValueError, match='width'):
        model.features(images(1, 80))


# ---- block structure against a hand-written reference -------------------------------------

def ref_conv_bn_relu(sd, name, x, stride=1):
    weight = sd[f'{name}.weight']
    y = F.conv2d(x, weight, sd[f'{name}.bias'], stride=stride, padding=weight.shape[-1] // 2)
    y = F.batch_norm(y, sd[f'{name}_bn.running_mean'], sd[f'{name}_bn.running_var'],
                     sd[f'{name}_bn.weight'], sd[f'{name}_bn.bias'], training=False, eps=1e-5)
    return F.relu(y)


def ref_stem(sd, x):
    x = ref_conv_bn_relu(sd, 'conv1_7x7_s2', x, stride=2)
    x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
    x = ref_conv_bn_relu(sd, 'conv2_3x3_reduce', x)
    x = ref_conv_bn_relu(sd, 'conv2_3x3', x)
    return F.max_pool2d(x, 3, stride=2, ceil_mode=True)


def ref_inception_3a(sd, x):
    b1 = ref_conv_bn_relu(sd, 'inception_3a_1x1', x)
    b2 = ref_conv_bn_relu(sd, 'inception_3a_3x3', ref_conv_bn_relu(sd, 'inception_3a_3x3_reduce', x))
    b3 = ref_conv_bn_relu(sd, 'inception_3a_double_3x3_reduce', x)
    b3 = ref_conv_bn_relu(sd, 'inception_3a_double_3x3_1', b3)
    b3 = ref_conv_bn_relu(sd, 'inception_3a_double_3x3_2', b3)
    pooled = F.avg_pool2d(x, 3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
    b4 = ref_conv_bn_relu(sd, 'inception_3a_pool_proj', pooled)
    return torch.cat([b1, b2, b3, b4], dim=1)


def ref_inception_3c(sd, x):
    b2 = ref_conv_bn_relu(sd, 'inception_3c_3x3_reduce', x)
    b2 = ref_conv_bn_relu(sd, 'inception_3c_3x3', b2, stride=2)
    b3 = ref_conv_bn_relu(sd, 'inception_3c_double_3x3_reduce', x)
    b3 = ref_conv_bn_relu(sd, 'inception_3c_double_3x3_1', b3)
    b3 = ref_conv_bn_relu(sd, 'inception_3c_double_3x3_2', b3, stride=2)
    b4 = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
    return torch.cat([b2, b3, b4], dim=1)


def ref_inception_5b(sd, x):
    b1 = ref_conv_bn_relu(sd, 'inception_5b_1x1', x)
    b2 = ref_conv_bn_relu(sd, 'inception_5b_3x3', ref_conv_bn_relu(sd, 'inception_5b_3x3_reduce', x))
    b3 = ref_conv_bn_relu(sd, 'inception_5b_double_3x3_reduce', x)
    b3 = ref_conv_bn_relu(sd, 'inception_5b_double_3x3_1', b3)
    b3 = ref_conv_bn_relu(sd, 'inception_5b_double_3x3_2', b3)
    pooled = F.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
    b4 = ref_conv_bn_relu(sd, 'inception_5b_pool_proj', pooled)
    return torch.cat([b1, b2, b3, b4], dim=1)


@pytest.mark.parametrize('part, reference, in_shape, out_shape', [
    ('stem', ref_stem, (2, 3, 64, 64), (2, 192, 8, 8)),
    ('3a', ref_inception_3a, (2, 192, 8, 8), (2, 256, 8, 8)),
    ('3c', ref_inception_3c, (2, 320, 8, 8), (2, 576, 4, 4)),
    ('5b', ref_inception_5b, (2, 1024, 4, 4), (2, 1024, 4, 4)),
])
def test_block_matches_reference(part, reference, in_shape, out_shape):
    model = make_model(dim=16)
    x = torch.randn(in_shape, generator=torch.Generator().manual_seed(2))
    if part != 'stem':
        x = x.relu()  # blocks read rectified maps
    with torch.no_grad():
        out = model.stem(x) if part == 'stem' else model.inception_block(part, x)
        expected = reference(model.state_dict(), x)
    assert out.shape == out_shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


# ---- frozen BatchNorm -----------------------------------------------------------------------

def test_frozen_bn_stays_in_eval_after_train():
    model = make_model(dim=16)
    model.train()
    assert model.training
    assert all(not bn.training for bn in bn_modules(model))
    assert all(bn.weight.requires_grad and bn.bias.requires_grad for bn in bn_modules(model))


def test_frozen_bn_training_step_keeps_running_stats():
    model = make_model(dim=16).train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    emb = model(images(4, 64))
    loss = (emb @ emb.T).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for name in before:
        if 'running_' in name or 'num_batches_tracked' in name:
            assert torch.equal(before[name], after[name]), name
    changed = [not torch.equal(before[f'{n}.weight'], after[f'{n}.weight'])
               for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(changed)


def test_unfrozen_bn_trains():
    model = make_model(dim=16, freeze_bn=False).train()
    assert all(bn.training for bn in bn_modules(model))
    mean_before = model.conv1_7x7_s2_bn.running_mean.clone()
    model(images(2, 64))
    assert not torch.equal(mean_before, model.conv1_7x7_s2_bn.running_mean)


# ---- loading --------------------------------------------------------------------------------

def imagenet_state_dict(model):
    """The layout of bn_inception-52deb4733.pth: backbone tensors under their Caffe names, the
    ImageNet classifier as last_linear.*, no num_batches_tracked, some BN tensors as [1, C]."""
    state = {k: v.clone() for k, v in model.state_dict().items()
             if not k.startswith('classifier.') and not k.endswith('num_batches_tracked')}
    for key in list(state):
        if key.startswith(('conv1_7x7_s2_bn.', 'inception_3a_1x1_bn.')):
            state[key] = state[key].unsqueeze(0)
    state['last_linear.weight'] = torch.randn(1000, 1024)
    state['last_linear.bias'] = torch.randn(1000)
    return state


def test_load_imagenet_file_reproduces_features(tmp_path, capsys):
    source = make_model(seed=0, dim=16)
    state = imagenet_state_dict(source)
    assert state['conv1_7x7_s2_bn.running_var'].shape == (1, 64)
    path = tmp_path / 'bn_inception-52deb4733.pth'
    torch.save(state, path)

    torch.manual_seed(5)
    fresh = BNInception(dim=16).eval()
    x = images(2, 64)
    with torch.no_grad():
        assert not torch.equal(fresh.features(x), source.features(x))
        models.load_pretrained(fresh, str(path))
        assert torch.equal(fresh.features(x), source.features(x))
    printed = capsys.readouterr().out
    assert f'loaded {len(state) - 2}/{len(state)} tensors' in printed
    assert 'last_linear.weight' in printed


def test_load_official_checkpoint_reproduces_forward(tmp_path, capsys):
    source = make_model(seed=0, dim=16)
    state = {f'module.{k}': v for k, v in source.state_dict().items()}
    for name, value in nn.BatchNorm2d(1024).state_dict().items():  # the official head's BN
        state[f'module.classifier.bn.{name}'] = value
    path = tmp_path / 'ckp_ep10.pth.tar'
    torch.save({'state_dict': state, 'epoch': 10}, path)

    model = models.create('BN_Inception', dim=16, pretrained=str(path)).eval()
    x = images(2, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    assert 'classifier.bn.weight' in capsys.readouterr().out


def test_load_own_checkpoint_reproduces_forward(tmp_path):
    source = make_model(seed=0, data='product', dim=16)
    path = tmp_path / 'ckp_ep2.pth.tar'
    torch.save({'model': source.state_dict(), 'epoch': 2,
                'args': argparse.Namespace(dim=16)}, path)
    model = models.create('BN-Inception', data='product', dim=16, pretrained=str(path)).eval()
    x = images(2, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_other_network_raises_naming_file(tmp_path):
    path = tmp_path / 'resnet18.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + '.*BN-Inception'):
        models.create('BN_Inception', dim=16, pretrained=str(path))


@pytest.mark.parametrize('content', ['a text file\n', {'epoch': 3}])
def test_unrecognisable_file_raises_naming_file(tmp_path, content):
    path = tmp_path / 'weights.pth'
    if isinstance(content, str):
        path.write_text(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        models.create('BN_Inception', dim=16, pretrained=str(path))


def test_embedding_size_mismatch_names_dim_flag(tmp_path):
    path = tmp_path / 'ckp.pth.tar'
    torch.save({'state_dict': make_model(dim=16).state_dict(), 'epoch': 1}, path)
    with pytest.raises(ValueError, match='classifier.linear.weight.*--dim'):
        models.create('BN_Inception', dim=32, pretrained=str(path))


def test_missing_file_warns_and_keeps_random_init(tmp_path):
    path = tmp_path / 'no_such_weights.pth'
    with pytest.warns(UserWarning, match='RANDOM'):
        model = models.create('BN_Inception', dim=16, pretrained=str(path))
    with torch.no_grad():
        assert model.eval()(images(2, 64)).shape == (2, 16)


# ---- registry -------------------------------------------------------------------------------

def test_registry_names():
    assert isinstance(models.create('BN-Inception', dim=16), BNInception)
    with pytest.raises(ValueError, match='BN_Inception.*ResNet50'):
        models.create('VGG16')


# ---- torch.func -----------------------------------------------------------------------------

def test_functional_call_uses_given_parameters():
    model = make_model(dim=16)
    other = copy.deepcopy(model)  # same buffers, other parameters
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.1).add_(0.01)
    x = images(2, 64)
    own_params = {k: v.clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        out = functional_call(model, dict(other.named_parameters()), (x,))
        torch.testing.assert_close(out, other(x), rtol=0, atol=0)
    assert all(torch.equal(p, own_params[k]) for k, p in model.named_parameters())


def test_grad_transform_matches_backward():
    model = make_model(dim=16)
    x = images(2, 64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    grads = torch.func.grad(lambda p: functional_call(model, p, (x,))[0, 0])(params)
    model(x)[0, 0].backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6)


# torch's own forward-AD decompositions use torch.jit.script on first use
@pytest.mark.filterwarnings('ignore:.*torch.jit.script.*:FutureWarning')
def test_jvp_matches_finite_difference():
    model = make_model(dim=16).double()
    x = images(2, 64).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    torch.manual_seed(4)
    tangent = {k: torch.randn_like(v) * 1e-2 for k, v in params.items()}

    def embed(p):
        return functional_call(model, {**p, **buffers}, (x,))

    out, out_dot = jvp(embed, (params,), (tangent,))
    eps = 1e-6
    with torch.no_grad():
        plus = embed({k: v + eps * tangent[k] for k, v in params.items()})
        minus = embed({k: v - eps * tangent[k] for k, v in params.items()})
    torch.testing.assert_close(out, embed(params))
    torch.testing.assert_close(out_dot, (plus - minus) / (2 * eps), rtol=1e-4, atol=1e-6)


def test_embeddings_are_unit_float32_under_fp16_autocast():
    torch.manual_seed(0)
    head = Embedding(1024, 512)
    pooled = torch.randn(4, 1024) * 30  # squared norms far beyond float16's range
    with torch.autocast('cpu', dtype=torch.float16):
        emb = head(pooled)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
