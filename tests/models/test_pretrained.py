"""--pretrained: ImageNet weights found, downloaded into the hub cache (from a local file://
URL here: no network), or refused on the real data sets."""
import hashlib

import pytest
import torch
import torchvision

import models
from models import pretrained
from models.pretrained import (IMAGENET_FILES, WeightsFile, imagenet_weights, require_imagenet,
                               resolve_pretrained)
from common.errors import InputError


@pytest.fixture
def served(tmp_path, monkeypatch):
    """ResNet50's table entry pointed at a local file (a small stand-in, unless a test writes
    another); returns (served file, hub dir, empty local search dir)."""
    source = tmp_path / 'server' / 'resnet50-0676ba61.pth'
    source.parent.mkdir()
    torch.save({'conv1.weight': torch.arange(6.0)}, source)
    entry = IMAGENET_FILES['ResNet50']._replace(url=source.as_uri(), sha256_prefix=None)
    monkeypatch.setitem(IMAGENET_FILES, 'ResNet50', entry)
    local = tmp_path / 'pretrained_models'
    local.mkdir()
    return source, str(tmp_path / 'hub'), (str(local),)


def test_the_table_names_the_standard_files():
    assert IMAGENET_FILES['ResNet50'].url == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert IMAGENET_FILES['BN_Inception'].filename == 'bn_inception-52deb4733.pth'
    assert IMAGENET_FILES['ViT_S16'].filename == 'deit_small_patch16_224-cd65a155.pth'
    for entry in IMAGENET_FILES.values():
        assert entry.url.endswith('/' + entry.filename)


def test_download_into_the_hub_cache_then_reuse(served, monkeypatch, capsys):
    source, hub, local = served
    path = imagenet_weights('ResNet-50', hub_dir=hub, progress=False, search_dirs=local)
    assert path == f'{hub}/checkpoints/resnet50-0676ba61.pth'
    with open(path, 'rb') as got, open(source, 'rb') as expected:
        assert got.read() == expected.read()
    assert 'downloading the ImageNet weights of ResNet-50' in capsys.readouterr().out

    def no_network(*args, **kwargs):
        raise AssertionError('downloaded again')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    assert imagenet_weights('ResNet50', hub_dir=hub, search_dirs=local) == path


def test_default_hub_dir_is_torch_hub_get_dir(served, monkeypatch, tmp_path):
    source, _, local = served
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'torch_home_hub'))
    path = imagenet_weights('ResNet50', progress=False, search_dirs=local)
    assert path == str(tmp_path / 'torch_home_hub' / 'checkpoints' / 'resnet50-0676ba61.pth')


def test_the_project_folder_is_looked_at_first(served, monkeypatch):
    _, hub, local = served
    placed = f'{local[0]}/resnet50-0676ba61.pth'
    torch.save({'x': torch.zeros(1)}, placed)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', None)  # any call would fail
    assert imagenet_weights('ResNet50', hub_dir=hub, search_dirs=local) == placed


def test_hash_prefix_is_checked(served, monkeypatch):
    source, hub, local = served
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    entry = IMAGENET_FILES['ResNet50']
    monkeypatch.setitem(IMAGENET_FILES, 'ResNet50', entry._replace(sha256_prefix='0' * 8
                                                                   if digest[:8] != '0' * 8
                                                                   else '1' * 8))
    with pytest.raises(InputError, match='could not download .*hash'):
        imagenet_weights('ResNet50', hub_dir=hub, progress=False, search_dirs=local)
    assert not list((source.parent.parent / 'hub' / 'checkpoints').iterdir())  # nothing kept
    monkeypatch.setitem(IMAGENET_FILES, 'ResNet50', entry._replace(sha256_prefix=digest[:8]))
    assert imagenet_weights('ResNet50', hub_dir=hub, progress=False, search_dirs=local)


def test_unreachable_url_is_one_input_error_saying_what_to_do(served, monkeypatch, tmp_path):
    _, hub, local = served
    missing = (tmp_path / 'nowhere.pth').as_uri()
    monkeypatch.setitem(IMAGENET_FILES, 'ResNet50',
                        IMAGENET_FILES['ResNet50']._replace(url=missing))
    with pytest.raises(InputError) as caught:
        imagenet_weights('ResNet50', hub_dir=hub, progress=False, search_dirs=local)
    message = str(caught.value)
    for part in (missing, f'{hub}/checkpoints', '--pretrained PATH', '--pretrained none'):
        assert part in message
    with pytest.raises(InputError, match='not found.*--pretrained none'):
        imagenet_weights('ResNet50', hub_dir=hub, download=False, search_dirs=local)
    with pytest.raises(InputError, match='no ImageNet file is known for --net VGG'):
        imagenet_weights('VGG', hub_dir=hub)


def test_resolution_rules(served, tmp_path):
    _, hub, local = served
    options = dict(hub_dir=hub, progress=False, search_dirs=local)
    downloaded = f'{hub}/checkpoints/resnet50-0676ba61.pth'
    for data in ('cub', 'car', 'product', 'shop'):  # unset: ImageNet on the real data sets
        assert resolve_pretrained('ResNet50', data, None, **options) == downloaded
    assert resolve_pretrained('ResNet50', 'cub', 'ImageNet', **options) == downloaded
    assert resolve_pretrained('ResNet50', 'glyphs', None, **options) is None
    for explicit in ('none', 'None', 'NONE'):
        assert resolve_pretrained('ResNet50', 'cub', explicit, **options) is None
    existing = tmp_path / 'ckp.pth.tar'
    existing.write_bytes(b'x')
    assert resolve_pretrained('ResNet50', 'cub', str(existing), **options) == str(existing)
    absent = str(tmp_path / 'absent.pth')
    with pytest.raises(InputError, match=f'--pretrained {absent}: file not found.*--data cub'):
        resolve_pretrained('ResNet50', 'cub', absent, **options)
    # Glyphs: the loader's loud warning and random weights, as before
    assert resolve_pretrained('ResNet50', 'glyphs', absent, **options) == absent


def test_require_imagenet():
    with pytest.raises(InputError, match='--data shop needs ImageNet weights'):
        require_imagenet('shop', None)
    require_imagenet('shop', None, explicit_none=True)
    require_imagenet('glyphs', None)
    with pytest.raises(InputError, match='file not found'):
        require_imagenet('product', '/no/such/file.pth')


def test_downloaded_torchvision_file_loads_into_resnet50(tmp_path, monkeypatch):
    """End to end: a torchvision-format file served by URL, resolved, loaded, equal."""
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    source = tmp_path / 'resnet50-0676ba61.pth'
    torch.save(state, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setitem(IMAGENET_FILES, 'ResNet50',
                        WeightsFile(source.as_uri(), source.name, digest[:8], 'test'))
    path = pretrained.resolve_pretrained('ResNet50', 'cub', 'imagenet', progress=False,
                                         hub_dir=str(tmp_path / 'hub'), search_dirs=())
    model = models.create('ResNet50', data='cub', dim=8, pretrained=path)
    assert torch.equal(model.layer4[2].conv3.weight, state['layer4.2.conv3.weight'])
