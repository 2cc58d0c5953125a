"""Does MMSI help? Train a grid of runs over losses, MMSI on/off, pair-weight forms and seeds,
then summarise them with 95% confidence intervals.

    python compare.py --out cmp --losses MS Triplet --mmsi 0 1 \\
        --pair_weights official gradient --seeds 0 1 2 --vary val_batch_size=10,40 \\
        -- --data glyphs --width 64 --pretrained none --epochs 6 ...

Everything after `--` is passed to every training run (MMSI_train.py). Runs go to
DIR/runs/<loss>_mmsi<0|1>_<pair_weights|none>_seed<k>[_<flag><value>...]/, one after another
or --jobs at a time. --protocol finetune (default): per seed, one plain MS run from the initial
weights (DIR/stage1/MS_seed<k>/) that every cell of that seed fine-tunes from, as `make demo`
does; --protocol scratch: every cell starts from the initial weights.
Rerunning the same command never reruns a finished run and resumes an interrupted one.

The summary is computed from the runs' metrics.jsonl files alone (`summarise`, also
`python compare.py --summarise DIR`): DIR/summary.csv, DIR/summary.md, DIR/curves.png.

A cell (`Cell`) is what the runs of one line of the summary share: loss, MMSI, pair-weight form
and the --vary values; its runs differ only by their seed.
"""
import argparse
import csv
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Tuple

from common.errors import InputError
from utils.args import flag_names, mmsi_only_flags
from utils.config import parse_args
from utils.logger import METRICS_FILE, read_metrics
from utils.plot import Series, plot_curves

ROOT = os.path.dirname(os.path.abspath(__file__))  # where MMSI_train.py is

METRICS = ('R@1', 'MAP@R', 'R-Precision')
RETRY_SECONDS = 8
DONE = 'finished'  # marker file the harness writes in a run folder after a clean exit
COMMANDS = 'commands.txt'  # the harness commands that trained the runs of a folder


# ---- the grid -----------------------------------------------------------------------------------

class Cell(NamedTuple):
    """One cell of the grid (hashable: the summary's key). `vary` holds the --vary values as
    sorted (flag, value) pairs, values as strings."""
    loss: str
    mmsi: int
    pair_weights: str  # 'official' or 'gradient'; 'none' when mmsi is 0
    vary: Tuple[Tuple[str, str], ...] = ()

    @classmethod
    def make(cls, loss, mmsi, pair_weights, vary=()):
        """From plain values; `vary` a dict or (flag, value) pairs."""
        return cls(loss, int(mmsi), pair_weights,
                   tuple(sorted((str(flag), str(value)) for flag, value in dict(vary).items())))

    @classmethod
    def from_descriptor(cls, descriptor):
        """The cell of a DIR/runs/<name>.cell.json descriptor."""
        return cls.make(descriptor['loss'], descriptor['mmsi'], descriptor['pair_weights'],
                        descriptor.get('vary') or {})

    def descriptor(self):
        """The cell's fields of a descriptor (vary as a {flag: value} object)."""
        return dict(loss=self.loss, mmsi=self.mmsi, pair_weights=self.pair_weights,
                    vary=dict(self.vary))

    def plain_partner(self, mmsi_flags):
        """The MMSI=0 cell of the same loss (and the same values of the flags that are not
        MMSI-only) that this cell's paired differences are taken against."""
        return Cell(self.loss, 0, 'none',
                    tuple((flag, value) for flag, value in self.vary if flag not in mmsi_flags))

    def label(self):
        label = f'{self.loss} ' + (f'MMSI {self.pair_weights}' if self.mmsi else 'plain')
        return label + ''.join(f' {flag}={value}' for flag, value in self.vary)


STAGE1 = Cell('MS', 0, 'none')


