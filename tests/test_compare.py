"""The comparison harness (compare.py): the summary recomputed from run folders with known
metrics; tiny grids on tiny Glyphs, trained by real MMSI_train.py subprocesses, that are stopped
by signals, killed, rerun from another folder, rerun with other flags and extended; the
harness's input checks. Docs: docs/reliability.md, "The comparison harness".

The trainings of the signal tests use the loss of tests/harness_gate_loss.py, which holds them
in their loss until the test has sent its signal: no test depends on how fast a training is."""
import csv
import fcntl
import glob
import hashlib
import json
import math
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import pytest
from scipy.stats import t

import compare
from common.errors import InputError
from tiny_inshop import make_inshop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(out, loss, mmsi, pair_weights, seed, r1_by_epoch, vary=None, epochs=None,
              trained_by=(), holdout_by_epoch=None, select=()):
    """A run folder holding metrics.jsonl (R@1 as given, MAP@R = R@1 / 4, R-Precision =
    R@1 / 2; `holdout/MAP@R` as given) and its cell descriptor (`select`: its --select
    flags)."""
    cell = compare.Cell.make(loss, mmsi, pair_weights, vary or {})
    name = compare.run_name(cell, seed)
    folder = out / 'runs' / name
    folder.mkdir(parents=True)
    rows = []
    for epoch, r1 in r1_by_epoch.items():
        rows.append({'epoch': epoch, 'loss': 1.0, 'R@1': r1, 'MAP@R': r1 / 4,
                     'R-Precision': r1 / 2})
        if holdout_by_epoch is not None:
            rows[-1]['holdout/MAP@R'] = holdout_by_epoch[epoch]
    (folder / 'metrics.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
    descriptor = dict(loss=loss, mmsi=mmsi, pair_weights=pair_weights, vary=vary or {},
                      seed=seed, name=name, flags=[], trained_by=list(trained_by),
                      epochs=max(r1_by_epoch) if epochs is None else epochs, select=list(select))
    (out / 'runs' / f'{name}.cell.json').write_text(json.dumps(descriptor))


def test_select_picks_the_argmax_of_the_seed_mean_holdout_map_over_values_and_epochs(tmp_path):
    """Two learning rates x epochs 0-2 x 2 seeds per cell, hand-written: each cell is reported
    at its own argmax of the seed-mean holdout MAP@R, and Δ pairs each at its own choice."""
    holdout = {  # (mmsi, lr): seed -> holdout MAP@R at epochs 0, 1, 2
        (0, '1e-5'): {0: [0.10, 0.20, 0.25], 1: [0.10, 0.22, 0.27]},  # best: epoch 2 (0.26)
        (0, '3e-5'): {0: [0.10, 0.30, 0.20], 1: [0.10, 0.24, 0.21]},  # best: epoch 1 (0.27)
        (1, '1e-5'): {0: [0.10, 0.26, 0.21], 1: [0.10, 0.20, 0.31]},  # best: epoch 2 (0.26)
        (1, '3e-5'): {0: [0.10, 0.18, 0.19], 1: [0.10, 0.19, 0.20]}}
    r1 = {key: {seed: [0.5 + 0.01 * seed + 0.1 * e + (0.05 if key[1] == '3e-5' else 0)
                       for e in range(3)] for seed in (0, 1)} for key in holdout}
    for (mmsi, lr), seeds in holdout.items():
        for seed, values in seeds.items():
            write_run(tmp_path, 'MS', mmsi, 'gradient' if mmsi else 'none', seed,
                      dict(enumerate(r1[mmsi, lr][seed])), vary={'lr': lr},
                      holdout_by_epoch=dict(enumerate(values)), select=['lr'])
    table = compare.summarise(str(tmp_path))
    rows = {row['mmsi']: row for row in table}
    assert len(table) == 2 and 'lr' not in rows[0]
    assert (rows[0]['chosen_lr'], rows[0]['chosen_epoch']) == ('3e-5', 1)
    assert rows[0]['holdout_MAP@R'] == pytest.approx(0.27)
    assert (rows[1]['chosen_lr'], rows[1]['chosen_epoch']) == ('1e-5', 2)
    plain_r1 = [r1[0, '3e-5'][seed][1] for seed in (0, 1)]
    mmsi_r1 = [r1[1, '1e-5'][seed][2] for seed in (0, 1)]
    assert rows[0]['R@1_mean'] == pytest.approx(sum(plain_r1) / 2)
    assert rows[1]['R@1_mean'] == pytest.approx(sum(mmsi_r1) / 2)
    assert rows[1]['diff_R@1_mean'] == pytest.approx(
        sum(m - p for m, p in zip(mmsi_r1, plain_r1)) / 2)
    summary = (tmp_path / 'summary.md').read_text()
    assert 'Each cell is tuned: the values of lr and the epoch with the highest holdout MAP@R' \
        in summary and '| chosen lr | epoch | holdout MAP@R |' in summary
    # Every value tried, by epoch (the plateau check), and its curves.
    by_epoch = summary.split('Seed-mean holdout/MAP@R at each evaluation')[1]
    assert '| cell | ep 0 | ep 1 | ep 2 |' in by_epoch
    for (mmsi, lr), seeds in holdout.items():
        label = f'MS {"MMSI gradient" if mmsi else "plain"} lr={lr} (n=2)'
        means = ' | '.join(f'{(seeds[0][e] + seeds[1][e]) / 2:.4f}' for e in range(3))
        assert f'| {label} | {means} |' in by_epoch, by_epoch
    assert (tmp_path / 'holdout_curves.png').stat().st_size > 0


def test_select_needs_held_out_classes(tmp_path, capsys):
    out = tmp_path / 'grid'
    assert compare.main(['--out', str(out), '--losses', 'MS', '--select', 'lr=1e-5,3e-5', '--',
                         '--data', 'glyphs', '--epochs', '1']) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'error: --select needs --holdout_classes N among the training flags (after --): the '
        'values and the epoch are chosen on held-out training classes, never on the test '
        'classes']
    assert not out.exists()


