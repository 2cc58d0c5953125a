"""harness/supervision.py: real MMSI_train.py trainings on tiny Glyphs, stopped by signals,
orphaned by a killed harness and waited for, a second harness on the same folder refused, every
stage 1 failing, and a relative --out from another folder. Docs: docs/reliability.md, "The
comparison harness"."""
import csv
import fcntl
import os
import shutil
import signal

import compare
from harness import trial
from harness.trial import DONE
from harness_testing import (GATE_MODULE, RELATIVE_OUT, ROOT, TIMEOUT, alive, gated_trainings,
                             start_harness, tiny_flags, wait_for)


def test_signals_stop_the_training_which_saves_and_a_rerun_waits_for_an_orphan_then_completes(
        glyphs_root, tmp_path, harnesses):
    """SIGTERM to the harness alone, SIGTERM to its process group, SIGINT: each time the harness
    passes the signal on to its training, which saves at the next iteration boundary and ends,
    and exits 128 + signal with one line saying how to resume; the rerun continues the
    training. Then the harness is SIGKILLed, leaving its training running: the rerun waits for
    it instead of deleting or sharing its folder, and completes the grid."""
    started, gates = harnesses
    out, gate = tmp_path / 'grid', tmp_path / 'gate'
    gates.append(gate)
    env = dict(os.environ, HARNESS_GATE=str(gate))
    arguments = ['--out', str(out), '--losses', 'Gated', '--mmsi', '0', '--seeds', '0',
                 '--protocol', 'scratch', '--threads', '1', '--',
                 *tiny_flags(glyphs_root, epochs=2), '--loss_module', GATE_MODULE]
    folder, name = out / 'runs' / 'Gated_mmsi0_none_seed0', 'Gated_mmsi0_none_seed0'

    def start(output):
        started.append(start_harness(arguments, output, env=env))
        return started[-1]

    for step, (target, signum) in enumerate((('harness', signal.SIGTERM),
                                             ('group', signal.SIGTERM),
                                             ('harness', signal.SIGINT)), 1):
        output = tmp_path / f'harness{step}.txt'
        harness = start(output)
        [training] = gated_trainings(gate, 1, harness, output)
        (os.killpg if target == 'group' else os.kill)(harness.pid, signum)
        assert harness.wait(timeout=TIMEOUT) == 128 + signum, output.read_text()
        text = output.read_text()
        assert 'Traceback' not in text and 'FAILED' not in text, text
        assert f'{signum.name} received: 1 training(s) asked to save and stop' in text, text
        assert f'[1/1] stopped {name} ({signum.name}): its last checkpoint is kept' in text
        assert [line for line in text.splitlines() if 'rerun the same command' in line] == [
            f'stopped by {signum.name}: to resume, rerun the same command: python compare.py '
            + ' '.join(arguments)], text
        assert not alive(training)
        assert (folder / 'last.pth.tar').exists() and not (folder / DONE).exists()
        console = (out / 'console' / f'{name}.txt').read_text()
        # one iteration further each time: each stop saved where it was, each rerun resumed
        assert console.count('stopped after epoch 1 iteration') == step, console

    # A harness killed outright leaves its training running (holding its folder's lock).
    output = tmp_path / 'killed.txt'
    harness = start(output)
    [orphan] = gated_trainings(gate, 1, harness, output)
    os.kill(harness.pid, signal.SIGKILL)
    harness.wait(timeout=TIMEOUT)
    assert alive(orphan)
    output = tmp_path / 'rerun.txt'
    rerun = start(output)
    waiting = f'waiting for {name}: another training holds it'
    wait_for(lambda: waiting in output.read_text(), 'the waiting line', rerun, output)
    # untouched: neither deleted nor trained in by a second training
    assert (folder / 'last.pth.tar').exists() and (folder / 'log.txt').exists()
    assert f'start {name}' not in output.read_text()
    gate.touch()  # the orphan finishes; then the rerun takes the folder over
    assert rerun.wait(timeout=TIMEOUT) == 0, output.read_text()
    text = output.read_text()
    assert text.count(waiting) == 1 and f'start {name} (resuming)' in text, text
    assert 'FAILED' not in text and f'summary: {out / "summary.md"}' in text
    [row] = csv.DictReader(open(out / 'summary.csv'))
    assert (row['loss'], row['n']) == ('Gated', '1')
    # one command trained the trial, five times over: it is named once
    assert (out / 'summary.md').read_text().count('compare.py --out') == 1


