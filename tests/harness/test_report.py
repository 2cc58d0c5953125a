"""harness/report.py: summary.csv, summary.md and curves.png from trials with known metrics,
the order of the tables' rows, and a summary that cannot be written or has trials missing."""
import csv
import json
import math

import pytest
from scipy.stats import t

import compare
from harness.grid import Cell, trial_name
from harness.report import curve_series, epoch_table, summarise
from harness_testing import write_trial


def test_summary_from_known_metrics(tmp_path):
    plain = {0: [0.5, 0.6, 0.55], 1: [0.5, 0.62, 0.60], 2: [0.5, 0.64, 0.65]}  # seed: epochs 0-2
    mmsi = {0: [0.5, 0.70, 0.52], 1: [0.5, 0.58, 0.61], 2: [0.5, 0.61, 0.60]}
    for seed in range(3):
        write_trial(tmp_path, 'MS', 0, 'none', seed, dict(enumerate(plain[seed])),
                    trained_by=['python compare.py ...'])
        write_trial(tmp_path, 'MS', 1, 'gradient', seed, dict(enumerate(mmsi[seed])))
    write_trial(tmp_path, 'MS', 1, 'gradient', 3, {0: 0.5, 1: 0.9}, epochs=2,
                trained_by=['python compare.py --not-summarised'])  # incomplete: left out
    write_trial(tmp_path, 'Triplet', 1, 'gradient', 0, {0: 0.5, 1: 0.7, 2: 0.75},
                vary={'val_batch_size': 40})  # one seed, no plain partner
    table = summarise(str(tmp_path))

    rows = {(row['loss'], row['mmsi']): row for row in table}
    assert len(table) == 3
    mmsi_row, plain_row, triplet = rows['MS', 1], rows['MS', 0], rows['Triplet', 1]
    assert mmsi_row['n'] == 3 and plain_row['n'] == 3 and triplet['n'] == 1

    def expected(values):
        mean = sum(values) / len(values)
        s = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return mean, t.ppf(0.975, len(values) - 1) * s / math.sqrt(len(values))

    last = [mmsi[seed][2] for seed in range(3)]
    for metric, scale in (('R@1', 1), ('MAP@R', 4), ('R-Precision', 2)):
        mean, half = expected([v / scale for v in last])
        assert mmsi_row[f'{metric}_mean'] == pytest.approx(mean, abs=1e-12)
        assert mmsi_row[f'{metric}_ci95'] == pytest.approx(half, abs=1e-12)
    # t(0.975, 2) = 4.303: the interval is wide with 3 seeds
    assert mmsi_row['R@1_ci95'] == pytest.approx(4.302653 * 0.0493288 / math.sqrt(3), rel=1e-4)
    best = [max(mmsi[seed]) for seed in range(3)]  # epochs 1, 2, 1
    assert mmsi_row['best_R@1_mean'] == pytest.approx(sum(best) / 3)
    assert mmsi_row['best_epoch_mean'] == pytest.approx((1 + 2 + 1) / 3)
    differences = [mmsi[seed][2] - plain[seed][2] for seed in range(3)]
    mean, half = expected(differences)
    assert mmsi_row['diff_R@1_mean'] == pytest.approx(mean, abs=1e-12)
    assert mmsi_row['diff_R@1_ci95'] == pytest.approx(half, abs=1e-12)
    assert mmsi_row['n_paired'] == 3 and plain_row['diff_R@1_mean'] is None
    assert triplet['R@1_ci95'] is None and triplet['val_batch_size'] == '40'
    assert triplet['diff_R@1_mean'] is None

    with open(tmp_path / 'summary.csv') as f:
        from_csv = list(csv.DictReader(f))
    assert [r['loss'] for r in from_csv] == [r['loss'] for r in table]
    assert float(from_csv[0]['R@1_mean']) == pytest.approx(table[0]['R@1_mean'])
    assert set(from_csv[0]) >= {'loss', 'mmsi', 'pair_weights', 'n', 'R@1_mean', 'R@1_ci95',
                                'MAP@R_mean', 'R-Precision_ci95', 'best_R@1_mean',
                                'diff_MAP@R_ci95'}
    markdown = (tmp_path / 'summary.md').read_text()
    assert '| MS | 1 | gradient |' in markdown and '(no CI, n=1)' in markdown
    # the commands that trained the summarised runs, not that of the incomplete one, which is
    # named as missing instead
    assert markdown.count('    python compare.py ...') == 1 and '--not-summarised' not in markdown
    assert '- MS MMSI gradient: seed 3 missing (not finished)' in markdown
    assert f'{mean:+.4f} ± {half:.4f}' in markdown
    assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not (tmp_path / 'holdout_curves.png').exists()  # no held-out classes
    assert 'holdout/MAP@R at each evaluation' not in (tmp_path / 'summary.md').read_text()


