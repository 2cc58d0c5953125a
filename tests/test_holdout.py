"""--holdout_classes (a selection set of held-out training classes) and --label_noise (a fixed
share of the training labels changed), end to end on the Glyphs subset (6 training classes of
4 images: labels 1-6)."""
import csv

import pytest
import torch

import DataSet
import MMSI_train
import test as evaluate_script
import utils.build
from common.errors import InputError
from tiny_run import metrics, run_args
from utils.config import resolve
from utils.evaluation import embed_shards

HOLDOUT_KEYS = ('holdout/R@1', 'holdout/MAP@R', 'holdout/R-Precision')


def labels_of(items):
    return {label for _, label in items}


def test_the_last_training_classes_are_held_out_and_counted_out(glyphs_root, tmp_path):
    read = DataSet.read_splits('glyphs', glyphs_root)
    config, _, splits, _ = resolve(run_args(glyphs_root, tmp_path / 'run', '--holdout_classes',
                                            '2', mmsi=1))
    assert labels_of(read.train) == set(range(1, 7))
    assert labels_of(splits.train) == {1, 2, 3, 4} and labels_of(splits.holdout) == {5, 6}
    assert sorted(splits.train + splits.holdout) == sorted(read.train)
    assert splits.gallery == read.gallery  # the test split is untouched
    # the warm-up threshold and the capacity count the 4 classes that train
    assert (config.dict_min_classes, config.dict_capacity) == (2, 4 * config.d_size)
    dataset = DataSet.create('glyphs', glyphs_root, 64, 72, splits=splits)
    assert set(dataset.train.labels) == {1, 2, 3, 4}
    assert set(dataset.holdout.labels) == {5, 6} and len(dataset.holdout) == 8
    assert DataSet.create('glyphs', glyphs_root, 64, 72, splits=read).holdout is None


@pytest.mark.parametrize('count, mmsi, why', [
    (5, 0, 'leaves 1 of the 6 training classes; training needs 2'),
    (4, 1, r'leaves 2 .*; training needs 3 \(--val_batch_size 3 / --val_num_instances 1\)'),
])
def test_too_many_holdout_classes_are_refused(glyphs_root, tmp_path, count, mmsi, why):
    with pytest.raises(InputError, match=f'--holdout_classes {count} {why}'):
        resolve(run_args(glyphs_root, tmp_path / 'run', '--holdout_classes', str(count),
                         mmsi=mmsi))


def test_holdout_metrics_equal_a_plain_loop_over_the_same_embeddings(glyphs_root, tmp_path):
    run = MMSI_train.setup(run_args(glyphs_root, tmp_path / 'run', '--holdout_classes', '2'))
    try:
        scores = MMSI_train.evaluate(run)
        emb, labels = embed_shards(run.network, run.loaders.holdout, run.args, run.device,
                                   run.dist)
    finally:
        run.log.close()
    assert set(labels.tolist()) == {5, 6} and len(labels) == 8
    hits, average_precisions, r_precisions = [], [], []
    for i in range(len(emb)):
        others = [j for j in range(len(emb)) if j != i]
        ranked = sorted(others, key=lambda j: -float(emb[i] @ emb[j]))
        relevant = [int(labels[j] == labels[i]) for j in ranked]
        r = sum(relevant)
        hits.append(relevant[0])
        r_precisions.append(sum(relevant[:r]) / r)
        average_precisions.append(sum(sum(relevant[:k + 1]) / (k + 1)
                                      for k in range(r) if relevant[k]) / r)
    expected = {'holdout/R@1': sum(hits) / len(hits),
                'holdout/MAP@R': sum(average_precisions) / len(emb),
                'holdout/R-Precision': sum(r_precisions) / len(emb)}
    assert {key: scores[key] for key in HOLDOUT_KEYS} == pytest.approx(expected, abs=1e-6)
    assert 'R@1' in scores and 'MAP@R' in scores  # the test metrics are still there