def grid_cells(losses, mmsi_values, pair_weights, vary, vary_losses=None):
    """[Cell] of the grid: one per loss, MMSI value and pair-weight form (resolved per
    loss: 'auto' becomes 'official' or 'gradient'; forms a loss does not have are left out),
    times every --vary axis that applies (MMSI-only flags do not multiply MMSI=0 cells;
    `vary_losses` restricts the axes to some losses)."""
    import losses as loss_registry
    mmsi_flags = mmsi_only_flags()
    cells = []
    for loss in losses:
        loss_registry.split_name(loss)  # InputError for an unknown loss
        for mmsi in mmsi_values:
            forms = ['none'] if not mmsi else []
            for requested in (pair_weights if mmsi else []):
                try:
                    form = loss_registry.resolve_pair_weights(loss, requested)
                except InputError:
                    print(f'note: {loss} has no official weighted form: no {loss} MMSI cell '
                          f'with --pair_weights official', file=sys.stderr)
                    continue
                if form not in forms:
                    forms.append(form)
            for form in forms:
                axes = [(flag, values) for flag, values in vary
                        if (vary_losses is None or loss in vary_losses)
                        and (mmsi or flag not in mmsi_flags)]
                for combination in itertools.product(*(values for _, values in axes)):
                    cells.append(Cell.make(loss, mmsi, form,
                                           zip((flag for flag, _ in axes), combination)))
    return cells


def run_name(cell, seed):
    suffix = ''.join(f'_{flag}{value}' for flag, value in cell.vary)
    return f'{cell.loss}_mmsi{cell.mmsi}_{cell.pair_weights}_seed{seed}{suffix}'


def run_flags(cell, seed, common, start=None):
    """The training flags of one run: the common ones, then the cell's, then the seed and the
    starting checkpoint (argparse keeps the last value of a flag given twice). A run that starts
    from stage 1 skips evaluating it again: the summary takes its epoch 0 from stage 1."""
    flags = list(common) + ['--loss', cell.loss, '--MMSI', str(cell.mmsi), '--seed', str(seed)]
    if cell.mmsi:
        flags += ['--pair_weights', cell.pair_weights]
    for flag, value in cell.vary:
        flags += [f'--{flag}', value]
    if start:
        flags += ['--pretrained', start, '--eval_first', '0']
    return flags


class Run:
    """One training run of the grid: its folder, flags and what it is for."""

    def __init__(self, out, name, flags, cell, seed, folder='runs', start_run=None):
        self.name, self.flags, self.cell, self.seed = name, flags, cell, seed
        self.relative_dir = os.path.join(folder, name)  # within DIR
        self.dir = os.path.join(out, self.relative_dir)
        self.start_run = start_run  # the stage-1 Run it fine-tunes, whose last evaluation is epoch 0
        self.console = os.path.join(out, 'console', f'{name}.txt')
        self.args = parse_args(flags + ['--save_dir', self.dir])  # InputError before any run

    @property
    def finished(self):
        return os.path.exists(os.path.join(self.dir, DONE))

    def command(self):
        command = [sys.executable, os.path.join(ROOT, 'MMSI_train.py'), *self.flags,
                   '--save_dir', self.dir]
        last = os.path.join(self.dir, 'last.pth.tar')
        if os.path.exists(last):  # interrupted: continue exactly where it stopped
            command += ['--resume', last]
        elif os.path.exists(self.dir):  # died before its first checkpoint: start afresh
            shutil.rmtree(self.dir)
        return command

    def describe(self):
        """The cell descriptor the summary reads (DIR/runs/<name>.cell.json)."""
        described = dict(self.cell.descriptor(), seed=self.seed, name=self.name,
                         epochs=self.args.epochs, flags=self.flags)
        if self.start_run:
            described['start'] = self.start_run.relative_dir
        return described


