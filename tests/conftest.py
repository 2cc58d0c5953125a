"""Shared fixtures: a tiny subset of the embedded Glyphs data set for end-to-end runs, and one
finished tiny run that tests read (and must leave alone)."""
import os

import pytest

from DataSet.glyphs import generate_glyphs

SUBSET_CLASSES = 6  # per half: 6 training and 6 test classes
IMAGES_PER_CLASS = 4


@pytest.fixture(scope='session')
def glyphs_root(tmp_path_factory):
    """A data root holding `Glyphs/`: the first SUBSET_CLASSES classes of each half of the full
    class list, IMAGES_PER_CLASS images each, in the same on-disk layout."""
    full = str(tmp_path_factory.mktemp('glyphs_full') / 'Glyphs')
    generate_glyphs(full, seed=0, images_per_class=IMAGES_PER_CLASS, image_size=72)
    with open(os.path.join(full, 'image_class_labels.txt')) as f:
        labels = [line.split() for line in f]
    num_classes = max(int(c) for _, c in labels)
    keep = set(range(1, SUBSET_CLASSES + 1)) | set(
        range(num_classes // 2 + 1, num_classes // 2 + SUBSET_CLASSES + 1))
    kept_ids = {image_id for image_id, c in labels if int(c) in keep}
    root = tmp_path_factory.mktemp('glyphs_subset')
    subset = root / 'Glyphs'
    subset.mkdir()
    os.symlink(os.path.join(full, 'images'), subset / 'images')
    for name in ('images.txt', 'image_class_labels.txt'):
        with open(os.path.join(full, name)) as f:
            lines = [line for line in f if line.split()[0] in kept_ids]
        (subset / name).write_text(''.join(lines))
    return str(root)


@pytest.fixture(scope='session')
def finished_run(glyphs_root, tmp_path_factory):
    """The folder of a finished one-epoch plain run (tiny_run.run_args), shared by every test
    that needs a checkpoint of this project: tests copy from it, never write into it."""
    import MMSI_train
    from tiny_run import run_args
    save_dir = tmp_path_factory.mktemp('finished') / 'run'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, epochs=1)) == 0
    return save_dir
