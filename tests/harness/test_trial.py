"""harness/trial.py: what --keep_checkpoints last deletes from a finished trial's folder, and
what it never deletes."""
import fcntl
import os
from pathlib import Path

from harness.command_line import build_parser
from harness.grid import plan


def test_keep_checkpoints_last_never_deletes_what_a_trial_continues_or_starts_from(
        tmp_path, capsys):
    options = build_parser().parse_args(['--out', str(tmp_path), '--losses', 'MS',
                                         '--mmsi', '0', '--seeds', '0', '--stage1_epochs', '2'])
    (stage1,), (cell,) = plan(options, ['--data', 'glyphs', '--epochs', '3'])

    def fill(trial, names):
        os.makedirs(trial.dir, exist_ok=True)
        for name in names:
            (Path(trial.dir) / name).write_bytes(b'x')

    epochs = ['ckp_ep1.pth.tar', 'ckp_ep2.pth.tar', 'ckp_ep3.pth.tar']
    fill(cell, epochs + ['log.txt', 'metrics.jsonl', 'last.pth.tar'])
    fill(stage1, epochs[:2] + ['last.pth.tar', 'ckp_ep2.pth.tar.tmp'])
    for trial in (cell, stage1):
        trial.prune_checkpoints()
    assert sorted(os.listdir(cell.dir)) == ['last.pth.tar', 'log.txt', 'metrics.jsonl']
    # the stage-1 checkpoint the cells fine-tune from stays; a file not a checkpoint too
    assert sorted(os.listdir(stage1.dir)) == ['ckp_ep2.pth.tar', 'ckp_ep2.pth.tar.tmp',
                                              'last.pth.tar']
    # without last.pth.tar the epoch checkpoints are all the trial could continue from: kept
    os.remove(Path(cell.dir) / 'last.pth.tar')
    fill(cell, epochs)
    cell.prune_checkpoints()
    assert sorted(os.listdir(cell.dir)) == sorted(epochs + ['log.txt', 'metrics.jsonl'])
    assert f'warning: {cell.name}: no last.pth.tar' in capsys.readouterr().out
    # a training that holds the folder (its log's lock) keeps everything, last.pth.tar or not
    fill(cell, ['last.pth.tar'])
    with open(Path(cell.dir) / 'log.txt', 'a') as log:
        fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)
        cell.prune_checkpoints()
    assert sorted(os.listdir(cell.dir)) == sorted(epochs + ['last.pth.tar', 'log.txt',
                                                           'metrics.jsonl'])
    assert f'warning: {cell.name}: a training holds its folder' in capsys.readouterr().out
    cell.prune_checkpoints()  # let go: pruned
    assert sorted(os.listdir(cell.dir)) == ['last.pth.tar', 'log.txt', 'metrics.jsonl']