def test_without_select_the_best_epoch_is_chosen_on_the_holdout_when_there_is_one(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, 'MS', 0, 'none', seed, {0: 0.5, 1: 0.9, 2: 0.6},
                  holdout_by_epoch={0: 0.1, 1: 0.2, 2: 0.3})
        # MMSI: the seed-mean holdout MAP@R is highest at epoch 1 (0.25 against 0.2)
        write_run(tmp_path, 'MS', 1, 'gradient', seed, {0: 0.5, 1: 0.7 + 0.1 * seed, 2: 0.4},
                  holdout_by_epoch={0: 0.1, 1: 0.2 + 0.1 * seed, 2: 0.3 - 0.2 * seed})
    plain, mmsi = compare.summarise(str(tmp_path))
    assert plain['best_epoch_mean'] == 2 and plain['best_R@1_mean'] == pytest.approx(0.6)
    summary = (tmp_path / 'summary.md').read_text()
    assert 'chosen on held-out training classes' in summary
    assert '| MS plain (n=2) | 0.1000 | 0.2000 | 0.3000 |' in summary
    assert (tmp_path / 'holdout_curves.png').exists()
    # The table at each cell's seed-mean choice: plain at epoch 2 (R@1 0.6), MMSI at epoch 1
    # (R@1 0.7 and 0.8), Δ R@1 = 0.15 with the t interval of (0.1, 0.2).
    chosen = summary.split('At the epoch chosen on the held-out classes')[1]
    half = t.ppf(0.975, 1) * 0.05  # s = 0.0707 of two values, / sqrt(2)
    assert '| MS | 0 | none | 2 | 0.3000 | 2 | 0.6000 ± 0.0000 |' in chosen, chosen
    assert f'| MS | 1 | gradient | 1 | 0.2500 | 2 | 0.7500 ± {half:.4f} |' in chosen, chosen
    assert f'| +0.1500 ± {half:.4f} |' in chosen, chosen


