"""ResNet-50 embedder: shapes, pooling, input conversion, frozen BN, loading torchvision files
and own checkpoints, the registry, and MMSI's meta-gradient through it."""
import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

import models
from DataSet.transforms import eval_transform
from models.parts import IMAGENET_MEAN, IMAGENET_STD, CaffeToImageNet
from backbone_problems import images, meta_gradients, mmsi_problem
from models.resnet import ResNet50



def make_model(seed=0, **kwargs):
    """Random BN statistics and affine parameters (a fresh BN is the identity)."""
    torch.manual_seed(seed)
    model = ResNet50(**kwargs)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return model.eval()


def bn_modules(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


# ---- shapes, pooling, input ----------------------------------------------------------------

@pytest.mark.parametrize('width, map_size', [(32, 1), (64, 2), (96, 3)])
def test_output_shapes_and_unit_norm(width, map_size):
    model = make_model(dim=16)
    x = images(2, width)
    with torch.no_grad():
        assert model.features(x).shape == (2, 2048, map_size, map_size)
        emb = model(x)
    assert emb.shape == (2, 16) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_dim_zero_returns_pooled_features_like_bn_inception():
    model = make_model(dim=0)
    assert model.classifier is None
    x = images(2, 64)
    with torch.no_grad():
        out = model(x)
        expected = model.features(x).amax(dim=(2, 3))
    assert out.shape == (2, 2048) and models.feature_dim('ResNet50') == 2048
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.allclose(out.norm(dim=1), torch.ones(2))  # not normalised


@pytest.mark.parametrize('data', ['cub', 'product', 'shop'])
def test_pooling_follows_the_data_set_spec(data):
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


def test_input_conversion_gives_torchvision_normalisation():
    """The project's pipeline (BGR, 0-255, Caffe mean) converted inside the network equals
    torchvision's ToTensor + Normalize(ImageNet mean, std) of the same picture."""
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)
    caffe = eval_transform(width=24, origin_width=24)(picture)
    expected = torchvision.transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(
        torchvision.transforms.functional.to_tensor(picture))
    torch.testing.assert_close(CaffeToImageNet()(caffe[None])[0], expected, rtol=0, atol=1e-5)
    assert 'input_norm.scale' not in make_model(dim=8).state_dict()  # weight files unchanged


def test_features_equal_torchvision_resnet50_with_the_same_weights():
    model = make_model(dim=16)
    reference = torchvision.models.resnet50(weights=None)
    reference.load_state_dict({**reference.state_dict(),
                               **{k: v for k, v in model.state_dict().items()
                                  if not k.startswith('classifier.')}})
    reference.eval()
    x = images(2, 64)
    trunk = nn.Sequential(*list(reference.children())[:-2])  # up to layer4
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), trunk(CaffeToImageNet()(x)),
                                   rtol=0, atol=1e-5)


def test_embedding_head_is_named_classifier_for_the_optimizer():
    """utils/build.build_optimizer gives parameters named classifier.* the embedding rate."""
    head = [name for name, _ in make_model(dim=16).named_parameters()
            if name.startswith('classifier.')]
    assert head == ['classifier.linear.weight', 'classifier.linear.bias']


# ---- frozen BatchNorm ------------------------------------------------------------------------

def test_frozen_bn_stays_in_eval_after_train():
    model = make_model(dim=16).train()
    assert model.training
    assert all(not bn.training for bn in bn_modules(model))
    assert all(bn.weight.requires_grad and bn.bias.requires_grad for bn in bn_modules(model))


def test_frozen_bn_training_step_keeps_running_stats():
    model = make_model(dim=16).train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    emb = model(images(4, 64))
    optimizer.zero_grad()
    (emb @ emb.T).sum().backward()
    optimizer.step()
    after = model.state_dict()
    stats = [name for name in before if 'running_' in name or 'num_batches_tracked' in name]
    assert len(stats) == 3 * len(bn_modules(model))
    for name in stats:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before['bn1.weight'], after['bn1.weight'])  # affine still trains


def test_unfrozen_bn_trains():
    model = make_model(dim=16, freeze_bn=False).train()
    assert all(bn.training for bn in bn_modules(model))
    mean_before = model.bn1.running_mean.clone()
    model(images(2, 64))
    assert not torch.equal(mean_before, model.bn1.running_mean)


