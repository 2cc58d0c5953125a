"""utils/plot.py on damaged input (a metrics file cut short, an unwritable output); the one
function that draws curves; the script run from another folder."""
import json
import os
import subprocess
import sys

import pytest

from utils import plot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_metrics(folder, tail):
    rows = [{'epoch': 0, 'R@1': 0.5}, {'epoch': 1, 'loss': 1.5, 'R@1': 0.6}]
    (folder / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows) + tail)


def test_a_truncated_metrics_file_is_read_to_its_last_complete_line(tmp_path, capsys):
    write_metrics(tmp_path, '{"epoch": 2, "loss": 1.2, "R@')
    curves = plot.read_run(str(tmp_path))
    assert curves == {'r1': [(0, 0.5), (1, 0.6)], 'loss': [(1, 1.5)]}
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'warning: {tmp_path}/metrics.jsonl: the last line is incomplete; read the '
                   f'2 complete line(s) before it']


def test_a_damaged_line_before_the_last_is_an_error(tmp_path, capsys):
    write_metrics(tmp_path, 'garbage\n{"epoch": 2, "loss": 1.2}\n')
    assert plot.main([str(tmp_path), '-o', str(tmp_path / 'curves.png')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f'error: {tmp_path}/metrics.jsonl, line 3: not a JSON object')


def test_an_unwritable_output_is_one_error_line(tmp_path, capsys):
    write_metrics(tmp_path, '')
    output = tmp_path / 'missing_folder' / 'curves.png'
    assert plot.main([str(tmp_path), '-o', str(output)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'error: -o {output}: cannot write the figure (No such file or directory)']
    assert plot.main([str(tmp_path), '-o', str(tmp_path / 'curves.png')]) == 0
    assert (tmp_path / 'curves.png').read_bytes()[:4] == b'\x89PNG'


def test_draw_curves_draws_a_band_only_where_a_series_has_half_widths():
    ax = plot.Figure().subplots()
    plot.draw_curves(ax, [plot.Series('mean', [0, 1, 2], [0.5, 0.6, 0.7], [0.1, 0.05, 0.0]),
                          plot.Series('one run', [0, 2], [0.4, 0.8])], 'title', 'Recall@1')
    assert [line.get_label() for line in ax.lines] == ['mean', 'one run']
    [band] = ax.collections
    low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert (low, high) == pytest.approx((0.4, 0.7))
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ('title', 'epoch', 'Recall@1')


def test_plot_runs_as_a_script_from_another_folder(tmp_path):
    """`python utils/plot.py` finds the project's modules wherever it is started."""
    write_metrics(tmp_path, '')
    output = tmp_path / 'curves.png'
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'utils', 'plot.py'),
                             str(tmp_path), '-o', str(output)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert output.read_bytes()[:4] == b'\x89PNG'
