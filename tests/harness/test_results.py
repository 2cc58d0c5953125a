"""harness/results.py: what the summary reads back from the trials' folders: a fine-tuned
cell's epoch 0 from its stage 1, a metrics file cut short, a damaged metrics line."""
import csv
import json

import pytest

import compare
from harness.grid import Cell, trial_name
from harness.results import collect, starting_rows
from harness.statistics import summary_rows
from harness_testing import copy_grid, write_trial


def test_a_fine_tuned_cell_takes_its_epoch_0_from_stage_1(tmp_path):
    stage1 = tmp_path / 'stage1' / 'MS_seed0'
    stage1.mkdir(parents=True)
    stage1_rows = [{'epoch': 4, 'loss': 2.0, 'R@1': 0.3, 'MAP@R': 0.1, 'R-Precision': 0.2,
                    'eval_seconds': 9.0},
                   {'epoch': 8, 'loss': 1.0, 'R@1': 0.8, 'MAP@R': 0.4, 'R-Precision': 0.5}]
    (stage1 / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in stage1_rows))
    for mmsi, form, r1 in ((0, 'none', {1: 0.6, 2: 0.7}), (1, 'gradient', {2: 0.75})):
        write_trial(tmp_path, 'MS', mmsi, form, 0, r1)
        name = trial_name(Cell('MS', mmsi, form), 0)
        descriptor_path = tmp_path / 'runs' / f'{name}.cell.json'
        descriptor = json.loads(descriptor_path.read_text())
        descriptor['start'] = 'stage1/MS_seed0'
        descriptor_path.write_text(json.dumps(descriptor))
    cells = collect(str(tmp_path))
    rows = cells[Cell('MS', 0, 'none')][0]
    assert rows[0] == {'epoch': 0, 'R@1': 0.8, 'MAP@R': 0.4, 'R-Precision': 0.5}
    table = {row['mmsi']: row for row in summary_rows(cells)[0]}
    assert table[0]['best_R@1_mean'] == 0.8 and table[0]['best_epoch_mean'] == 0
    assert table[1]['R@1_mean'] == 0.75 and table[1]['diff_R@1_mean'] == pytest.approx(0.05)
    # a trial that evaluated its epoch 0 itself keeps its own
    assert starting_rows(str(stage1), [{'epoch': 0, 'R@1': 0.1}]) == [
        {'epoch': 0, 'R@1': 0.1}]


def test_the_summary_reads_a_metrics_file_cut_short_without_a_traceback(
        tmp_path, capsys, monkeypatch):
    """A trial's metrics.jsonl cut short (a copy taken while it was written) is read to its last
    complete line, with a warning; --summarise takes a folder relative to where it runs."""
    for seed in (0, 1):
        write_trial(tmp_path, 'MS', 0, 'none', seed, {0: 0.5, 1: 0.6 + seed / 10})
    metrics = tmp_path / 'runs' / 'MS_mmsi0_none_seed1' / 'metrics.jsonl'
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "loss": 0.9, "R@')
    monkeypatch.chdir(tmp_path)
    assert compare.main(['--summarise', '.']) == 0
    assert capsys.readouterr().err.splitlines() == [
        f'warning: {metrics}: the last line is incomplete; read the 2 complete line(s) '
        f'before it']
    [row] = csv.DictReader(open(tmp_path / 'summary.csv'))
    assert row['n'] == '2' and float(row['R@1_mean']) == pytest.approx(0.65)


def test_a_damaged_metrics_line_after_a_grid_run_is_one_error_line(finished_grid, tmp_path,
                                                                   capsys):
    out = tmp_path / 'grid'
    arguments = ['--out', str(out), *copy_grid(finished_grid, out)]
    metrics = out / 'runs' / 'MS_mmsi0_none_seed0' / 'metrics.jsonl'
    lines = metrics.read_text().splitlines()
    metrics.write_text('\n'.join(['{"epoch": 1, "lo'] + lines) + '\n')
    assert compare.main(arguments) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f'error: {metrics}, line 1: not a JSON object: \'{{"epoch": 1, "lo\''], captured
    assert 'summary:' not in captured.out
    assert compare.main(['--summarise', str(out)]) == 1
    assert capsys.readouterr().err.splitlines()[0].startswith(f'error: {metrics}, line 1')