# ---- loading ---------------------------------------------------------------------------------

def test_load_torchvision_file_equals_the_file(tmp_path, capsys):
    torch.manual_seed(3)
    state = torchvision.models.resnet50(weights=None).state_dict()  # with fc.*, 1000 classes
    path = tmp_path / 'resnet50-0676ba61.pth'
    torch.save(state, path)
    model = models.create('ResNet50', dim=16, pretrained=str(path))
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith('fc.'):
            assert torch.equal(loaded[key], value), key
    printed = capsys.readouterr().out
    assert f'loaded {len(state) - 2}/{len(state)} tensors' in printed
    assert 'ignored: fc.weight, fc.bias' in printed


def test_own_checkpoint_reproduces_forward(tmp_path):
    source = make_model(seed=0, data='product', dim=16)
    path = tmp_path / 'ckp_ep2.pth.tar'
    torch.save({'model': {f'module.{k}': v for k, v in source.state_dict().items()},
                'epoch': 2}, path)
    model = models.create('ResNet-50', data='product', dim=16, pretrained=str(path)).eval()
    x = images(2, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    other = make_model(seed=5, data='product', dim=16)
    models.load_pretrained(other, str(path))  # dispatch by type, as test.py calls it
    with torch.no_grad():
        assert torch.equal(other(x), source(x))


def test_bn_inception_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / 'bn_inception.pth'
    torch.save(models.create('BN_Inception', dim=0).state_dict(), path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + '.*ResNet-50'):
        models.create('ResNet50', dim=16, pretrained=str(path))


def test_embedding_size_mismatch_names_dim_flag(tmp_path):
    path = tmp_path / 'ckp.pth.tar'
    torch.save({'model': make_model(dim=16).state_dict()}, path)
    with pytest.raises(ValueError, match='classifier.linear.weight.*--dim 16'):
        models.create('ResNet50', dim=32, pretrained=str(path))


def test_missing_file_warns_and_keeps_random_init(tmp_path):
    with pytest.warns(UserWarning, match='RANDOM'):
        model = models.create('ResNet50', dim=16, pretrained=str(tmp_path / 'absent.pth'))
    assert isinstance(model, ResNet50)


# ---- registry ----------------------------------------------------------------------------------

def test_registry_names_widths_and_canonical_name():
    assert isinstance(models.create('ResNet50', data='cub', dim=8), ResNet50)
    assert models.canonical_name('ResNet-50') == models.canonical_name('ResNet50') == 'ResNet50'
    assert models.canonical_name('BN-Inception') == 'BN_Inception'
    assert models.supported_width(32, 'ResNet50') and models.supported_width(227, 'ResNet50')
    assert not models.supported_width(31, 'ResNet50')
    assert models.supported_width(80, 'ResNet50') and not models.supported_width(80)
    with pytest.raises(ValueError, match='--width 31: ResNet50 needs a width of at least 32'):
        models.check_width('ResNet-50', 31)
    models.check_width('ResNet50', 80)
    with pytest.raises(ValueError, match='--net .VGG16. is unknown'):
        models.feature_dim('VGG16')


# ---- MMSI's meta-gradient ----------------------------------------------------------------------

# torch's own forward-AD decompositions use torch.jit.script on first use
@pytest.mark.filterwarnings('ignore:.*torch.jit.script.*:FutureWarning')
@pytest.mark.parametrize('rule', ['Con', 'MS'])
def test_exact_and_jvp_meta_gradients_agree_in_float64(rule):
    """Full-depth ResNet-50 at 32 px in float64 (about 1 s per method on 2 cores): the
    forward-mode product passes through torchvision's in-place ReLU and residual additions."""
    net = copy.deepcopy(make_model(dim=8)).double().train()  # BN frozen: eval inside train()
    grads = meta_gradients(net, mmsi_problem(net, rule))
    exact, fast = grads['exact'], grads['jvp']
    assert exact.dtype == fast.dtype == torch.float64
    scale = exact.abs().max()
    assert scale > 0
    torch.testing.assert_close(fast, exact, rtol=1e-8, atol=1e-8 * scale)
