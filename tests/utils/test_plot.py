"""utils/plot.py on damaged input: a metrics file cut short, an unwritable output."""
import json

from utils import plot


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
