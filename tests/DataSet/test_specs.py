"""DataSet/specs.py: a data set is one spec. What it says about the data set (where it comes
from, whether a run on it needs pretrained weights) is what the loaders and the weights rule
do."""
import dataclasses

import pytest

import DataSet
from DataSet import readers
from DataSet.specs import SPECS, DatasetSpec
from common.errors import InputError
from models.pretrained import require_imagenet, resolve_pretrained

from test_datasets import make_cub


def birds_spec(**changes):
    fields = dict(name='birds', folders=('Birds',), read_layout=readers.read_cub_layout,
                  layout='the CUB layout', split='first half / second half of the classes',
                  recall_ks=(1, 2), pooling='max', dict_min_classes=None, real=False)
    return DatasetSpec(**{**fields, **changes})


def test_a_generated_data_set_is_one_spec(tmp_path, monkeypatch):
    roots = []

    def generate(root):
        roots.append(root)
        return str(make_cub(tmp_path / 'written', folder='Birds'))

    monkeypatch.setitem(SPECS, 'birds', birds_spec(generate=generate))
    data = DataSet.create('birds', root=str(tmp_path / 'data_root'), width=16, origin_width=20)
    assert roots == [str(tmp_path / 'data_root')]
    assert data.source == str(tmp_path / 'written' / 'Birds')
    assert sorted(set(data.train.labels)) == [1, 2] and sorted(set(data.gallery.labels)) == [3, 4]
    assert data.query is None and data.holdout is None
    assert 'birds' in DataSet.names()


def test_a_data_set_on_disk_is_found_among_its_folders(tmp_path, monkeypatch):
    monkeypatch.setitem(SPECS, 'birds', birds_spec(folders=('Missing', 'Birds')))
    base = make_cub(tmp_path, folder='Birds')
    assert DataSet.create('birds', root=str(tmp_path)).source == str(base)
    with pytest.raises(InputError, match='data set folder not found: .*Missing or .*Birds'):
        DataSet.create('birds', root=str(tmp_path / 'elsewhere'))


@pytest.mark.parametrize('real', [True, False])
def test_the_spec_decides_whether_a_run_needs_weights(monkeypatch, real):
    monkeypatch.setitem(SPECS, 'birds', birds_spec(real=real))
    if real:
        with pytest.raises(InputError, match='--data birds needs ImageNet weights'):
            require_imagenet('birds', None)
    else:
        require_imagenet('birds', None)
        # unset --pretrained: random initialisation, nothing looked up or downloaded
        assert resolve_pretrained('ResNet50', 'birds', None, download=False) is None


def test_the_real_data_sets_are_the_photographs_and_the_others_are_generated():
    assert {name for name, spec in SPECS.items() if spec.real} == {'cub', 'car', 'product',
                                                                   'shop'}
    for name, spec in SPECS.items():
        assert (spec.generate is None) == spec.real, name


def test_a_spec_is_written_with_named_fields_and_read_only():
    with pytest.raises(TypeError):
        DatasetSpec('birds', ('Birds',), readers.read_cub_layout, 'the CUB layout', 'halves',
                    (1, 2), 'max', None, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPECS['cub'].recall_ks = (1,)
    assert SPECS['cub'].recall_ks == (1, 2, 4, 8, 16, 32)