def test_summary_from_known_metrics(tmp_path):
    plain = {0: [0.5, 0.6, 0.55], 1: [0.5, 0.62, 0.60], 2: [0.5, 0.64, 0.65]}  # seed: epochs 0-2
    mmsi = {0: [0.5, 0.70, 0.52], 1: [0.5, 0.58, 0.61], 2: [0.5, 0.61, 0.60]}
    for seed in range(3):
        write_run(tmp_path, 'MS', 0, 'none', seed, dict(enumerate(plain[seed])),
                  trained_by=['python compare.py ...'])
        write_run(tmp_path, 'MS', 1, 'gradient', seed, dict(enumerate(mmsi[seed])))
    write_run(tmp_path, 'MS', 1, 'gradient', 3, {0: 0.5, 1: 0.9}, epochs=2,
              trained_by=['python compare.py --not-summarised'])  # incomplete: left out
    write_run(tmp_path, 'Triplet', 1, 'gradient', 0, {0: 0.5, 1: 0.7, 2: 0.75},
              vary={'val_batch_size': 40})  # one seed, no plain partner
    table = compare.summarise(str(tmp_path))

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


def test_a_fine_tuned_cell_takes_its_epoch_0_from_stage_1(tmp_path):
    stage1 = tmp_path / 'stage1' / 'MS_seed0'
    stage1.mkdir(parents=True)
    stage1_rows = [{'epoch': 4, 'loss': 2.0, 'R@1': 0.3, 'MAP@R': 0.1, 'R-Precision': 0.2,
                    'eval_seconds': 9.0},
                   {'epoch': 8, 'loss': 1.0, 'R@1': 0.8, 'MAP@R': 0.4, 'R-Precision': 0.5}]
    (stage1 / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in stage1_rows))
    for mmsi, form, r1 in ((0, 'none', {1: 0.6, 2: 0.7}), (1, 'gradient', {2: 0.75})):
        write_run(tmp_path, 'MS', mmsi, form, 0, r1)
        name = compare.run_name(compare.Cell('MS', mmsi, form), 0)
        descriptor_path = tmp_path / 'runs' / f'{name}.cell.json'
        descriptor = json.loads(descriptor_path.read_text())
        descriptor['start'] = 'stage1/MS_seed0'
        descriptor_path.write_text(json.dumps(descriptor))
    cells = compare.collect(str(tmp_path))
    rows = cells[compare.Cell('MS', 0, 'none')][0]
    assert rows[0] == {'epoch': 0, 'R@1': 0.8, 'MAP@R': 0.4, 'R-Precision': 0.5}
    table = {row['mmsi']: row for row in compare.summary_rows(cells)[0]}
    assert table[0]['best_R@1_mean'] == 0.8 and table[0]['best_epoch_mean'] == 0
    assert table[1]['R@1_mean'] == 0.75 and table[1]['diff_R@1_mean'] == pytest.approx(0.05)
    # a run that evaluated its epoch 0 itself keeps its own
    assert compare.starting_rows(str(stage1), [{'epoch': 0, 'R@1': 0.1}]) == [
        {'epoch': 0, 'R@1': 0.1}]


def test_keep_checkpoints_last_never_deletes_what_a_run_continues_or_starts_from(
        tmp_path, capsys):
    options = compare.build_parser().parse_args(['--out', str(tmp_path), '--losses', 'MS',
                                                 '--mmsi', '0', '--seeds', '0',
                                                 '--stage1_epochs', '2'])
    (stage1,), (cell,) = compare.plan(options, ['--data', 'glyphs', '--epochs', '3'])

    def fill(run, names):
        os.makedirs(run.dir, exist_ok=True)
        for name in names:
            (Path(run.dir) / name).write_bytes(b'x')

    epochs = ['ckp_ep1.pth.tar', 'ckp_ep2.pth.tar', 'ckp_ep3.pth.tar']
    fill(cell, epochs + ['log.txt', 'metrics.jsonl', 'last.pth.tar'])
    fill(stage1, epochs[:2] + ['last.pth.tar', 'ckp_ep2.pth.tar.tmp'])
    for run in (cell, stage1):
        run.prune_checkpoints()
    assert sorted(os.listdir(cell.dir)) == ['last.pth.tar', 'log.txt', 'metrics.jsonl']
    # the stage-1 checkpoint the cells fine-tune from stays; a file not a checkpoint too
    assert sorted(os.listdir(stage1.dir)) == ['ckp_ep2.pth.tar', 'ckp_ep2.pth.tar.tmp',
                                              'last.pth.tar']
    # without last.pth.tar the epoch checkpoints are all the run could continue from: kept
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