def plan(options, common):
    """(stage-1 runs, cell runs) of the grid; every run's flags are parsed (and so checked)
    here, before anything starts."""
    parse_args(common)  # checks them, and imports a --loss_module the losses may need
    stage1, runs = {}, []
    for seed in options.seeds:
        start = None
        if options.protocol == 'finetune':
            flags = run_flags(STAGE1, seed, common) + [
                '--pretrained', 'none', '--lr', str(options.stage1_lr),
                '--epochs', str(options.stage1_epochs), '--save_step', str(options.stage1_epochs),
                '--eval_first', '0']  # the initial weights' evaluation is of no use here
            stage1[seed] = Run(options.out, f'MS_seed{seed}', flags, STAGE1, seed, 'stage1')
            start = os.path.join(stage1[seed].dir, f'ckp_ep{options.stage1_epochs}.pth.tar')
        for cell in grid_cells(options.losses, options.mmsi, options.pair_weights,
                               options.vary, options.vary_losses):
            name = run_name(cell, seed)
            runs.append(Run(options.out, name, run_flags(cell, seed, common, start), cell, seed,
                            start_run=stage1.get(seed)))
    return list(stage1.values()), runs


# ---- running ------------------------------------------------------------------------------------

class Runner:
    """Runs commands --jobs at a time: one GPU each when there are several, else the CPU
    threads shared out; prints a line when each starts and ends."""

    def __init__(self, jobs, threads):
        self.jobs = jobs
        self.threads = threads
        self.devices = _visible_gpus()
        self.free_slots = list(range(jobs))
        self.lock = threading.Lock()
        self.failed = []
        self.done = 0
        self.total = 0

    def run_all(self, runs):
        todo = [run for run in runs if not run.finished]
        for run in runs:
            if run.finished:
                print(f'skip {run.name}: finished', flush=True)
        self.total, self.done = len(todo), 0
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(self.run_one, todo))

    def run_one(self, run):
        with self.lock:
            slot = self.free_slots.pop()
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads),
                   MKL_NUM_THREADS=str(self.threads))
        if self.devices:
            env['CUDA_VISIBLE_DEVICES'] = self.devices[slot % len(self.devices)]
        command = run.command()
        resumed = ' (resuming)' if '--resume' in command else ''
        print(f'start {run.name}{resumed}', flush=True)
        os.makedirs(os.path.dirname(run.console), exist_ok=True)
        tic = time.time()
        status = self.call(command, run.console, env)
        if status == 2 and '--resume' in command:
            # The loader workers of a run killed a moment ago hold its folder's lock for a few
            # seconds (README, known limitations): try once more after they have gone.
            time.sleep(RETRY_SECONDS)
            status = self.call(command, run.console, env)
        with self.lock:
            self.free_slots.append(slot)
            self.done += 1
            progress = f'[{self.done}/{self.total}]'
        if status == 0:
            open(os.path.join(run.dir, DONE), 'w').close()
            last = last_evaluation(read_rows(run.dir)) or {}
            print(f'{progress} done {run.name} in {time.time() - tic:.0f}s: R@1 '
                  f'{last.get("R@1", float("nan")):.4f}', flush=True)
        else:
            self.failed.append(run)
            print(f'{progress} FAILED {run.name} (exit {status}); see {run.console}', flush=True)

    @staticmethod
    def call(command, console_path, env):
        with open(console_path, 'a', encoding='utf-8') as console:
            return subprocess.call(command, cwd=ROOT, env=env, stdout=console,
                                   stderr=subprocess.STDOUT)


def _visible_gpus():
    try:
        import torch
        count = torch.cuda.device_count()
    except Exception:  # no usable CUDA: run on the CPU
        count = 0
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = [d for d in visible.split(',') if d] if visible else [str(i) for i in range(count)]
    return ids[:count]


# ---- the summary --------------------------------------------------------------------------------

def read_rows(run_dir):
    """The metrics rows of a run folder ([] before its first); a file cut short is read to its
    last complete line (utils.logger.read_metrics)."""
    path = os.path.join(run_dir, METRICS_FILE)
    return read_metrics(path) if os.path.exists(path) else []


def evaluations(rows):
    """The per-epoch evaluation rows (not the --eval_every ones inside an epoch)."""
    return [row for row in rows if 'R@1' in row and 'iteration' not in row]


