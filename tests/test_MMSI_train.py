"""End-to-end runs on a tiny Glyphs subset: plain and MMSI training, resume, outputs, plot."""
import math
import os

import pytest
import torch

import MMSI_train
import losses
from tiny_inshop import make_inshop
from tiny_run import metrics, run_args
from utils import plot


def test_plain_training_two_epochs_then_resume_a_third(glyphs_root, tmp_path, capsys):
    save_dir = tmp_path / 'plain'
    assert MMSI_train.main(run_args(glyphs_root, save_dir)) == 0
    log = (save_dir / 'log.txt').read_text()
    assert 'Recall epoch 0: R@1' in log and 'Recall epoch 2: R@1' in log
    assert 'Epoch: [1][1/3]' in log and 'Epoch 2 done' in log
    rows = metrics(save_dir)
    assert [row['epoch'] for row in rows] == [0, 1, 2]
    assert all(0 <= row['R@1'] <= 1 and 'R@32' in row and 'MAP@R' in row for row in rows)
    assert rows[1]['iterations'] == 3 and rows[1]['loss'] > 0 and 'pos_sim' in rows[1]
    assert sorted(p.name for p in save_dir.iterdir()) == [
        'ckp_ep1.pth.tar', 'ckp_ep2.pth.tar', 'last.pth.tar', 'log.txt', 'metrics.jsonl']

    checkpoint = torch.load(save_dir / 'last.pth.tar', weights_only=False)
    assert checkpoint['epoch'] == 2 and checkpoint['iteration'] == 0
    assert checkpoint['global_step'] == 6 and checkpoint['dictionary'] is None
    assert checkpoint['args']['loss'] == 'MS' and checkpoint['seed'] == 0
    assert {'model', 'optimizer', 'rng', 'metrics'} <= set(checkpoint)
    assert len(checkpoint['metrics']) == 3
    assert 'classifier.linear.weight' in checkpoint['model']

    resume = run_args(glyphs_root, save_dir, '--resume', str(save_dir / 'last.pth.tar'),
                      epochs=3)
    assert MMSI_train.main(resume) == 0
    log = (save_dir / 'log.txt').read_text()
    assert log.count('New run') == 1 and 'Resuming' in log and 'Recall epoch 3' in log
    assert 'Epoch 1 done' in log.split('Resuming')[0] and 'Epoch: [3][1/3]' in log
    assert [row['epoch'] for row in metrics(save_dir)] == [0, 1, 2, 3]
    assert torch.load(save_dir / 'last.pth.tar', weights_only=False)['global_step'] == 9

    figure = tmp_path / 'curves.png'
    plot.main([str(save_dir), str(save_dir / 'log.txt'), '-o', str(figure),
               '--labels', 'metrics', 'log'])
    assert figure.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    from_metrics, from_log = plot.read_run(str(save_dir)), plot.read_run(str(save_dir / 'log.txt'))
    assert [e for e, _ in from_metrics['r1']] == [0, 1, 2, 3] == [e for e, _ in from_log['r1']]
    for a, b in zip(from_metrics['r1'] + from_metrics['loss'], from_log['r1'] + from_log['loss']):
        assert a[0] == b[0] and abs(a[1] - b[1]) < 1e-4