def test_tables_list_the_values_of_a_flag_in_numeric_order():
    cells = [compare.Cell.make('MS', mmsi, 'gradient' if mmsi else 'none', {'lr': lr})
             for mmsi in (1, 0) for lr in ('3e-5', '1e-4', 'auto', '1e-5', '3e-4')]
    ordered = [(cell.mmsi, dict(cell.vary)['lr']) for cell in
               sorted(cells, key=compare.Cell.sort_key)]
    assert ordered == [(mmsi, lr) for mmsi in (0, 1)
                       for lr in ('1e-5', '3e-5', '1e-4', '3e-4', 'auto')]
    table = compare.epoch_table(compare.curve_series(
        {cell: {0: [{'epoch': 1, 'R@1': 0.5}]} for cell in cells}), 'R@1')
    labels = [line.split(' | ')[0] for line in table if line.startswith('| MS')]
    assert labels[:3] == ['| MS plain lr=1e-5 (n=1)', '| MS plain lr=3e-5 (n=1)',
                          '| MS plain lr=1e-4 (n=1)']


def test_grid_cells_resolve_pair_weights_and_vary():
    cells = compare.grid_cells(['MS', 'Triplet'], [0, 1], ['auto', 'official', 'gradient'],
                               [('val_batch_size', ['10', '40']), ('lr', ['1e-5'])],
                               vary_losses=['MS'])
    names = sorted(compare.run_name(cell, 0) for cell in cells)
    assert names == [
        'MS_mmsi0_none_seed0_lr1e-5',  # an MMSI-only axis does not multiply plain cells
        'MS_mmsi1_gradient_seed0_lr1e-5_val_batch_size10',
        'MS_mmsi1_gradient_seed0_lr1e-5_val_batch_size40',
        'MS_mmsi1_official_seed0_lr1e-5_val_batch_size10',
        'MS_mmsi1_official_seed0_lr1e-5_val_batch_size40',
        'Triplet_mmsi0_none_seed0', 'Triplet_mmsi1_gradient_seed0']  # auto = gradient


def test_bad_flags_are_refused_before_any_run(tmp_path, capsys):
    out = tmp_path / 'out'
    assert compare.main(['--out', str(out), '--losses', 'Hinge', '--', '--data', 'glyphs']) == 2
    assert "--loss 'Hinge' is unknown" in capsys.readouterr().err
    assert compare.main(['--out', str(out), '--vary', 'val_batch=10,40']) == 2
    assert '--vary val_batch: not a training flag' in capsys.readouterr().err
    assert not out.exists()