def test_a_second_harness_on_the_same_out_is_refused_at_once(glyphs_root, tmp_path, capsys):
    out = tmp_path / 'grid'
    out.mkdir()
    with open(out / 'harness.lock', 'a') as lock:  # as a harness at work there holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status = compare.main(['--out', str(out), '--losses', 'MS', '--mmsi', '0', '--seeds', '0',
                               '--protocol', 'scratch', '--', *tiny_flags(glyphs_root)])
    assert status == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f'error: --out {out} is in use by another compare.py; wait for it to end or choose '
        f'another --out'] and captured.out == ''
    assert sorted(os.listdir(out)) == ['harness.lock', 'runs'] and not os.listdir(out / 'runs')


def test_every_stage1_failing_is_one_line_and_no_summary(glyphs_root, tmp_path, capsys,
                                                         monkeypatch):
    failing = tmp_path / 'failing_trainer.py'
    failing.write_text('import sys\nsys.exit(1)\n')
    monkeypatch.setattr(trial, 'TRAINER', str(failing))
    out = tmp_path / 'out'
    assert compare.main(['--out', str(out), '--losses', 'MS', '--seeds', '0', '1', '--threads',
                         '1', '--', *tiny_flags(glyphs_root)]) == 1
    captured = capsys.readouterr()
    assert 'summary' not in captured.out and 'FAILED MS_seed1 (exit 1)' in captured.out
    assert captured.err.splitlines() == [
        f'error: every stage-1 run failed (see {out / "console"}): no cell could start; '
        f'nothing to summarise']


def test_a_relative_out_from_another_folder_keeps_every_file_there(finished_grid, tmp_path,
                                                                   capsys, monkeypatch):
    base, arguments, text = finished_grid
    out = base / RELATIVE_OUT
    assert f'output in {out}' in text and f'summary: {out / "summary.md"}' in text
    cells = ['MS_mmsi0_none_seed0', 'MS_mmsi1_official_seed0']
    for folder in ['stage1/MS_seed0'] + [f'runs/{cell}' for cell in cells]:
        assert (out / folder / 'last.pth.tar').exists() and (out / folder / DONE).exists()
        assert (out / 'console' / f'{os.path.basename(folder)}.txt').exists()
    # --keep_checkpoints last: the cells' epoch checkpoints are gone (the extend test below
    # continues from last.pth.tar), the stage-1 checkpoint the cells start from is kept.
    assert [p.name for p in (out / 'stage1' / 'MS_seed0').glob('ckp_ep*')] == ['ckp_ep1.pth.tar']
    assert not any((out / 'runs' / cell / 'ckp_ep1.pth.tar').exists() for cell in cells)
    for cell in cells:  # fine-tuned from the stage-1 checkpoint, by its absolute path
        log = (out / 'runs' / cell / 'log.txt').read_text()
        assert f'--pretrained {out}/stage1/MS_seed0/ckp_ep1.pth.tar' in log
        assert f'--save_dir {out}/runs/{cell}' in log

    # Rerun from another folder on a copy: nothing trains, and a command that trained nothing
    # is not named among those that trained the trials.
    shutil.copytree(out, tmp_path / RELATIVE_OUT, symlinks=True)
    monkeypatch.chdir(tmp_path)
    assert compare.main([arg if arg != '2' else '1' for arg in arguments]) == 0  # --jobs 1
    captured = capsys.readouterr()
    assert 'start' not in captured.out, captured
    assert all(f'skip {name}: finished' in captured.out for name in ['MS_seed0'] + cells)
    assert f'summary: {tmp_path / RELATIVE_OUT / "summary.md"}' in captured.out
    markdown = (tmp_path / RELATIVE_OUT / 'summary.md').read_text()
    assert '--jobs 2' in markdown and '--jobs 1' not in markdown
    assert not os.path.exists(os.path.join(ROOT, RELATIVE_OUT))
