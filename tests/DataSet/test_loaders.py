"""DataSet/loaders.py: the evaluation sets of a run (gallery, query, holdout) are split between
processes by index, in order; a set the data set does not have gives no loader."""
import DataSet
from DataSet.loaders import make_loaders

from test_datasets import make_cub

SIZE = dict(width=16, origin_width=20)


def loaders_of(dataset, rank, world_size):
    return make_loaders(dataset, input_pipeline='pil', ratio=0.16, workers=0, cuda=False,
                        train_batches=[[0, 1, 2]], eval_batch_size=2, rank=rank,
                        world_size=world_size, **SIZE)


def labels_of(loader):
    return [label for _, labels in loader for label in labels.tolist()]


def test_without_query_or_holdout_there_are_no_such_loaders(tmp_path):
    make_cub(tmp_path)  # train: classes 1-2, test: classes 3-4, 3 images each
    loaders = loaders_of(DataSet.create('cub', root=str(tmp_path), **SIZE), 0, 1)
    assert loaders.query is None and loaders.holdout is None and loaders.validation is None
    assert labels_of(loaders.gallery) == [3, 3, 3, 4, 4, 4]
    assert labels_of(loaders.train) == [1, 1, 1]


def test_gallery_and_holdout_are_sharded_by_index(tmp_path):
    make_cub(tmp_path, num_classes=6)  # train: classes 1-3, test: classes 4-6
    splits = DataSet.read_splits('cub', str(tmp_path))
    train, holdout = DataSet.hold_out_classes(splits.train, 1)
    dataset = DataSet.create('cub', root=str(tmp_path), splits=splits._replace(
        train=train, holdout=holdout), **SIZE)
    shards = [loaders_of(dataset, rank, 2) for rank in (0, 1)]
    assert [labels_of(s.gallery) for s in shards] == [[4, 4, 5, 6, 6], [4, 5, 5, 6]]
    assert [labels_of(s.holdout) for s in shards] == [[3, 3], [3]]
    assert all(s.query is None for s in shards)