def test_a_run_never_trains_on_the_holdout_and_records_its_metrics(glyphs_root, tmp_path,
                                                                   monkeypatch, capsys):
    validation_labels = []
    make_loaders = utils.build.make_loaders

    def recording(stream):
        for batch in stream:
            validation_labels.extend(batch[1].tolist())
            yield batch

    def recorded_loaders(*args, **kwargs):
        loaders = make_loaders(*args, **kwargs)
        return loaders._replace(validation=recording(loaders.validation))
    monkeypatch.setattr(utils.build, 'make_loaders', recorded_loaders)
    save_dir = tmp_path / 'run'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, '--holdout_classes', '2',
                                    '--label_noise', '0.25', '--dict_min_classes', '1',
                                    mmsi=1, epochs=1)) == 0
    checkpoint = torch.load(save_dir / 'last.pth.tar', weights_only=False)
    dictionary_labels = set(checkpoint['dictionary']['labels'].tolist())
    assert dictionary_labels and dictionary_labels <= {1, 2, 3, 4}
    assert validation_labels and set(validation_labels) <= {1, 2, 3, 4}
    rows = [row for row in metrics(save_dir) if 'R@1' in row]
    assert len(rows) == 2  # before the first epoch and after it
    for row in rows:
        assert all(0 <= row[key] <= 1 for key in HOLDOUT_KEYS)
    log = (save_dir / 'log.txt').read_text()
    assert 'Holdout epoch 0: R@1 ' in log and 'Holdout epoch 1: R@1 ' in log
    assert 'Holdout: 8 images of 2 training classes' in log
    # 16 training images, round(0.25 * 16) = 4 labels changed, drawn with the run's seed
    assert 'Label noise: 4 of 16 training labels changed (seed 0); noisy_labels.csv' in log
    with open(save_dir / 'noisy_labels.csv', newline='') as f:
        lines = list(csv.reader(f))
    assert lines[0] == ['path', 'true_label', 'given_label'] and len(lines) == 5
    true_labels = dict(DataSet.read_splits('glyphs', glyphs_root).train)
    for path, true, given in lines[1:]:
        assert int(true) == true_labels[path] and int(given) != int(true)
        assert int(given) in {1, 2, 3, 4}

    # test.py evaluates the held-out classes of the run's checkpoint too, to the same numbers
    evaluated = evaluate_script.evaluate_checkpoint(
        ['--resume', str(save_dir / 'last.pth.tar'), '--data_root', glyphs_root,
         '--nThreads', '0', '--progress', '0', '--nmi', 'off'])
    for key in HOLDOUT_KEYS:
        assert evaluated[key] == pytest.approx(rows[-1][key], abs=1e-6), key
    assert 'Holdout epoch 1: R@1 ' in capsys.readouterr().out


def test_label_noise_changes_training_labels_only(glyphs_root, tmp_path):
    def split(*extra):
        return resolve(run_args(glyphs_root, tmp_path / 'run', '--holdout_classes', '2',
                                *extra)).splits
    clean, noisy = split(), split('--label_noise', '0.5')
    same_seed, other_seed = split('--label_noise', '0.5', '--noise_seed', '0'), split(
        '--label_noise', '0.5', '--noise_seed', '7')
    assert clean.relabelled == () and len(noisy.relabelled) == 8
    assert (noisy.gallery, noisy.holdout) == (clean.gallery, clean.holdout)
    changed = sum(a != b for a, b in zip(clean.train, noisy.train))
    assert changed == 8 and labels_of(noisy.train) <= {1, 2, 3, 4}
    assert same_seed.train == noisy.train  # --noise_seed defaults to --seed (0 here)
    assert other_seed.train != noisy.train


@pytest.mark.parametrize('flag, value', [('--label_noise', '0.1'), ('--noise_seed', '5'),
                                         ('--holdout_classes', '1')])
def test_resuming_with_another_holdout_or_noise_is_refused(finished_run, flag, value):
    resume = str(finished_run / 'last.pth.tar')
    with pytest.raises(InputError, match=f'trained with {flag} .* this run has {flag} {value}'):
        resolve(['--resume', resume, flag, value], read_data=False)