def test_the_summary_gives_map_at_r_and_every_recall_at_k_the_runs_have(tmp_path):
    plain = {0: [0.5, 0.6], 1: [0.5, 0.62], 2: [0.5, 0.66]}
    mmsi = {0: [0.5, 0.64], 1: [0.5, 0.61], 2: [0.5, 0.70]}
    recall = {2: lambda r: r + 0.1, 4: lambda r: (r + 1) / 2, 8: lambda r: r ** 0.5}
    for seed in range(3):
        write_trial(tmp_path, 'MS', 0, 'none', seed, dict(enumerate(plain[seed])), recall=recall)
        # one row without R@8: R@8 is left out, as a data set without it would be
        without_r8 = {k: f for k, f in recall.items() if seed or k != 8}
        write_trial(tmp_path, 'MS', 1, 'gradient', seed, dict(enumerate(mmsi[seed])),
                    recall=without_r8)
    table = summarise(str(tmp_path))
    row = next(row for row in table if row['mmsi'] == 1)
    differences = [recall[4](mmsi[s][1]) - recall[4](plain[s][1]) for s in range(3)]
    mean = sum(differences) / 3
    half = t.ppf(0.975, 2) * math.sqrt(sum((d - mean) ** 2 for d in differences) / 2) / math.sqrt(3)
    assert row['diff_R@4_mean'] == pytest.approx(mean, abs=1e-12)
    assert row['diff_R@4_ci95'] == pytest.approx(half, abs=1e-12)
    assert row['R@2_mean'] == pytest.approx(sum(mmsi[s][1] + 0.1 for s in range(3)) / 3)
    assert 'R@8_mean' not in row
    markdown = (tmp_path / 'summary.md').read_text()
    header = next(line for line in markdown.splitlines() if line.startswith('| loss')
                  and 'Δ R@4' in line)
    assert header.split(' | ')[3:6] == ['MAP@R', 'R@1', 'R@2']
    assert f'{mean:+.4f} ± {half:.4f}' in markdown
    with open(tmp_path / 'summary.csv') as f:
        assert {'R@2_mean', 'diff_R@4_ci95'} <= set(next(csv.DictReader(f)))
    # runs with R@1 alone: no second table
    only_r1 = tmp_path / 'only_r1'
    for seed in range(2):
        write_trial(only_r1, 'MS', 0, 'none', seed, {0: 0.5, 1: 0.6})
    summarise(str(only_r1))
    assert 'Recall@K' not in (only_r1 / 'summary.md').read_text()


def test_tables_list_the_values_of_a_flag_in_numeric_order():
    cells = [Cell.make('MS', mmsi, 'gradient' if mmsi else 'none', {'lr': lr})
             for mmsi in (1, 0) for lr in ('3e-5', '1e-4', 'auto', '1e-5', '3e-4')]
    ordered = [(cell.mmsi, dict(cell.vary)['lr']) for cell in
               sorted(cells, key=Cell.sort_key)]
    assert ordered == [(mmsi, lr) for mmsi in (0, 1)
                       for lr in ('1e-5', '3e-5', '1e-4', '3e-4', 'auto')]
    table = epoch_table(curve_series(
        {cell: {0: [{'epoch': 1, 'R@1': 0.5}]} for cell in cells}), 'R@1')
    labels = [line.split(' | ')[0] for line in table if line.startswith('| MS')]
    assert labels[:3] == ['| MS plain lr=1e-5 (n=1)', '| MS plain lr=3e-5 (n=1)',
                          '| MS plain lr=1e-4 (n=1)']


def test_summary_problems_are_one_error_line_and_never_announced(tmp_path, capsys):
    assert compare.main(['--summarise', str(tmp_path / 'absent')]) == 2
    assert capsys.readouterr().err == f'error: --summarise {tmp_path / "absent"}: no such folder\n'
    for seed in (0, 1, 2):  # seed 2 stopped after epoch 1 of 2; seed 3 never started
        write_trial(tmp_path, 'MS', 1, 'official', seed, {1: 0.5, 2: 0.6} if seed < 2 else {1: 0.5},
                    epochs=2)
    cell = Cell('MS', 1, 'official')
    descriptor = json.loads((tmp_path / 'runs' / f'{trial_name(cell, 0)}.cell.json')
                            .read_text())
    descriptor.update(seed=3, name=trial_name(cell, 3))
    (tmp_path / 'runs' / f'{descriptor["name"]}.cell.json').write_text(json.dumps(descriptor))
    (tmp_path / 'summary.md').mkdir()  # cannot be written
    assert compare.main(['--summarise', str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f'error: cannot write the summary: {tmp_path / "summary.md"}: Is a directory']
    missing = ['MS MMSI official: seed 2 missing (not finished)',
               'MS MMSI official: seed 3 missing (not started)']
    assert captured.out.splitlines() == missing
    (tmp_path / 'summary.md').rmdir()
    assert compare.main(['--summarise', str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == missing + [
        f'summary: {tmp_path / "summary.md"}']
    assert all(f'- {line}' in (tmp_path / 'summary.md').read_text() for line in missing)