def test_mmsi_training_warm_up_updates_statistics_and_resume(glyphs_root, tmp_path):
    save_dir = tmp_path / 'mmsi'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, mmsi=1)) == 0
    rows = metrics(save_dir)
    first, second = rows[1], rows[2]
    # 6 training classes, warm-up until 4: the first batch (2 classes) is skipped
    assert first['skipped'] == {'warmup': 1}
    assert second['skipped'] == {}
    for row in (first, second):
        assert row['w_max'] == 1.0 and 0 < row['w_mean'] <= 1 and 0 < row['w_pos_frac'] <= 1
        assert 0 <= row['w_neg_pairs'] <= 1 and 0 < row['w_pos_pairs'] <= 1
        assert row['dict_classes'] == 6
    assert first['dict_entries'] == 6 * 3 and second['dict_entries'] == 6 * 5  # d_size 5
    log = (save_dir / 'log.txt').read_text()
    assert 'skipped warmup 1' in log and 'dictionary 30 entries / 6 classes' in log
    assert 'w_pos_pairs' in log and 'w_neg_pairs' in log
    assert 'nan' not in log.lower()

    checkpoint = torch.load(save_dir / 'last.pth.tar', weights_only=False)
    assert all(torch.isfinite(t).all() for t in checkpoint['model'].values()
               if t.is_floating_point())
    saved = checkpoint['dictionary']
    assert len(saved['labels']) == 30 and saved['d_size'] == 5
    resumed = MMSI_train.setup(
        run_args(glyphs_root, save_dir, '--resume', str(save_dir / 'last.pth.tar'), mmsi=1,
                 epochs=3))
    emb, labels = resumed.dictionary.tensors()
    assert torch.equal(emb, saved['emb']) and torch.equal(labels, saved['labels'])
    assert resumed.val_consumed == checkpoint['val_consumed'] == 5
    assert resumed.resume_point[:2] == (3, 0)
    resumed.log.close()


def test_mmsi_under_bf16_autocast_trains(glyphs_root, tmp_path):
    save_dir = tmp_path / 'bf16'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, '--amp', 'bf16', mmsi=1,
                                    epochs=1)) == 0
    row = metrics(save_dir)[-1]
    # all-zero embeddings (what fp16 normalisation once gave) would score R@1 0: every other
    # class ties with the best positive
    assert row['w_max'] == 1.0 and row['loss'] > 0 and 0 < row['R@1'] <= 1


def test_tensor_input_pipeline_trains(glyphs_root, tmp_path):
    save_dir = tmp_path / 'tensor'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, '--input_pipeline', 'tensor',
                                    '--eval_first', '0', mmsi=1, epochs=1)) == 0
    rows = metrics(save_dir)
    # --eval_first 0: no evaluation of the starting weights, only the epoch's
    assert [row['epoch'] for row in rows] == [1] and 'Recall epoch 0' not in (
        save_dir / 'log.txt').read_text()
    assert rows[0]['R@1'] > 0.2 and rows[0]['w_max'] == 1.0


def test_weight_statistics_against_a_loop():
    from trainer_MMSI import weight_statistics
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(7, 7, generator=g) * (torch.rand(7, 7, generator=g) > 0.4)
    pos_mask = torch.rand(7, 7, generator=g) > 0.7
    neg_mask = (torch.rand(7, 7, generator=g) > 0.5) & ~pos_mask
    stats = weight_statistics(weights, pos_mask, neg_mask)
    pairs = [(i, j) for i in range(7) for j in range(7)]
    pos = [float(weights[i, j]) for i, j in pairs if pos_mask[i, j]]
    neg = [float(weights[i, j]) for i, j in pairs if neg_mask[i, j]]
    both = pos + neg
    expected = {'w_mean': sum(both) / len(both), 'w_max': max(both),
                'w_pos_frac': sum(w > 0 for w in both) / len(both),
                'w_pos_pairs': sum(pos) / len(pos), 'w_neg_pairs': sum(neg) / len(neg)}
    assert set(stats) == set(expected)
    for key, value in expected.items():
        assert abs(float(stats[key]) - value) < 1e-6, key
    nothing = torch.zeros(7, 7, dtype=torch.bool)
    empty = weight_statistics(weights, nothing, nothing)
    assert all(float(value) == 0 for value in empty.values())


@pytest.mark.parametrize('loss', ['Triplet', 'Circle', 'SupCon'])
def test_mmsi_run_with_each_new_loss(glyphs_root, tmp_path, loss):
    save_dir = tmp_path / loss
    extra = ('--loss_param', 'temperature=0.2') if loss == 'SupCon' else ()
    assert MMSI_train.main(run_args(glyphs_root, save_dir, '--loss', loss, *extra, mmsi=1,
                                    epochs=1)) == 0
    rows = metrics(save_dir)
    assert [row['epoch'] for row in rows] == [0, 1]
    trained = rows[1]
    assert trained['w_max'] == 1.0 and 0 < trained['w_mean'] <= 1
    assert 0 <= trained['w_pos_pairs'] <= 1 and 0 <= trained['w_neg_pairs'] <= 1
    assert all(math.isfinite(value) for value in trained.values() if isinstance(value, float))
    assert 0 <= trained['R@1'] <= 1 and 'MAP@R' in trained
    log = (save_dir / 'log.txt').read_text()
    assert f'Loss: {loss} (' in log and '; pair weights gradient' in log
    assert loss != 'SupCon' or 'Loss: SupCon (temperature 0.2)' in log
    if loss != 'Triplet':  # run_args passes --margin 0.1, which these losses do not have
        assert f'Not parameters of {loss}, ignored: --margin 0.1' in log
    assert 'Recall epoch 1: R@1' in log and 'nan' not in log.lower()


