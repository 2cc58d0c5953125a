"""DataSet/glyphs_many.py: the many-class Glyphs set in the Stanford Online Products layout."""
import filecmp
import os

import numpy as np
import pytest

import DataSet
from DataSet import glyphs_many
from DataSet.readers import read_sop_layout

SMALL = 40  # classes of the test generations


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    """Two generations of SMALL classes with seed 0, one with seed 1: their folders."""
    root = tmp_path_factory.mktemp('glyphs_many')
    return [glyphs_many.generate_glyphs_many(str(root / name / glyphs_many.FOLDER), seed=seed,
                                             num_classes=SMALL)
            for name, seed in (('a', 0), ('b', 0), ('c', 1))]


def all_files(folder):
    return sorted(os.path.relpath(os.path.join(path, name), folder)
                  for path, _, names in os.walk(folder) for name in names)


def test_generation_is_deterministic_for_a_seed(small):
    first, again, other = small
    files = all_files(first)
    assert files == all_files(again)
    _, mismatch, errors = filecmp.cmpfiles(first, again, files, shallow=False)
    assert mismatch == [] and errors == []
    common = sorted(set(files) & set(all_files(other)))
    assert filecmp.cmpfiles(first, other, [f for f in common if f.endswith('.jpg')],
                            shallow=False)[1]  # another seed draws other images


def test_the_files_read_through_the_product_reader(small):
    folder = small[0]
    with open(os.path.join(folder, 'Ebay_train.txt')) as f:
        assert f.readline() == 'image_id class_id super_class_id path\n'
    train, test = read_sop_layout(folder)
    train_classes, test_classes = {c for _, c in train}, {c for _, c in test}
    assert train_classes == set(range(1, SMALL // 2 + 1))
    assert test_classes == set(range(SMALL // 2 + 1, SMALL + 1))
    for items in (train, test):
        counts = np.bincount([c for _, c in items])[sorted({c for _, c in items})]
        assert counts.min() >= 4 and counts.max() <= 8
        assert all(os.path.isfile(path) for path, _ in items)
    root = os.path.dirname(folder)
    splits = DataSet.read_splits('glyphs_many', root)
    assert (splits.train, splits.gallery, splits.query) == (train, test, None)
    dataset = DataSet.create('glyphs_many', root, width=48, origin_width=56, splits=splits)
    image, label = dataset.gallery[0]
    assert tuple(image.shape) == (3, 48, 48) and label == test[0][1]


def test_the_full_set_is_in_sops_regime():
    classes = glyphs_many.glyph_classes()
    assert len(classes) >= 2000
    assert len({script for _, script in classes}) >= 6  # several scripts
    assert len(glyphs_many.class_order(classes)) == len(classes)  # the default: all of them
    assert glyphs_many.IMAGES_PER_CLASS == (4, 8)


def test_no_two_classes_look_alike():
    classes = [char for char, _ in glyphs_many.glyph_classes()]
    # exact: no two reference renderings (cropped to their ink) are equal
    renderings = {glyphs_many._ink(char, glyphs_many.reference_font()).tobytes() +
                  bytes(glyphs_many._ink(char, glyphs_many.reference_font()).shape)
                  for char in classes}
    assert len(renderings) == len(classes)
    # near: no two thumbnails (or mirror images) closer than the threshold
    distances = glyphs_many.look_alike_distances([glyphs_many.thumbnails(c) for c in classes])
    assert distances.min() >= glyphs_many.MIN_DISTANCE
    # the known look-alike groups kept one member each
    for group in ('AΑА', 'BΒВ', 'EΕЕ', 'KΚ\u212a', 'oοо', 'pрρ', '-‐‑–—'):
        assert sum(char in classes for char in group) <= 1, group
    assert 'A' in classes and '\ue000' not in classes