def test_the_finetune_protocol_starts_every_cell_from_its_seeds_stage1(tmp_path):
    options = compare.build_parser().parse_args(
        ['--out', str(tmp_path), '--losses', 'MS', 'Triplet', '--seeds', '3', '4',
         '--stage1_epochs', '5', '--stage1_lr', '2e-4'])
    stage1, runs = compare.plan(options, ['--data', 'glyphs', '--lr', '1e-5', '--epochs', '6'])
    assert [run.name for run in stage1] == ['MS_seed3', 'MS_seed4']
    for run in stage1:
        assert (run.args.loss, run.args.MMSI, run.args.pretrained, run.args.lr, run.args.epochs,
                run.args.save_step, run.args.seed, run.args.eval_first) == (
                    'MS', 0, 'none', 2e-4, 5, 5, run.seed, 0)
    # auto is the official form for MS and the gradient form for Triplet
    expected_forms = {'MS_mmsi0_none': (0, 'official'), 'MS_mmsi1_official': (1, 'official'),
                      'Triplet_mmsi0_none': (0, 'gradient'),
                      'Triplet_mmsi1_gradient': (1, 'gradient')}
    assert sorted(run.name for run in runs) == sorted(
        f'{cell}_seed{seed}' for seed in (3, 4) for cell in expected_forms)
    for run in runs:
        cell, seed = run.name.rsplit('_seed', 1)
        assert (run.args.loss, run.args.MMSI, run.args.pair_weights, run.args.seed) == (
            cell.split('_')[0], *expected_forms[cell], int(seed))
        expected = str(tmp_path / 'stage1' / f'MS_seed{seed}' / 'ckp_ep5.pth.tar')
        assert run.args.pretrained == expected
        assert (run.args.lr, run.args.epochs) == (1e-5, 6)
        # stage 1's last evaluation is the cell's epoch 0: not evaluated twice
        assert run.args.eval_first == 0 and run.describe()['start'] == f'stage1/MS_seed{seed}'
        # the descriptor the summary reads gives the cell back
        assert compare.Cell.from_descriptor(json.loads(json.dumps(run.describe()))) == run.cell


def test_the_summary_reads_a_metrics_file_cut_short_without_a_traceback(
        tmp_path, capsys, monkeypatch):
    """A run's metrics.jsonl cut short (a copy taken while it was written) is read to its last
    complete line, with a warning; --summarise takes a folder relative to where it runs."""
    for seed in (0, 1):
        write_run(tmp_path, 'MS', 0, 'none', seed, {0: 0.5, 1: 0.6 + seed / 10})
    metrics = tmp_path / 'runs' / 'MS_mmsi0_none_seed1' / 'metrics.jsonl'
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "loss": 0.9, "R@')
    monkeypatch.chdir(tmp_path)
    assert compare.main(['--summarise', '.']) == 0
    assert capsys.readouterr().err.splitlines() == [
        f'warning: {metrics}: the last line is incomplete; read the 2 complete line(s) '
        f'before it']
    [row] = csv.DictReader(open(tmp_path / 'summary.csv'))
    assert row['n'] == '2' and float(row['R@1_mean']) == pytest.approx(0.65)


# ---- helpers of the end-to-end tests ------------------------------------------------------------

GATE_MODULE = os.path.join(ROOT, 'tests', 'harness_gate_loss.py')
TIMEOUT = 300  # seconds; every wait below is for a condition, this only bounds a hang


def tiny_flags(glyphs_root, epochs=1):
    """Training flags of a tiny run on the Glyphs subset (conftest.glyphs_root)."""
    return ['--data', 'glyphs', '--data_root', glyphs_root, '--width', '64',
            '--origin_width', '72', '--batch_size', '6', '--num_instances', '3',
            '--val_batch_size', '3', '--epochs', str(epochs), '--save_step', '1',
            '--nThreads', '0', '--progress', '0', '--print_freq', '1',
            '--eval_batch_size', '24', '--lr', '1e-4', '--pretrained', 'none']