def design_note_plugin_example():
    """docs/design.md's example of a loss of one's own, as a file outside the package."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'docs', 'design.md'), encoding='utf-8') as f:
        text = f.read()
    section = text[text.index('### A loss of your own'):]
    return section[section.index('```python') + len('```python'):section.index('```\n', 10)]


def test_a_users_rule_from_outside_the_package_trains_with_mmsi(glyphs_root, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(losses, 'RULES', dict(losses.RULES))  # forget the rule afterwards
    module = tmp_path / 'my_losses.py'
    module.write_text(design_note_plugin_example())
    save_dir = tmp_path / 'plugin'
    assert MMSI_train.main(run_args(glyphs_root, save_dir, '--loss', 'Hinge', '--loss_module',
                                    str(module), '--margin', '0.2', mmsi=1,
                                    epochs=1)) == 0
    assert 'Hinge' in losses.RULES
    trained = metrics(save_dir)[1]
    assert trained['w_max'] == 1.0 and trained['loss'] != 0 and 0 <= trained['R@1'] <= 1
    log = (save_dir / 'log.txt').read_text()
    assert 'Loss: Hinge (margin 0.2); pair weights gradient' in log
    checkpoint = torch.load(save_dir / 'last.pth.tar', weights_only=False)
    assert checkpoint['args']['pair_weights'] == 'gradient'
    assert checkpoint['args']['loss_params'] == {'margin': 0.2}


def shop_args(root, save_dir, *extra):
    return ['--data', 'shop', '--data_root', str(root), '--width', '64', '--origin_width', '72',
            '--batch_size', '4', '--num_instances', '2', '--epochs', '1', '--save_dir',
            str(save_dir), '--nThreads', '0', '--loss', 'MS', '--MMSI', '0', '--seed', '0',
            '--progress', '0', '--eval_batch_size', '8', *extra]


def test_in_shop_trains_and_evaluates_queries_against_the_gallery_with_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    make_inshop(tmp_path)
    save_dir = tmp_path / 'shop'
    assert MMSI_train.main(shop_args(tmp_path, save_dir, '--pretrained', 'none',
                                     '--tensorboard', '1')) == 0
    rows = metrics(save_dir)
    assert [row['epoch'] for row in rows] == [0, 1]
    assert all(f'R@{k}' in row for row in rows for k in (1, 10, 20, 30, 40, 50))
    assert 'NMI' in rows[-1] and 'NMI' not in rows[0]  # --nmi final
    log = (save_dir / 'log.txt').read_text()
    assert ('5 training images of 2 classes, 3 query images of 2 classes against 3 gallery '
            'images of 2 classes') in log
    events = EventAccumulator(str(save_dir / 'tensorboard'))
    events.Reload()
    tags = events.Tags()['scalars']
    assert {'R@1', 'loss', 'train/loss', 'NMI'} <= set(tags)
    assert [event.step for event in events.Scalars('R@1')] == [0, 1]  # global steps


def test_a_real_data_set_without_imagenet_weights_is_refused_before_any_write(tmp_path,
                                                                              capsys):
    make_inshop(tmp_path)
    save_dir = tmp_path / 'refused'
    missing = tmp_path / 'bn_inception.pth'
    assert MMSI_train.main(shop_args(tmp_path, save_dir, '--pretrained', str(missing))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'error: --pretrained {missing}: file not found. '
                                               f'--data shop needs weights'), err
    assert not save_dir.exists()