def last_evaluation(rows):
    evaluated = evaluations(rows)
    return evaluated[-1] if evaluated else None


def best_evaluation(rows):
    """The evaluation with the highest R@1 (the earliest of equals). Chosen on the test set:
    an optimistic number, reported beside the last evaluation, not instead of it."""
    evaluated = evaluations(rows)
    return max(evaluated, key=lambda row: (row['R@1'], -row['epoch'])) if evaluated else None


def t_quantile(n):
    """t(0.975, n - 1), the 95% two-sided quantile of Student's t."""
    from scipy.stats import t
    return float(t.ppf(0.975, n - 1))


def mean_ci(values):
    """(mean, half-width of the 95% interval mean +- t(0.975, n-1) s / sqrt(n)); the
    half-width is None for n = 1 (no interval from one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, t_quantile(n) * statistics.stdev(values) / math.sqrt(n)


def collect(out):
    """{Cell: {seed: rows}} of the complete runs (an evaluation at the cell's last epoch) under
    DIR/runs, read from their descriptors (DIR/runs/<name>.cell.json) and metrics files."""
    runs_dir = os.path.join(out, 'runs')
    cells = {}
    for entry in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        if not entry.endswith('.cell.json'):
            continue
        with open(os.path.join(runs_dir, entry), encoding='utf-8') as f:
            descriptor = json.load(f)
        rows = read_rows(os.path.join(runs_dir, descriptor['name']))
        if descriptor.get('start'):
            rows = starting_rows(os.path.join(out, descriptor['start']), rows)
        last = last_evaluation(rows)
        if last is None or last['epoch'] != descriptor['epochs']:
            continue  # not complete: left out of the summary
        cells.setdefault(Cell.from_descriptor(descriptor), {})[descriptor['seed']] = rows
    return cells


def starting_rows(start_dir, rows):
    """A fine-tuning run's rows with its epoch 0 taken from the last evaluation of the run it
    started from (the same weights, so the same numbers), unless it evaluated epoch 0 itself."""
    start = last_evaluation(read_rows(start_dir))
    if start is None or any(row.get('epoch') == 0 for row in evaluations(rows)):
        return rows
    return [{key: value for key, value in start.items() if key in METRICS or key.startswith('R@')}
            | {'epoch': 0}] + rows


def summary_rows(cells):
    """One dict per cell: identity, n, and per metric the mean and CI half-width at the last
    evaluation, at the best evaluation, and of the paired difference to the plain cell."""
    mmsi_flags = mmsi_only_flags()
    vary_flags = sorted({flag for cell in cells for flag, _ in cell.vary})
    table = []
    for cell in sorted(cells):
        runs = cells[cell]
        seeds = sorted(runs)
        row = {'loss': cell.loss, 'mmsi': cell.mmsi, 'pair_weights': cell.pair_weights}
        row.update({flag: dict(cell.vary).get(flag, '') for flag in vary_flags})
        row['n'] = len(seeds)
        last = {seed: last_evaluation(runs[seed]) for seed in seeds}
        best = {seed: best_evaluation(runs[seed]) for seed in seeds}
        for metric in METRICS:
            row[f'{metric}_mean'], row[f'{metric}_ci95'] = mean_ci([last[s][metric] for s in seeds])
        for metric in METRICS:
            row[f'best_{metric}_mean'], row[f'best_{metric}_ci95'] = mean_ci(
                [best[s][metric] for s in seeds])
        row['best_epoch_mean'] = sum(best[s]['epoch'] for s in seeds) / len(seeds)
        partner = cells.get(cell.plain_partner(mmsi_flags)) if cell.mmsi else None
        paired = sorted(set(seeds) & set(partner)) if partner else []
        row['n_paired'] = len(paired)
        for metric in METRICS:
            if paired:
                differences = [last[s][metric] - last_evaluation(partner[s])[metric]
                               for s in paired]
                row[f'diff_{metric}_mean'], row[f'diff_{metric}_ci95'] = mean_ci(differences)
            else:
                row[f'diff_{metric}_mean'] = row[f'diff_{metric}_ci95'] = None
        table.append(row)
    return table, vary_flags


def record_command(out, command):
    """Add a harness command to DIR/commands.txt, the list the summary names (several
    commands may fill one folder, as benchmarks/glyphs_study.sh does)."""
    if command not in read_commands(out):
        with open(os.path.join(out, COMMANDS), 'a', encoding='utf-8') as f:
            f.write(command + '\n')


def read_commands(out):
    path = os.path.join(out, COMMANDS)
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as f:
        return [line.rstrip('\n') for line in f if line.strip()]


def summarise(out):
    """Write DIR/summary.csv, DIR/summary.md and DIR/curves.png from the runs' metrics files
    (and DIR/commands.txt); returns the summary rows."""
    cells = collect(out)
    table, vary_flags = summary_rows(cells)
    if not table:
        print(f'no complete run under {out}/runs yet: no summary', file=sys.stderr)
        return table
    with open(os.path.join(out, 'summary.csv'), 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        for row in table:
            writer.writerow({k: ('' if v is None else v) for k, v in row.items()})
    with open(os.path.join(out, 'summary.md'), 'w', encoding='utf-8') as f:
        f.write(markdown_table(table, vary_flags, read_commands(out)))
    plot_curves(curve_series(cells), os.path.join(out, 'curves.png'),
                title='R@1: mean over seeds, 95% band')
    return table


def format_ci(mean, half_width, signed=False):
    if mean is None:
        return '–'
    text = f'{mean:+.4f}' if signed else f'{mean:.4f}'
    return f'{text} ± {half_width:.4f}' if half_width is not None else f'{text} (no CI, n=1)'


def markdown_table(table, vary_flags, commands=()):
    lines = ['# MMSI comparison', '']
    if commands:
        lines += ['Trained by:', ''] + [f'    {command}' for command in commands] + ['']
    lines += ['Mean ± half-width of the 95% confidence interval (t distribution, n seeds) at '
              'the last evaluation; "best" is the evaluation with the highest R@1 (chosen on '
              'the test set, so optimistic); Δ is the paired difference to the same loss '
              'without MMSI, seed by seed.', '']
    header = (['loss', 'MMSI', 'pair weights'] + vary_flags + ['n'] + list(METRICS)
              + ['best R@1 (epoch)'] + [f'Δ {m}' for m in METRICS])
    lines.append('| ' + ' | '.join(header) + ' |')
    lines.append('|' + '---|' * len(header))
    for row in table:
        fields = [row['loss'], str(row['mmsi']), row['pair_weights']]
        fields += [str(row[flag]) for flag in vary_flags] + [str(row['n'])]
        fields += [format_ci(row[f'{m}_mean'], row[f'{m}_ci95']) for m in METRICS]
        fields.append(f'{format_ci(row["best_R@1_mean"], row["best_R@1_ci95"])} '
                      f'({row["best_epoch_mean"]:.1f})')
        fields += [format_ci(row[f'diff_{m}_mean'], row[f'diff_{m}_ci95'], signed=True)
                   for m in METRICS]
        lines.append('| ' + ' | '.join(fields) + ' |')
    return '\n'.join(lines) + '\n'


def curve_series(cells):
    """Per cell, its mean R@1 at each epoch every run of it evaluated, with the half-width of
    the 95% interval when it has several runs (utils.plot.Series)."""
    series = []
    for cell in sorted(cells):
        per_run = [{row['epoch']: row['R@1'] for row in evaluations(rows)}
                   for rows in cells[cell].values()]
        epochs = sorted(set.intersection(*(set(points) for points in per_run)))
        stats = [mean_ci([points[epoch] for points in per_run]) for epoch in epochs]
        series.append(Series(f'{cell.label()} (n={len(per_run)})', epochs,
                             [mean for mean, _ in stats],
                             [half for _, half in stats] if len(per_run) > 1 else None))
    return series


# ---- command line -------------------------------------------------------------------------------

QUICK = dict(seeds=[0, 1], stage1_epochs=4, epochs=2)


def vary_axis(text):
    flag, sep, values = str(text).partition('=')
    flag = flag.lstrip('-')
    if not sep or not flag or not values:
        raise argparse.ArgumentTypeError(f'expected FLAG=V1,V2,..., got {text!r}')
    return flag, [value for value in values.split(',') if value]


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Training flags for every run follow a "--".')
    parser.add_argument('--out', help='output folder (runs, console logs, summary)')
    parser.add_argument('--losses', nargs='+', default=['MS'])
    parser.add_argument('--mmsi', nargs='+', type=int, choices=(0, 1), default=[0, 1])
    parser.add_argument('--pair_weights', nargs='+', default=['auto'],
                        choices=('auto', 'official', 'gradient'),
                        help='forms of the MMSI cells (auto: official where it exists)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--vary', type=vary_axis, action='append', default=[],
                        metavar='FLAG=V1,V2', help='another axis over a training flag; repeatable')
    parser.add_argument('--vary_losses', nargs='+', default=None,
                        help='give the --vary axes to these losses only (default: all)')
    parser.add_argument('--protocol', choices=('finetune', 'scratch'), default='finetune')
    parser.add_argument('--stage1_epochs', type=int, default=12,
                        help='finetune: epochs of the plain MS stage 1')
    parser.add_argument('--stage1_lr', type=float, default=1e-4)
    parser.add_argument('--jobs', type=int, default=1, help='runs at a time')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads per run (default: usable CPUs / jobs)')
    parser.add_argument('--quick', action='store_true',
                        help='seeds 0 1, stage 1 of 4 epochs, cells of 2 epochs')
    parser.add_argument('--summarise', metavar='DIR',
                        help='only (re)write the summary of an existing output folder')
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index('--') if '--' in argv else len(argv)
    options = build_parser().parse_args(argv[:split])
    common = argv[split + 1:]
    try:
        if options.summarise:
            summarise(options.summarise)
            return 0
        if not options.out:
            raise InputError('--out: give the output folder')
        if options.quick:
            options.seeds = QUICK['seeds']
            options.stage1_epochs = QUICK['stage1_epochs']
            common = common + ['--epochs', str(QUICK['epochs'])]
        check_vary(options.vary)
        stage1, runs = plan(options, common)
    except InputError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    command = 'python compare.py ' + ' '.join(argv)
    os.makedirs(os.path.join(options.out, 'runs'), exist_ok=True)
    record_command(options.out, command)
    for run in runs:
        with open(f'{run.dir}.cell.json', 'w', encoding='utf-8') as f:
            json.dump(run.describe(), f, indent=1)
    threads = options.threads or max(1, len(os.sched_getaffinity(0)) // options.jobs)
    runner = Runner(options.jobs, threads)
    print(f'{len(stage1)} stage-1 runs and {len(runs)} cell runs; {options.jobs} at a time, '
          f'{threads} threads each; output in {options.out}', flush=True)
    runner.run_all(stage1)
    ready = [run for run in runs
             if options.protocol != 'finetune' or stage1_ok(run, stage1, runner.failed)]
    runner.run_all(ready)
    summarise(options.out)
    print(f'summary: {os.path.join(options.out, "summary.md")}', flush=True)
    if runner.failed:
        print(f'{len(runner.failed)} run(s) failed: ' + ', '.join(r.name for r in runner.failed),
              file=sys.stderr)
        return 1
    return 0


def stage1_ok(run, stage1, failed):
    return not any(s.seed == run.seed and s in failed for s in stage1)


def check_vary(vary):
    known = flag_names()
    for flag, values in vary:
        if flag not in known:
            raise InputError(f'--vary {flag}: not a training flag (python MMSI_train.py --help)')
        if not values:
            raise InputError(f'--vary {flag}: give at least one value')


if __name__ == '__main__':
    sys.exit(main())
