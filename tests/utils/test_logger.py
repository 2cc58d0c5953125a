"""Reading metrics.jsonl back."""
import json

import pytest

from common.errors import InputError
from utils.logger import read_metrics


ROWS = [{'epoch': 0, 'R@1': 0.5}, {'epoch': 1, 'loss': 1.5, 'R@1': 0.6}]


def test_read_metrics_reads_a_file_cut_short_to_its_last_complete_line(tmp_path, capsys):
    path = tmp_path / 'metrics.jsonl'
    path.write_text(''.join(json.dumps(row) + '\n' for row in ROWS) + '{"epoch": 2, "lo')
    assert read_metrics(str(path)) == ROWS
    assert capsys.readouterr().err.strip().splitlines() == [
        f'warning: {path}: the last line is incomplete; read the 2 complete line(s) before it']
    path.write_text(''.join(json.dumps(row) + '\n' for row in ROWS) + '\n')  # intact
    assert read_metrics(str(path)) == ROWS
    assert capsys.readouterr().err == ''


def test_read_metrics_refuses_a_damaged_line_before_the_last(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_text(json.dumps(ROWS[0]) + '\n\n[1, 2]\n' + json.dumps(ROWS[1]) + '\n')
    with pytest.raises(InputError, match=r'metrics.jsonl, line 3: not a JSON object: .\[1, 2\]'):
        read_metrics(str(path))
