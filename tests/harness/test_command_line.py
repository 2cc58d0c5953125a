"""harness/command_line.py and compare.py's checks of its input: each bad option, flag or
combination is one error line (exit 2) before anything is written."""
import pytest

import compare
from harness_testing import tiny_flags


def test_select_needs_held_out_classes(tmp_path, capsys):
    out = tmp_path / 'grid'
    assert compare.main(['--out', str(out), '--losses', 'MS', '--select', 'lr=1e-5,3e-5', '--',
                         '--data', 'glyphs', '--epochs', '1']) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'error: --select needs --holdout_classes N among the training flags (after --): the '
        'values and the epoch are chosen on held-out training classes, never on the test '
        'classes']
    assert not out.exists()


def test_bad_flags_are_refused_before_any_trial(tmp_path, capsys):
    out = tmp_path / 'out'
    assert compare.main(['--out', str(out), '--losses', 'Hinge', '--', '--data', 'glyphs']) == 2
    assert "--loss 'Hinge' is unknown" in capsys.readouterr().err
    assert compare.main(['--out', str(out), '--vary', 'val_batch=10,40']) == 2
    assert '--vary val_batch: not a training flag' in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize('harness_flags, message', [
    (['--jobs', '0'], "argument --jobs: expected a finite number at least 1, got '0'"),
    (['--jobs', '-1'], "argument --jobs: expected a finite number at least 1, got '-1'"),
    (['--threads', '0'], "argument --threads: expected a finite number at least 1, got '0'"),
    (['--stage1_epochs', '-2'], 'argument --stage1_epochs: expected a finite number at least 1'),
    (['--losses', 'MS', 'MS'], '--losses: MS is given twice'),
    (['--seeds', '0', '0'], '--seeds: 0 is given twice'),
    (['--mmsi', '1', '1'], '--mmsi: 1 is given twice'),
    (['--vary', 'lr=1e-5,1e-5'], '--vary lr: 1e-5 is given twice'),
    (['--vary', 'lr=1e-5', '--vary', 'lr=1e-4'], '--vary lr: given twice'),
    (['--vary', 'lr=1e-5', '--select', 'lr=1e-4,3e-4'],
     '--vary lr and --select lr: a flag is either varied or selected, not both'),
    (['--select', 'lr=1e-5,1e-5'], '--select lr: 1e-5 is given twice'),
    (['--', '--batch_size', '7'],
     'stage1/MS_seed0: --batch_size 7 must be a multiple of the number of instances'),
    (['--losses', 'SupCon', 'MS', '--', '--loss_param', 'temperature=0.2'],
     '--loss_param temperature: MS has no such parameter'),
])
def test_bad_harness_input_is_one_line_before_anything_is_written(
        glyphs_root, tmp_path, capsys, harness_flags, message):
    out = tmp_path / 'out'
    split = harness_flags.index('--') if '--' in harness_flags else len(harness_flags)
    status = compare.main(['--out', str(out), *harness_flags[:split], '--',
                           *tiny_flags(glyphs_root), *harness_flags[split + 1:]])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ''
    [line] = captured.err.splitlines()
    assert line.startswith('error: ') and message in line, line
    assert not out.exists()