def start_harness(arguments, output, cwd=ROOT, env=None):
    """compare.py in a process group of its own, its output (stdout and stderr) to `output`."""
    with open(output, 'w') as f:
        return subprocess.Popen([sys.executable, os.path.join(ROOT, 'compare.py'), *arguments],
                                cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_for(condition, what, harness=None, output=None):
    """Poll `condition` until it holds; fail early when `harness` has exited."""
    deadline = time.time() + TIMEOUT
    while not condition():
        if harness is not None and harness.poll() is not None:
            pytest.fail(f'the harness exited ({harness.returncode}) before {what}:\n'
                        + (output.read_text() if output else ''))
        assert time.time() < deadline, f'timed out waiting for {what}'
        time.sleep(0.1)


def gated_trainings(gate, count, harness, output):
    """The pids of `count` trainings waiting at the gate of tests/harness_gate_loss.py."""
    markers = lambda: glob.glob(f'{gate}.waiting.*')  # noqa: E731
    wait_for(lambda: len(markers()) >= count, f'{count} training(s) at the gate', harness, output)
    pids = [int(marker.rsplit('.', 1)[1]) for marker in markers()]
    for marker in markers():
        os.remove(marker)
    return pids


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- signals, a killed harness, orphans ---------------------------------------------------------

@pytest.fixture
def harnesses():
    """Harness processes a test starts; any still running at its end (a failed test) is
    stopped, and the gate of tests/harness_gate_loss.py opened so that no training waits."""
    started, gates = [], []
    yield started, gates
    for gate in gates:
        gate.touch()
    for harness in started:
        if harness.poll() is None:
            os.killpg(harness.pid, signal.SIGTERM)
            harness.wait(timeout=TIMEOUT)


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
        assert (folder / 'last.pth.tar').exists() and not (folder / compare.DONE).exists()
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
    # one command trained the run, five times over: it is named once
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


# ---- a finished tiny grid: relative --out, changed flags, --extend -------------------------------

RELATIVE_OUT = 'harness_relative_out'  # also the folder that must not appear in the repository


@pytest.fixture(scope='module')
def finished_grid(glyphs_root, tmp_path_factory):
    """(folder the harness ran in, its arguments, output) of a finished fine-tuning grid (stage
    1 and an MS plain and an MMSI cell, one seed, one epoch each) trained from another folder
    than the repository with a relative --out, keeping only the checkpoints a cell starts or
    continues from. Tests copy it, never write into it."""
    base = tmp_path_factory.mktemp('relative')
    arguments = ['--out', RELATIVE_OUT, '--losses', 'MS', '--mmsi', '0', '1', '--seeds', '0',
                 '--stage1_epochs', '1', '--jobs', '2', '--threads', '1',
                 '--keep_checkpoints', 'last', '--',
                 *tiny_flags(glyphs_root)]
    output = base / 'harness.txt'
    try:
        status = start_harness(arguments, output, cwd=base).wait(timeout=TIMEOUT)
    finally:  # the old behaviour trained in the repository: do not leave that behind
        in_repository = os.path.join(ROOT, RELATIVE_OUT)
        split = os.path.exists(in_repository)
        shutil.rmtree(in_repository, ignore_errors=True)
    assert status == 0 and not split, output.read_text()
    return base, arguments, output.read_text()


def copy_grid(finished_grid, where):
    base, arguments, _ = finished_grid
    shutil.copytree(base / RELATIVE_OUT, where, symlinks=True)
    return arguments[2:]  # without --out


def test_a_relative_out_from_another_folder_keeps_every_file_there(finished_grid, tmp_path,
                                                                   capsys, monkeypatch):
    base, arguments, text = finished_grid
    out = base / RELATIVE_OUT
    assert f'output in {out}' in text and f'summary: {out / "summary.md"}' in text
    cells = ['MS_mmsi0_none_seed0', 'MS_mmsi1_official_seed0']
    for folder in ['stage1/MS_seed0'] + [f'runs/{cell}' for cell in cells]:
        assert (out / folder / 'last.pth.tar').exists() and (out / folder / compare.DONE).exists()
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
    # is not named among those that trained the runs.
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


def test_changed_flags_are_refused_and_extend_continues_the_runs(
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
    assert all((out / 'runs' / name / compare.DONE).exists()
               for name in ('MS_mmsi0_none_seed0', 'MS_mmsi1_official_seed0'))

    extend = arguments[:arguments.index('--')] + ['--extend'] + arguments[
        arguments.index('--'):] + ['--epochs', '2']
    assert compare.main(extend) == 0
    captured = capsys.readouterr()
    assert 'skip MS_seed0: finished' in captured.out, captured
    for name in ('MS_mmsi0_none_seed0', 'MS_mmsi1_official_seed0'):
        assert f'start {name} (resuming)' in captured.out
        epochs = [row['epoch'] for row in compare.read_rows(out / 'runs' / name) if 'R@1' in row]
        assert epochs == [1, 2]
        assert json.loads((out / 'runs' / f'{name}.cell.json').read_text())['epochs'] == 2
    markdown = (out / 'summary.md').read_text()
    trained_by = markdown.split('Trained by:\n\n')[1].split('\n\n')[0].splitlines()
    assert len(trained_by) == 2 and '--extend' in trained_by[1], markdown
    assert 'missing' not in markdown


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


# ---- input ----------------------------------------------------------------------------------------

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


def test_common_flags_are_checked_with_each_loss_of_the_grid(tmp_path, capsys):
    options = compare.build_parser().parse_args(
        ['--out', str(tmp_path), '--losses', 'SupCon', '--seeds', '0', '--stage1_epochs', '2'])
    stage1, runs = compare.plan(options, ['--data', 'glyphs', '--loss_param', 'temperature=0.2'])
    assert {run.args.loss_params['temperature'] for run in runs} == {0.2}
    # stage 1 is plain MS, which has no temperature: left out of its flags, with a note
    assert stage1[0].args.loss_params == {} and 'temperature' not in ' '.join(stage1[0].flags)
    assert 'note: stage 1 is plain MS, which has no temperature' in capsys.readouterr().err


def test_every_stage1_failing_is_one_line_and_no_summary(glyphs_root, tmp_path, capsys,
                                                         monkeypatch):
    failing = tmp_path / 'failing_trainer.py'
    failing.write_text('import sys\nsys.exit(1)\n')
    monkeypatch.setattr(compare, 'TRAINER', str(failing))
    out = tmp_path / 'out'
    assert compare.main(['--out', str(out), '--losses', 'MS', '--seeds', '0', '1', '--threads',
                         '1', '--', *tiny_flags(glyphs_root)]) == 1
    captured = capsys.readouterr()
    assert 'summary' not in captured.out and 'FAILED MS_seed1 (exit 1)' in captured.out
    assert captured.err.splitlines() == [
        f'error: every stage-1 run failed (see {out / "console"}): no cell could start; '
        f'nothing to summarise']


def test_summary_problems_are_one_error_line_and_never_announced(tmp_path, capsys):
    assert compare.main(['--summarise', str(tmp_path / 'absent')]) == 2
    assert capsys.readouterr().err == f'error: --summarise {tmp_path / "absent"}: no such folder\n'
    for seed in (0, 1, 2):  # seed 2 stopped after epoch 1 of 2; seed 3 never started
        write_run(tmp_path, 'MS', 1, 'official', seed, {1: 0.5, 2: 0.6} if seed < 2 else {1: 0.5},
                  epochs=2)
    cell = compare.Cell('MS', 1, 'official')
    descriptor = json.loads((tmp_path / 'runs' / f'{compare.run_name(cell, 0)}.cell.json')
                            .read_text())
    descriptor.update(seed=3, name=compare.run_name(cell, 3))
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


def test_the_data_checks_of_a_real_data_set_grid_wait_for_no_weights_file(tmp_path):
    """On a real data set (the tiny In-Shop) the cells fine-tune from stage-1 checkpoints that
    do not exist before the grid runs, and the trainer's weights rule must not refuse them
    while the harness checks the flags against the data; a bad batch size still is."""
    make_inshop(tmp_path)
    common = ['--data', 'shop', '--data_root', str(tmp_path), '--batch_size', '4',
              '--num_instances', '2', '--val_batch_size', '2', '--epochs', '1']
    options = compare.build_parser().parse_args(['--out', str(tmp_path / 'grid'),
                                                  '--seeds', '0'])
    stage1, runs = compare.plan(options, common)
    compare.check_with_data(stage1 + runs)  # no error: no weights file is looked for
    stage1, runs = compare.plan(options, common + ['--batch_size', '3'])
    with pytest.raises(InputError, match='--batch_size 3 must be a multiple'):
        compare.check_with_data(stage1 + runs)
