"""The comparison harness (compare.py): the summary recomputed from run folders with known
metrics, and a tiny grid on tiny Glyphs that is killed, rerun and completed."""
import csv
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from scipy.stats import t

import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(out, loss, mmsi, pair_weights, seed, r1_by_epoch, vary=None, epochs=None):
    """A run folder holding metrics.jsonl (R@1 as given, MAP@R = R@1 / 4, R-Precision =
    R@1 / 2) and its cell descriptor."""
    cell = compare.Cell.make(loss, mmsi, pair_weights, vary or {})
    name = compare.run_name(cell, seed)
    folder = out / 'runs' / name
    folder.mkdir(parents=True)
    rows = []
    for epoch, r1 in r1_by_epoch.items():
        rows.append({'epoch': epoch, 'loss': 1.0, 'R@1': r1, 'MAP@R': r1 / 4,
                     'R-Precision': r1 / 2})
    (folder / 'metrics.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
    descriptor = dict(loss=loss, mmsi=mmsi, pair_weights=pair_weights, vary=vary or {},
                      seed=seed, name=name, flags=[],
                      epochs=max(r1_by_epoch) if epochs is None else epochs)
    (out / 'runs' / f'{name}.cell.json').write_text(json.dumps(descriptor))


def test_summary_from_known_metrics(tmp_path):
    plain = {0: [0.5, 0.6, 0.55], 1: [0.5, 0.62, 0.60], 2: [0.5, 0.64, 0.65]}  # seed: epochs 0-2
    mmsi = {0: [0.5, 0.70, 0.52], 1: [0.5, 0.58, 0.61], 2: [0.5, 0.61, 0.60]}
    for seed in range(3):
        write_run(tmp_path, 'MS', 0, 'none', seed, dict(enumerate(plain[seed])))
        write_run(tmp_path, 'MS', 1, 'gradient', seed, dict(enumerate(mmsi[seed])))
    write_run(tmp_path, 'MS', 1, 'gradient', 3, {0: 0.5, 1: 0.9},
              epochs=2)  # incomplete: left out
    write_run(tmp_path, 'Triplet', 1, 'gradient', 0, {0: 0.5, 1: 0.7, 2: 0.75},
              vary={'val_batch_size': 40})  # one seed, no plain partner
    compare.record_command(str(tmp_path), 'python compare.py ...')
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
    assert '    python compare.py ...' in markdown
    assert f'{mean:+.4f} ± {half:.4f}' in markdown
    assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


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


def test_the_summary_reads_a_metrics_file_cut_short_without_a_traceback(tmp_path):
    """A run's metrics.jsonl cut short (a copy taken while it was written) is read to its last
    complete line, with a warning; the harness runs from another folder than the project's."""
    for seed in (0, 1):
        write_run(tmp_path, 'MS', 0, 'none', seed, {0: 0.5, 1: 0.6 + seed / 10})
    metrics = tmp_path / 'runs' / 'MS_mmsi0_none_seed1' / 'metrics.jsonl'
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "loss": 0.9, "R@')
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'compare.py'),
                             '--summarise', str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f'warning: {metrics}: the last line is incomplete; read the 2 complete line(s) '
        f'before it']
    [row] = csv.DictReader(open(tmp_path / 'summary.csv'))
    assert row['n'] == '2' and float(row['R@1_mean']) == pytest.approx(0.65)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_tiny_grid_killed_then_rerun_completes_without_rerunning_finished_runs(
        glyphs_root, tmp_path):
    out = tmp_path / 'grid'
    command = [sys.executable, os.path.join(ROOT, 'compare.py'), '--out', str(out),
               '--losses', 'MS', '--mmsi', '0', '1', '--seeds', '0', '1',
               '--protocol', 'scratch', '--jobs', '2', '--threads', '1', '--',
               '--data', 'glyphs', '--data_root', glyphs_root, '--width', '64',
               '--origin_width', '72', '--batch_size', '6', '--num_instances', '3',
               '--val_batch_size', '3', '--epochs', '1', '--save_step', '1', '--nThreads', '0',
               '--progress', '0', '--print_freq', '1', '--eval_batch_size', '24', '--lr', '1e-4',
               '--pretrained', 'none']
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    finished = out / 'runs' / 'MS_mmsi0_none_seed0' / compare.DONE
    deadline = time.time() + 300
    while not finished.exists():
        assert first.poll() is None, first.communicate()[0]
        assert time.time() < deadline, 'timed out'
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the harness and the run it had started
    first.wait()
    kept = {path: digest(path) for path in (finished.parent / 'metrics.jsonl',
                                            finished.parent / 'last.pth.tar')}

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert 'skip MS_mmsi0_none_seed0: finished' in second.stdout
    assert 'start MS_mmsi0_none_seed0' not in second.stdout
    assert {path: digest(path) for path in kept} == kept
    summary = {(row['mmsi']): row for row in csv.DictReader(open(out / 'summary.csv'))}
    assert summary['0']['n'] == summary['1']['n'] == '2'
    assert summary['1']['pair_weights'] == 'official' and summary['1']['n_paired'] == '2'
    assert summary['1']['diff_R@1_mean'] != '' and summary['1']['R@1_ci95'] != ''
    assert (out / 'curves.png').exists() and (out / 'summary.md').exists()
    # the command is named once in the summary, although it ran twice
    assert len(compare.read_commands(str(out))) == 1
    assert (out / 'summary.md').read_text().count('compare.py --out') == 1
