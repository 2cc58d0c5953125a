"""harness/identity.py: a rerun that changes a finished trial's flags is refused with one line
and nothing written; --extend continues the trials to a higher --epochs."""
import json

import compare
from harness.results import read_rows
from harness.trial import DONE
from harness_testing import copy_grid, digest


def test_changed_flags_are_refused_and_extend_continues_the_trials(
        finished_grid, tmp_path, capsys):
    out = tmp_path / 'grid'
    arguments = ['--out', str(out), *copy_grid(finished_grid, out)]
    kept = {path: digest(path) for path in out.glob('*/*.cell.json')}

    def refused(extra, *before_dash):
        split = arguments.index('--')
        status = compare.main(arguments[:split] + list(before_dash) + arguments[split:] + extra)
        captured = capsys.readouterr()
        assert status == 2 and len(captured.err.splitlines()) == 1, captured
        assert 'start' not in captured.out
        return captured.err

    assert refused(['--lr', '0.01']).startswith(
        'error: runs/MS_mmsi0_none_seed0 was trained with other flags: --lr 0.0001 -> 0.01; '
        'rerun with its flags or choose another --out (and 1 other run(s))')
    assert '--epochs 1 -> 2' in refused(['--epochs', '2']) and '--extend' in refused(
        ['--epochs', '2'])
    assert 'a stage-1 run is never extended' in refused([], '--extend', '--stage1_epochs', '2')
    assert '--lr 0.0001 -> 0.01' in refused(['--epochs', '2', '--lr', '0.01'], '--extend')
    assert {path: digest(path) for path in kept} == kept
    assert all((out / 'runs' / name / DONE).exists()
               for name in ('MS_mmsi0_none_seed0', 'MS_mmsi1_official_seed0'))

    extend = arguments[:arguments.index('--')] + ['--extend'] + arguments[
        arguments.index('--'):] + ['--epochs', '2']
    assert compare.main(extend) == 0
    captured = capsys.readouterr()
    assert 'skip MS_seed0: finished' in captured.out, captured
    for name in ('MS_mmsi0_none_seed0', 'MS_mmsi1_official_seed0'):
        assert f'start {name} (resuming)' in captured.out
        epochs = [row['epoch'] for row in read_rows(out / 'runs' / name) if 'R@1' in row]
        assert epochs == [1, 2]
        assert json.loads((out / 'runs' / f'{name}.cell.json').read_text())['epochs'] == 2
    markdown = (out / 'summary.md').read_text()
    trained_by = markdown.split('Trained by:\n\n')[1].split('\n\n')[0].splitlines()
    assert len(trained_by) == 2 and '--extend' in trained_by[1], markdown
    assert 'missing' not in markdown
