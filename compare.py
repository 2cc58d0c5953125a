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

Rerunning the same command never reruns a finished run and resumes an interrupted one. A run's
flags are its identity (stored in DIR/runs/<name>.cell.json before it first starts): a rerun
that changes them is refused, except a higher --epochs with --extend. One harness at a time
works in DIR (DIR/harness.lock); a run folder that a training still holds is waited for.
SIGINT or SIGTERM to the harness is passed on to its trainings, which save and stop; rerun the
same command to resume.

The summary is computed from the runs' metrics.jsonl files alone (`summarise`, also
`python compare.py --summarise DIR`): DIR/summary.csv, DIR/summary.md, DIR/curves.png.

A cell (`Cell`) is what the runs of one line of the summary share: loss, MMSI, pair-weight form
and the --vary values; its runs differ only by their seed.
"""
import argparse
import contextlib
import csv
import fcntl
import io
import itertools
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import NamedTuple, Tuple

from common.errors import InputError
from common.log_format import HOLDOUT_PREFIX
from utils.args import build_parser as training_parser
from utils.args import flag_names, mmsi_only_flags, positive_float, positive_int
from utils.config import NOT_INHERITED, parse_args, resolve
from utils.logger import METRICS_FILE, read_metrics
from utils.plot import Series, plot_curves
from utils.run_folder import (EPOCH_CHECKPOINT, LAST_CHECKPOINT, atomic_write_text,
                              epoch_checkpoint_name, folder_in_use, newest_checkpoint_in,
                              run_files)

ROOT = os.path.dirname(os.path.abspath(__file__))  # where MMSI_train.py is
TRAINER = os.path.join(ROOT, 'MMSI_train.py')  # what every run executes

METRICS = ('R@1', 'MAP@R', 'R-Precision')
HOLDOUT_MAP = HOLDOUT_PREFIX + 'MAP@R'  # what --select and the "best" columns choose on
DONE = 'finished'  # marker file the harness writes in a run folder after a clean exit
HARNESS_LOCK = 'harness.lock'  # DIR/harness.lock: locked by the harness working in DIR
POLL_SECONDS = 0.2  # how often the harness looks at its trainings and at waiting folders
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Training flags that do not change what a run computes (this machine's, this invocation's,
# how the run is watched): a rerun may give them otherwise without changing the run's identity.
NOT_IDENTITY = NOT_INHERITED + ('save_dir', 'progress', 'print_freq', 'checkpoint_minutes')
# The flags the trainer's data-set checks read (utils.config: training_split,
# check_against_data): the harness runs those checks once per distinct combination, before
# anything starts.
DATA_CHECKED = ('data', 'data_root', 'batch_size', 'num_instances', 'MMSI', 'val_batch_size',
                'val_num_instances', 'dict_min_classes', 'dict_capacity', 'd_size',
                'holdout_classes')


def say(message):
    print(message, flush=True)


def complain(message):
    print(message, file=sys.stderr, flush=True)


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

    def sort_key(self):
        """Tables list cells by loss, MMSI, pair weights, then values: numbers in numeric
        order (lr 1e-5, 3e-5, 1e-4), not as text (1e-4, 1e-5, 3e-4, 3e-5)."""
        def value_key(value):
            try:
                return (0, float(value), value)
            except ValueError:
                return (1, 0.0, value)
        return (self.loss, self.mmsi, self.pair_weights,
                tuple((flag, value_key(value)) for flag, value in self.vary))

    def label(self):
        label = f'{self.loss} ' + (f'MMSI {self.pair_weights}' if self.mmsi else 'plain')
        return label + ''.join(f' {flag}={value}' for flag, value in self.vary)


STAGE1 = Cell('MS', 0, 'none')


def grid_cells(losses, mmsi_values, pair_weights, vary, vary_losses=None, select=()):
    """[Cell] of the grid: one per loss, MMSI value and pair-weight form (resolved per
    loss: 'auto' becomes 'official' or 'gradient'; forms a loss does not have are left out),
    times every --vary axis that applies (MMSI-only flags do not multiply MMSI=0 cells;
    `vary_losses` restricts the axes to some losses) and every --select axis (for every
    loss: each cell is tuned over them)."""
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
                    complain(f'note: {loss} has no official weighted form: no {loss} MMSI cell '
                             f'with --pair_weights official')
                    continue
                if form not in forms:
                    forms.append(form)
            for form in forms:
                axes = [(flag, values) for flag, values in vary
                        if (vary_losses is None or loss in vary_losses)
                        and (mmsi or flag not in mmsi_flags)]
                axes += [(flag, values) for flag, values in select
                         if mmsi or flag not in mmsi_flags]
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


def without_foreign_loss_params(flags, loss):
    """(`flags` without the `--loss_param NAME=VALUE` entries that `loss` has no parameter
    for, the values left out). Stage 1 is plain MS whatever the cells' losses are: a
    parameter given for them (SupCon's temperature) is none of its business."""
    import losses as loss_registry
    declared = loss_registry.parameters(loss)
    kept, dropped, i = [], [], 0
    while i < len(flags):
        if flags[i] == '--loss_param' and i + 1 < len(flags):
            value, width = flags[i + 1], 2
        elif flags[i].startswith('--loss_param='):
            value, width = flags[i].split('=', 1)[1], 1
        else:
            kept.append(flags[i])
            i += 1
            continue
        if value.partition('=')[0] in declared:
            kept += flags[i:i + width]
        else:
            dropped.append(value)
        i += width
    return kept, dropped


class Run:
    """One training run of the grid: its folder, flags and what it is for."""

    def __init__(self, out, name, flags, cell, seed, folder='runs', start_run=None, select=()):
        self.name, self.flags, self.cell, self.seed = name, flags, cell, seed
        self.select = list(select)  # the --select flags among the cell's values
        self.relative_dir = os.path.join(folder, name)  # within DIR
        self.dir = os.path.join(out, self.relative_dir)
        self.descriptor_path = f'{self.dir}.cell.json'
        self.is_stage1 = folder == 'stage1'
        self.start_run = start_run  # the stage-1 Run it fine-tunes, whose last evaluation is epoch 0
        self.console = os.path.join(out, 'console', f'{name}.txt')
        self.args = parse_args(flags + ['--save_dir', self.dir])  # InputError before any run

    @property
    def finished(self):
        return os.path.exists(os.path.join(self.dir, DONE))

    def in_use(self):
        """Whether a training holds the folder, this harness's child or not."""
        return folder_in_use(self.dir)

    def checkpoint(self):
        """The newest checkpoint in the folder, or None."""
        return newest_checkpoint_in(self.dir)

    def has_trained(self):
        """Whether the folder holds this run's training: finished, a checkpoint, or a training
        at work. A folder with none of them (a run that died before its first checkpoint) is
        abandoned: nothing in it is worth keeping."""
        return self.finished or self.in_use() or self.checkpoint() is not None

    def command(self):
        """The training command; the runner calls it when no training holds the folder. With
        `--resume auto` the trainer continues from the folder's newest checkpoint (an
        interrupted or extended run), or starts the run when it holds none, clearing the files
        of one that died before its first checkpoint; it refuses a folder in use
        (utils/config.py, utils.run_folder.prepare). The harness itself never deletes a run."""
        return [sys.executable, TRAINER, *self.flags, '--save_dir', self.dir, '--resume', 'auto']

    def describe(self, trained_by=()):
        """The run's descriptor (DIR/<folder>/<name>.cell.json): its identity (the flags), what
        the summary reads, and the harness commands that trained it."""
        described = dict(self.cell.descriptor(), seed=self.seed, name=self.name,
                         epochs=self.args.epochs, flags=self.flags, trained_by=list(trained_by),
                         select=self.select)
        if self.start_run:
            described['start'] = self.start_run.relative_dir
        return described

    def stored(self):
        """The descriptor an earlier harness wrote, or None."""
        return read_descriptor(self.descriptor_path) if os.path.exists(self.descriptor_path) \
            else None

    def prune_checkpoints(self):
        """--keep_checkpoints last, on a finished run: delete its per-epoch checkpoints but the
        one its cells fine-tune from (a stage-1 run). last.pth.tar stays: an --extend continues
        from it. The summary reads only metrics.jsonl, so a grid then needs one or two
        checkpoints' space per run instead of one per evaluation."""
        if self.in_use():  # a training started by hand in a finished run's folder
            say(f'warning: {self.name}: a training holds its folder, so its checkpoints are kept '
                f'(--keep_checkpoints last)')
            return
        names = sorted(os.listdir(self.dir))
        if LAST_CHECKPOINT not in names:  # nothing else to continue from: keep them all
            say(f'warning: {self.name}: no {LAST_CHECKPOINT}, so its epoch checkpoints are kept '
                f'(--keep_checkpoints last)')
            return
        keep = epoch_checkpoint_name(self.args.epochs) if self.is_stage1 else None
        for name in names:
            if EPOCH_CHECKPOINT.fullmatch(name) and name != keep:
                try:
                    os.remove(os.path.join(self.dir, name))
                except OSError as err:  # disk space is not worth stopping the grid for
                    say(f'warning: {self.name}: could not delete {name} ({err.strerror})')


def read_descriptor(path):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise InputError(f'{path}: not a readable run descriptor ({err})') from None


def write_descriptor(path, descriptor):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(json.dumps(descriptor, indent=1) + '\n', path)


def plan(options, common):
    """(stage-1 runs, cell runs) of the grid; every run's flags are parsed (and so checked)
    here, before anything starts."""
    check_common_flags(common, options.losses)
    if options.select and not parse_args(list(common)).holdout_classes:
        raise InputError('--select needs --holdout_classes N among the training flags (after '
                         '--): the values and the epoch are chosen on held-out training '
                         'classes, never on the test classes')
    select_flags = sorted(flag for flag, _ in options.select)
    stage1, runs = {}, []
    for seed in options.seeds:
        start = None
        if options.protocol == 'finetune':
            stage1[seed] = stage1_run(options, common, seed)
            start = os.path.join(stage1[seed].dir, f'ckp_ep{options.stage1_epochs}.pth.tar')
        for cell in grid_cells(options.losses, options.mmsi, options.pair_weights,
                               options.vary, options.vary_losses, options.select):
            name = run_name(cell, seed)
            runs.append(Run(options.out, name, run_flags(cell, seed, common, start), cell, seed,
                            start_run=stage1.get(seed), select=select_flags))
    return list(stage1.values()), runs


def check_common_flags(common, losses):
    """The flags after `--` with each loss of the grid (a --loss_param fits some losses only;
    alone they would be checked against the default loss). Imports a --loss_module first."""
    for loss in losses:
        parse_args(list(common) + ['--loss', loss])


def stage1_run(options, common, seed):
    """The plain MS run of `seed` that its cells fine-tune from."""
    common, dropped = without_foreign_loss_params(common, STAGE1.loss)
    if dropped and seed == options.seeds[0]:
        names = ', '.join(value.partition('=')[0] for value in dropped)
        complain(f'note: stage 1 is plain {STAGE1.loss}, which has no {names}: left out of its '
                 f'flags')
    flags = run_flags(STAGE1, seed, common) + [
        '--pretrained', 'none', '--lr', str(options.stage1_lr),
        '--epochs', str(options.stage1_epochs), '--save_step', str(options.stage1_epochs),
        '--eval_first', '0']  # the initial weights' evaluation is of no use here
    return Run(options.out, f'{STAGE1.loss}_seed{seed}', flags, STAGE1, seed, 'stage1')


def check_with_data(runs):
    """The trainer's checks that need the data set (a --batch_size that is no multiple of
    --num_instances, more classes than it has, ...), before anything starts: a bad flag would
    otherwise fail every run. Once per distinct combination of the flags they read. The
    weights are each training's own check (`--pretrained none` here): a cell's starting
    checkpoint is written by its stage 1, after this check."""
    checked = set()
    for run in runs:
        key = tuple(getattr(run.args, name) for name in DATA_CHECKED)
        if key not in checked:
            checked.add(key)
            try:
                resolve(run.flags + ['--save_dir', run.dir, '--pretrained', 'none'])
            except InputError as err:
                raise InputError(f'{run.relative_dir}: {err}') from None


# ---- the output folder: one harness at a time, every run's identity -----------------------------

def lock_folder(out):
    """DIR/harness.lock, locked (flock) for as long as this harness works in DIR, so that a
    second harness on the same DIR is refused at once instead of racing the first for its runs.
    The lock goes with the process: a killed harness leaves none behind. Returns the open
    file (closing it unlocks)."""
    try:
        os.makedirs(os.path.join(out, 'runs'), exist_ok=True)
        lock = open(os.path.join(out, HARNESS_LOCK), 'a+', encoding='utf-8')
    except OSError as err:
        raise InputError(f'--out {out}: cannot write there ({err.strerror})') from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        raise InputError(f'--out {out} is in use by another compare.py'
                         + (f' (pid {holder})' if holder else '')
                         + '; wait for it to end or choose another --out') from None
    except OSError:  # a file system without locks: go on unguarded
        pass
    lock.truncate(0)
    lock.write(f'{os.getpid()}\n')
    lock.flush()
    return lock


def settle_identities(runs, extend):
    """Compare every run with what its folder was trained with, then write every descriptor
    (the stored identity), all before anything starts. A run whose flags differ from those it
    trained with is refused (InputError naming the first, nothing written), except a higher
    --epochs for a cell run under --extend: its finished marker is dropped and it resumes to
    the new count. A run without training yet (none, or an abandoned folder) takes this
    command's flags."""
    settled, refused = [], []
    for run in runs:
        stored = run.stored()
        if stored is None or not run.has_trained():
            settled.append((run, run.describe(), False))
            continue
        changes = flag_changes(run, stored)
        if not changes:
            settled.append((run, stored, False))
            continue
        refusal = refusal_of(run, changes, extend)
        if refusal:
            refused.append(refusal)
        else:
            settled.append((run, run.describe(stored.get('trained_by', ())), True))
    if refused:
        others = f' (and {len(refused) - 1} other run(s))' if len(refused) > 1 else ''
        raise InputError(refused[0] + others)
    for run, descriptor, extended in settled:
        if extended and run.finished:
            os.remove(os.path.join(run.dir, DONE))
        write_descriptor(run.descriptor_path, descriptor)


def flag_changes(run, stored):
    """[(flag, old value, new value)]: how this command's flags for `run` differ from the
    stored ones, compared as the trainer parses them (--lr 1e-4 is --lr 0.0001). A fine-tuning
    run's --pretrained is the stage-1 checkpoint, whose path moves with DIR: which run it
    starts from (`start`) is compared instead."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage: one line below
            old = vars(training_parser().parse_args(stored['flags']))
    except (KeyError, TypeError, SystemExit):
        raise InputError(f'{run.descriptor_path}: its stored flags cannot be read; choose '
                         f'another --out') from None
    new = vars(training_parser().parse_args(run.flags))
    ignored = set(NOT_IDENTITY) | ({'pretrained'} if run.start_run else set())
    changes = [(name, old.get(name), new.get(name)) for name in sorted(set(old) | set(new))
               if name not in ignored and old.get(name) != new.get(name)]
    start = run.start_run.relative_dir if run.start_run else None
    if stored.get('start') != start:
        changes.append(('start', stored.get('start'), start))
    return changes


def refusal_of(run, changes, extend):
    """Why `run` may not go on with `changes` to its flags (None: it may, as --extend)."""
    listed = ', '.join(f'--{flag} {old} -> {new}' for flag, old, new in changes)
    flags = [flag for flag, _, _ in changes]
    if extend and run.is_stage1 and 'epochs' in flags:
        return (f'{run.relative_dir} was trained with other flags: {listed}; a stage-1 run is '
                f'never extended (its checkpoint is where the cells start): keep its '
                f'--stage1_epochs or choose another --out')
    higher = flags == ['epochs'] and changes[0][2] > changes[0][1]
    if extend and higher:
        return None
    if extend and flags == ['epochs']:
        return f'{run.relative_dir}: --extend only raises --epochs ({listed})'
    hint = '; for a higher --epochs give --extend' if higher and not run.is_stage1 else ''
    return (f'{run.relative_dir} was trained with other flags: {listed}; rerun with its flags '
            f'or choose another --out{hint}')


def record_trainer(run, command_line):
    """Add the harness command starting `run` to the commands that trained it (its
    descriptor), which the summary names."""
    descriptor = run.stored() or run.describe()
    trained_by = descriptor.setdefault('trained_by', [])
    if command_line not in trained_by:
        trained_by.append(command_line)
        write_descriptor(run.descriptor_path, descriptor)


# ---- running ------------------------------------------------------------------------------------

class Stop:
    """SIGINT and SIGTERM to the harness. The handler only notes the signal; the runner passes
    each one on to the process group of every running training (`pass_on`), which saves at its
    next iteration boundary and exits 128 + signal (MMSI_train.py), and starts nothing more.
    A second signal is passed on too: the training decides (a repeat within 2 s is the same
    request, a later one exits at once). `restore` puts back the handlers found."""

    def __init__(self):
        self.received = []
        self.announced = False
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self.note) for signum in STOP_SIGNALS}

    def note(self, signum, frame):
        self.received.append(signum)

    @property
    def requested(self):
        return bool(self.received)

    @property
    def signum(self):
        """The first signal received (what the harness's exit status tells)."""
        return self.received[0] if self.received else None

    def name(self):
        return signal.Signals(self.signum).name

    def pass_on(self, trainings):
        if self.received and not self.announced:
            self.announced = True
            say(f'{self.name()} received: {len(trainings)} training(s) asked to save and stop '
                f'at their next iteration boundary; no new run starts')
        for training in trainings:
            for signum in self.received[training.forwarded:]:
                try:
                    os.killpg(training.process.pid, signum)
                except ProcessLookupError:  # it has just ended
                    pass
            training.forwarded = len(self.received)

    def restore(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def stopped_by_signal(status):
    """Whether an exit status is that of a training stopped by SIGINT or SIGTERM: 128 + signal
    after saving, or killed by it before its handlers were installed."""
    return any(status in (128 + signum, -signum) for signum in STOP_SIGNALS)


class Training:
    """A running training: its run, process, slot (GPU), and how many of the harness's stop
    signals it has been passed."""

    def __init__(self, run, process, slot):
        self.run, self.process, self.slot = run, process, slot
        self.started = time.time()
        self.forwarded = 0


class Runner:
    """Runs trainings --jobs at a time: one GPU each when there are several, else the CPU
    threads shared out; prints a line when each starts and ends. Each training runs in a
    session of its own, so that Ctrl-C or a signal to the harness's process group reaches the
    harness alone, which passes it on once (Stop) and waits for the trainings to save."""

    def __init__(self, jobs, threads, command_line, stop, keep_checkpoints='all'):
        self.jobs, self.threads = jobs, threads
        self.keep_checkpoints = keep_checkpoints
        self.command_line, self.stop = command_line, stop
        self.devices = _visible_gpus()
        self.failed = []
        self.waiting = set()  # the runs announced as waiting for another training
        self.done = self.total = 0

    def run_all(self, runs):
        for run in runs:
            if run.finished:
                say(f'skip {run.name}: finished')
                self.tidy(run)
        queue = [run for run in runs if not run.finished]
        self.total, self.done = len(queue), 0
        running = []
        while running or (queue and not self.stop.requested):
            if not self.stop.requested:
                self.start_free(queue, running)
            self.stop.pass_on(running)
            for training in [t for t in running if t.process.poll() is not None]:
                running.remove(training)
                self.finish(training)
            time.sleep(POLL_SECONDS)

    def start_free(self, queue, running):
        """Start queued runs while there are free slots, passing over (for now) those whose
        folder another training holds: an orphan of a killed harness, a training started by
        hand. They start once it has let go."""
        for run in list(queue):
            if len(running) >= self.jobs:
                return
            if run.in_use():
                if run not in self.waiting:
                    self.waiting.add(run)
                    say(f'waiting for {run.name}: another training holds it')
                continue
            queue.remove(run)
            taken = {training.slot for training in running}
            running.append(self.start(run, min(set(range(self.jobs)) - taken)))

    def start(self, run, slot):
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads),
                   MKL_NUM_THREADS=str(self.threads))
        if self.devices:
            env['CUDA_VISIBLE_DEVICES'] = self.devices[slot % len(self.devices)]
        command = run.command()
        record_trainer(run, self.command_line)
        say(f'start {run.name}' + (' (resuming)' if run.checkpoint() else ''))
        os.makedirs(os.path.dirname(run.console), exist_ok=True)
        with open(run.console, 'a', encoding='utf-8') as console:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=console,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return Training(run, process, slot)

    def finish(self, training):
        run, status = training.run, training.process.returncode
        self.done += 1
        progress = f'[{self.done}/{self.total}]'
        if status == 0:
            open(os.path.join(run.dir, DONE), 'w').close()
            self.tidy(run)
            say(f'{progress} done {run.name} in {time.time() - training.started:.0f}s: '
                f'{final_r1(run)}')
        elif training.forwarded and stopped_by_signal(status):
            say(f'{progress} stopped {run.name} ({self.stop.name()}): its last checkpoint is '
                f'kept')
        else:
            self.failed.append(run)
            say(f'{progress} FAILED {run.name} (exit {status}); see {run.console}')

    def tidy(self, run):
        """What is done with a finished run's folder: --keep_checkpoints."""
        if self.keep_checkpoints == 'last':
            run.prune_checkpoints()


def final_r1(run):
    try:
        last = last_evaluation(read_rows(run.dir)) or {}
    except InputError:  # a damaged metrics file: the summary says so
        return 'R@1 unreadable'
    return f'R@1 {last.get("R@1", float("nan")):.4f}'


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
    """The evaluation with the highest holdout MAP@R when the run has held-out classes
    (--holdout_classes), else the highest R@1, chosen on the test set: an optimistic number,
    reported beside the last evaluation, not instead of it. The earliest of equals."""
    evaluated = evaluations(rows)
    if not evaluated:
        return None
    key = HOLDOUT_MAP if on_holdout(evaluated) else 'R@1'
    return max(evaluated, key=lambda row: (row[key], -row['epoch']))


def on_holdout(evaluated):
    """Whether every evaluation row has the holdout metric to choose on."""
    return all(HOLDOUT_MAP in row for row in evaluated)


class Choice(NamedTuple):
    """What --select chose for one cell: the cell of the chosen values, the chosen epoch, and
    the seed-mean holdout MAP@R there."""
    cell: Cell
    epoch: int
    holdout: float


def tuned_cell(cell, select):
    """The cell without its --select values: the cell the choice is made for."""
    return cell._replace(vary=tuple((flag, value) for flag, value in cell.vary
                                    if flag not in select))


def choose(candidates):
    """The Choice among `candidates` ({Cell: {seed: rows}}, one per combination of --select
    values) and their epochs with the highest holdout MAP@R averaged over seeds (epochs every
    seed evaluated; the first in cell, then epoch order, of equals). None when no candidate has
    holdout metrics."""
    best = None
    for cell in sorted(candidates):
        per_seed = [{row['epoch']: row for row in evaluations(rows)}
                    for rows in candidates[cell].values()]
        for epoch in sorted(set.intersection(*(set(rows) for rows in per_seed))):
            scores = [rows[epoch].get(HOLDOUT_MAP) for rows in per_seed]
            if None in scores:
                continue
            mean = sum(scores) / len(scores)
            if best is None or mean > best.holdout:
                best = Choice(cell, epoch, mean)
    return best


def tune(cells, select):
    """({tuned cell: {seed: [the row at the chosen epoch]}}, {tuned cell: Choice}): each cell
    at the --select values and epoch chosen on the held-out classes."""
    groups = {}
    for cell, runs in cells.items():
        groups.setdefault(tuned_cell(cell, select), {})[cell] = runs
    chosen, choices = {}, {}
    for group, candidates in groups.items():
        choice = choose(candidates)
        if choice is None:
            continue
        choices[group] = choice
        chosen[group] = {seed: [row for row in evaluations(rows) if row['epoch'] == choice.epoch]
                         for seed, rows in candidates[choice.cell].items()}
    return chosen, choices


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


def read_descriptors(out):
    """The descriptors of the cell runs under DIR/runs (DIR/runs/<name>.cell.json)."""
    runs_dir = os.path.join(out, 'runs')
    entries = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    return [read_descriptor(os.path.join(runs_dir, entry)) for entry in entries
            if entry.endswith('.cell.json')]


def complete_rows(out, descriptor):
    """The metrics rows of a descriptor's run when it is complete (an evaluation at its last
    epoch), else None."""
    rows = read_rows(os.path.join(out, 'runs', descriptor['name']))
    if descriptor.get('start'):
        rows = starting_rows(os.path.join(out, descriptor['start']), rows)
    last = last_evaluation(rows)
    return rows if last is not None and last['epoch'] == descriptor['epochs'] else None


def collect(out, descriptors=None):
    """{Cell: {seed: rows}} of the complete runs under DIR/runs, read from their descriptors
    and metrics files (incomplete runs are left out: `missing_runs` names them)."""
    cells = {}
    for descriptor in read_descriptors(out) if descriptors is None else descriptors:
        rows = complete_rows(out, descriptor)
        if rows is not None:
            cells.setdefault(Cell.from_descriptor(descriptor), {})[descriptor['seed']] = rows
    return cells


def missing_runs(out, descriptors, cells):
    """A line for each run of a cell (it has a descriptor) that the summary lacks."""
    lines = []
    for descriptor in descriptors:
        cell = Cell.from_descriptor(descriptor)
        if descriptor['seed'] not in cells.get(cell, {}):
            folder = os.path.join(out, 'runs', descriptor['name'])
            state = 'not finished' if run_files(folder) else 'not started'
            lines.append(f'{cell.label()}: seed {descriptor["seed"]} missing ({state})')
    return lines


def trainers(out, descriptors, cells):
    """The harness commands that trained the summarised runs and the stage-1 runs they
    started from, in the order first met."""
    commands = []
    for descriptor in descriptors:
        if descriptor['seed'] not in cells.get(Cell.from_descriptor(descriptor), {}):
            continue
        related = [descriptor]
        if descriptor.get('start'):
            start = os.path.join(out, f'{descriptor["start"]}.cell.json')
            related = ([read_descriptor(start)] if os.path.exists(start) else []) + related
        for command in (c for d in related for c in d.get('trained_by', ())):
            if command not in commands:
                commands.append(command)
    return commands


def starting_rows(start_dir, rows):
    """A fine-tuning run's rows with its epoch 0 taken from the last evaluation of the run it
    started from (the same weights, so the same numbers), unless it evaluated epoch 0 itself."""
    start = last_evaluation(read_rows(start_dir))
    if start is None or any(row.get('epoch') == 0 for row in evaluations(rows)):
        return rows
    return [{key: value for key, value in start.items()
             if key in METRICS or key.startswith(('R@', 'holdout/'))} | {'epoch': 0}] + rows


def summary_rows(cells, choices=None):
    """One dict per cell: identity, n, and per metric the mean and CI half-width at the last
    evaluation, at the best evaluation, and of the paired difference to the plain cell. With
    `choices` (--select: `tune`), the cells' rows are those at their chosen values and epoch,
    and each row also names the chosen values, the epoch and its holdout MAP@R."""
    mmsi_flags = mmsi_only_flags()
    vary_flags = sorted({flag for cell in cells for flag, _ in cell.vary})
    select_flags = sorted({flag for choice in (choices or {}).values()
                           for flag, _ in choice.cell.vary} - set(vary_flags))
    table = []
    for cell in sorted(cells, key=Cell.sort_key):
        runs = cells[cell]
        seeds = sorted(runs)
        row = {'loss': cell.loss, 'mmsi': cell.mmsi, 'pair_weights': cell.pair_weights}
        row.update({flag: dict(cell.vary).get(flag, '') for flag in vary_flags})
        if choices is not None:
            chosen = dict(choices[cell].cell.vary)
            row.update({f'chosen_{flag}': chosen.get(flag, '') for flag in select_flags})
            row['chosen_epoch'], row['holdout_MAP@R'] = choices[cell].epoch, choices[cell].holdout
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


def summarise(out):
    """Write DIR/summary.csv, DIR/summary.md and DIR/curves.png from the runs' descriptors and
    metrics files (with held-out classes also DIR/holdout_curves.png, a table of every cell's
    holdout MAP@R by epoch and, without --select, the cells at their chosen epochs); name each
    missing seed (summary.md and stdout). Returns the summary rows ([] when no run is complete:
    nothing written). InputError for a damaged metrics file or
    descriptor, or a summary that cannot be written."""
    descriptors = read_descriptors(out)
    cells = collect(out, descriptors)
    missing = missing_runs(out, descriptors, cells)
    for line in missing:
        say(line)
    select = {flag for descriptor in descriptors for flag in descriptor.get('select') or ()}
    trained = trainers(out, descriptors, cells)
    if select:  # each cell reported at its chosen values and epoch
        reported, choices = tune(cells, select)
        curves = {choice.cell: cells[choice.cell] for choice in choices.values()}
    else:
        reported, choices, curves = cells, None, cells
    table, vary_flags = summary_rows(reported, choices)
    if not table:
        complain(f'no complete run under {out}/runs yet: no summary')
        return table
    holdout = select or all(on_holdout(evaluations(rows)) for runs in cells.values()
                            for rows in runs.values())
    markdown = markdown_table(table, vary_flags, trained, missing, holdout=bool(holdout),
                              select=sorted(select))
    if holdout and not select:  # the same cells at the epoch the held-out classes choose
        tuned, epochs = tune(cells, set())
        markdown += '\n' + '\n'.join(chosen_epoch_table(*summary_rows(tuned, epochs))) + '\n'
    if holdout:  # every candidate's curve on the held-out classes: where it levels off
        holdout_curves = curve_series(cells, HOLDOUT_MAP)
        markdown += '\n' + '\n'.join(epoch_table(holdout_curves, HOLDOUT_MAP)) + '\n'
    write_summary(out, table, markdown)
    # PlotError (an InputError) if unwritable
    plot_curves(curve_series(curves), os.path.join(out, 'curves.png'),
                title='R@1: mean over seeds, 95% band')
    if holdout:
        plot_curves(holdout_curves, os.path.join(out, 'holdout_curves.png'),
                    title=f'{HOLDOUT_MAP} of every cell: mean over seeds, 95% band',
                    ylabel=HOLDOUT_MAP)
    return table


def write_summary(out, table, markdown):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(table[0]), lineterminator='\n')
    writer.writeheader()
    for row in table:
        writer.writerow({k: ('' if v is None else v) for k, v in row.items()})
    try:
        for name, content in (('summary.csv', text.getvalue()), ('summary.md', markdown)):
            with open(os.path.join(out, name), 'w', encoding='utf-8') as f:
                f.write(content)
    except OSError as err:
        raise InputError(f'cannot write the summary: {err.filename}: {err.strerror}') from None


def format_ci(mean, half_width, signed=False):
    if mean is None:
        return '–'
    text = f'{mean:+.4f}' if signed else f'{mean:.4f}'
    return f'{text} ± {half_width:.4f}' if half_width is not None else f'{text} (no CI, n=1)'


def markdown_table(table, vary_flags, commands=(), missing=(), holdout=False, select=()):
    lines = ['# MMSI comparison', '']
    if commands:
        lines += ['Trained by:', ''] + [f'    {command}' for command in commands] + ['']
    if select:
        lines += [f'Each cell is tuned: the values of {", ".join(select)} and the epoch with the '
                  f'highest holdout MAP@R averaged over seeds (held-out training classes, never '
                  f'the test classes); the test metrics are reported there, as mean ± '
                  f'half-width of the 95% confidence interval (t distribution, n seeds); Δ is the '
                  f'paired difference to the same loss without MMSI, each at its own choice, '
                  f'seed by seed.', '']
    else:
        chosen_on = ('the highest holdout MAP@R (chosen on held-out training classes)'
                     if holdout else 'the highest R@1 (chosen on the test set, so optimistic)')
        lines += ['Mean ± half-width of the 95% confidence interval (t distribution, n seeds) at '
                  f'the last evaluation; "best" is the evaluation with {chosen_on}; Δ is the '
                  'paired difference to the same loss without MMSI, seed by seed.', '']
    lines += table_lines(table, vary_flags, select, chosen=bool(select), best=True)
    if missing:
        lines += ['', 'Missing runs (left out of the table):', ''] + [f'- {m}' for m in missing]
    return '\n'.join(lines) + '\n'


def chosen_epoch_table(table, vary_flags):
    """Markdown lines: each cell at the epoch with its highest seed-mean holdout MAP@R, with
    the paired Δ each at its own epoch (a study without --select)."""
    return (['At the epoch chosen on the held-out classes (the highest holdout MAP@R averaged '
             'over seeds, per cell); Δ pairs each cell with its plain cell, each at its own '
             'epoch:', '']
            + table_lines(table, vary_flags, chosen=True, best=False))


def table_lines(table, vary_flags, select=(), chosen=False, best=True):
    """Markdown header and rows of summary rows: the cell, the chosen values of `select` and
    (`chosen`) the chosen epoch with its holdout MAP@R, n, the metrics, (`best`) the best R@1
    and its epoch, and the paired Δ."""
    header = (['loss', 'MMSI', 'pair weights'] + vary_flags
              + [f'chosen {flag}' for flag in select]
              + (['epoch', 'holdout MAP@R'] if chosen else []) + ['n'] + list(METRICS)
              + (['best R@1 (epoch)'] if best else []) + [f'Δ {m}' for m in METRICS])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in table:
        fields = [row['loss'], str(row['mmsi']), row['pair_weights']]
        fields += [str(row[flag]) for flag in vary_flags]
        fields += [str(row.get(f'chosen_{flag}', '')) for flag in select]
        if chosen:
            fields += [str(row['chosen_epoch']), f'{row["holdout_MAP@R"]:.4f}']
        fields += [str(row['n'])]
        fields += [format_ci(row[f'{m}_mean'], row[f'{m}_ci95']) for m in METRICS]
        if best:
            fields.append(f'{format_ci(row["best_R@1_mean"], row["best_R@1_ci95"])} '
                          f'({row["best_epoch_mean"]:.1f})')
        fields += [format_ci(row[f'diff_{m}_mean'], row[f'diff_{m}_ci95'], signed=True)
                   for m in METRICS]
        lines.append('| ' + ' | '.join(fields) + ' |')
    return lines


def curve_series(cells, metric='R@1'):
    """Per cell, its mean `metric` at each epoch every run of it evaluated, with the half-width
    of the 95% interval when it has several runs (utils.plot.Series)."""
    series = []
    for cell in sorted(cells, key=Cell.sort_key):
        per_run = [{row['epoch']: row[metric] for row in evaluations(rows) if metric in row}
                   for rows in cells[cell].values()]
        epochs = sorted(set.intersection(*(set(points) for points in per_run)))
        stats = [mean_ci([points[epoch] for points in per_run]) for epoch in epochs]
        series.append(Series(f'{cell.label()} (n={len(per_run)})', epochs,
                             [mean for mean, _ in stats],
                             [half for _, half in stats] if len(per_run) > 1 else None))
    return series


def epoch_table(series, metric):
    """Markdown lines: each curve's seed-mean `metric` at every epoch, one row per cell (is
    it still rising at the last epoch, or has it levelled off?)."""
    epochs = sorted({epoch for curve in series for epoch in curve.x})
    lines = [f'Seed-mean {metric} at each evaluation (every cell, every value tried):', '',
             '| cell | ' + ' | '.join(f'ep {epoch}' for epoch in epochs) + ' |',
             '|---|' + '---|' * len(epochs)]
    for curve in series:
        values = dict(zip(curve.x, curve.y))
        lines.append(f'| {curve.label} | ' + ' | '.join(
            f'{values[epoch]:.4f}' if epoch in values else '' for epoch in epochs) + ' |')
    return lines


# ---- command line -------------------------------------------------------------------------------

QUICK = dict(seeds=[0, 1], stage1_epochs=4, epochs=2)


class HarnessParser(argparse.ArgumentParser):
    """argparse whose errors are one line (an InputError, printed by main), not the usage."""

    def error(self, message):
        raise InputError(f'{message} (python compare.py --help)')


def vary_axis(text):
    flag, sep, values = str(text).partition('=')
    flag = flag.lstrip('-')
    if not sep or not flag or not values:
        raise argparse.ArgumentTypeError(f'expected FLAG=V1,V2,..., got {text!r}')
    return flag, [value for value in values.split(',') if value]


def build_parser():
    parser = HarnessParser(
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
    parser.add_argument('--select', type=vary_axis, action='append', default=[],
                        metavar='FLAG=V1,V2',
                        help='tune every cell over these values of a training flag, '
                             'repeatable: the summary reports each cell at the values and '
                             'epoch with the best holdout MAP@R averaged over seeds (needs '
                             '--holdout_classes N after --); finished runs are reused by a '
                             'wider --select')
    parser.add_argument('--protocol', choices=('finetune', 'scratch'), default='finetune')
    parser.add_argument('--stage1_epochs', type=positive_int, default=12,
                        help='finetune: epochs of the plain MS stage 1')
    parser.add_argument('--stage1_lr', type=positive_float, default=1e-4)
    parser.add_argument('--jobs', type=positive_int, default=1, help='runs at a time')
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='CPU threads per run (default: usable CPUs / jobs)')
    parser.add_argument('--quick', action='store_true',
                        help='seeds 0 1, stage 1 of 4 epochs, cells of 2 epochs')
    parser.add_argument('--keep_checkpoints', choices=('all', 'last'), default='all',
                        help='last: when a run finishes, delete its ckp_epN.pth.tar files but '
                             'last.pth.tar and the stage-1 checkpoint the cells start from '
                             '(a study of many runs then fits a small disk)')
    parser.add_argument('--extend', action='store_true',
                        help='allow a higher --epochs than the existing runs were trained for: '
                             'they continue to it (stage-1 runs are never extended)')
    parser.add_argument('--summarise', metavar='DIR',
                        help='only (re)write the summary of an existing output folder')
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        options, common = parse_command_line(argv)
        if options.summarise:
            return summarise_folder(options.summarise)
        stage1, runs = plan(options, common)
        check_with_data(stage1 + runs)
    except InputError as err:
        complain(f'error: {err}')
        return 2
    return run_grid(options, stage1, runs, shlex.join(['python', 'compare.py', *argv]))


def parse_command_line(argv):
    """(harness options, training flags) of a command line, checked; --out made absolute
    once: trainings run in the repository's folder, not in the caller's."""
    split = argv.index('--') if '--' in argv else len(argv)
    options = build_parser().parse_args(argv[:split])
    common = argv[split + 1:]
    if options.summarise:
        options.summarise = os.path.abspath(options.summarise)
        return options, common
    if not options.out:
        raise InputError('--out: give the output folder')
    options.out = os.path.abspath(options.out)
    if options.quick:
        options.seeds = QUICK['seeds']
        options.stage1_epochs = QUICK['stage1_epochs']
        common = common + ['--epochs', str(QUICK['epochs'])]
    check_distinct(options)
    check_vary(options.vary)
    check_vary(options.select, '--select')
    return options, common


def check_distinct(options):
    """Each value of a grid axis once: a repeated one would count its runs twice."""
    axes = [('--losses', options.losses), ('--mmsi', options.mmsi), ('--seeds', options.seeds)]
    axes += [(f'--vary {flag}', values) for flag, values in options.vary]
    axes += [(f'--select {flag}', values) for flag, values in options.select]
    for name, values in axes:
        repeated = [value for i, value in enumerate(values) if value in values[:i]]
        if repeated:
            raise InputError(f'{name}: {repeated[0]} is given twice')
    axes = [('--vary', flag) for flag, _ in options.vary]
    axes += [('--select', flag) for flag, _ in options.select]
    for i, (option, flag) in enumerate(axes):
        earlier = [other for other, same in axes[:i] if same == flag]
        if earlier and earlier[0] == option:
            raise InputError(f'{option} {flag}: given twice; put all its values in one axis')
        if earlier:
            raise InputError(f'{earlier[0]} {flag} and {option} {flag}: a flag is either varied '
                             f'or selected, not both')


def check_vary(vary, option='--vary'):
    known = flag_names()
    for flag, values in vary:
        if flag not in known:
            raise InputError(f'{option} {flag}: not a training flag (python MMSI_train.py '
                             f'--help)')
        if not values:
            raise InputError(f'{option} {flag}: give at least one value')


def summarise_folder(out):
    """--summarise DIR: 0 when a summary was written; 1 when there was nothing to summarise
    or it failed; 2 for a folder that does not exist."""
    if not os.path.isdir(out):
        raise InputError(f'--summarise {out}: no such folder')
    return 0 if announce_summary(out) else 1


def announce_summary(out):
    """Write the summary and say where; False (with an error line) when it could not be
    written or there was nothing to summarise: a summary is never announced unwritten."""
    try:
        table = summarise(out)
    except InputError as err:
        complain(f'error: {err}')
        return False
    if table:
        say(f'summary: {os.path.join(out, "summary.md")}')
    return bool(table)


def run_grid(options, stage1, runs, command_line):
    """Train the grid under the harness lock, then summarise it. Exit status: 0 when every run
    finished and the summary was written; 1 when a run failed or the summary could not be
    written; 2 when DIR is in use or a run's flags changed; 128 + signal when stopped."""
    try:
        lock = lock_folder(options.out)
    except InputError as err:
        complain(f'error: {err}')
        return 2
    stop = Stop()
    try:
        settle_identities(stage1 + runs, options.extend)
        threads = options.threads or max(1, len(os.sched_getaffinity(0)) // options.jobs)
        runner = Runner(options.jobs, threads, command_line, stop, options.keep_checkpoints)
        say(f'{len(stage1)} stage-1 runs and {len(runs)} cell runs; {options.jobs} at a time, '
            f'{threads} threads each; output in {options.out}')
        runner.run_all(stage1)
        failed_seeds = {run.seed for run in runner.failed}  # of stage 1, so far
        if runs and not stop.requested and all(run.seed in failed_seeds for run in runs):
            complain(f'error: every stage-1 run failed (see {os.path.dirname(stage1[0].console)}'
                     f'): no cell could start; nothing to summarise')
            return 1
        runner.run_all([] if stop.requested else cells_ready(runs, failed_seeds))
        if stop.requested:
            say(f'stopped by {stop.name()}: to resume, rerun the same command: {command_line}')
            return 128 + stop.signum
        if not announce_summary(options.out) or runner.failed:
            if runner.failed:
                complain(f'{len(runner.failed)} run(s) failed: '
                         + ', '.join(run.name for run in runner.failed))
            return 1
        return 0
    except InputError as err:  # a changed run's flags; a damaged descriptor
        complain(f'error: {err}')
        return 2
    finally:
        stop.restore()
        lock.close()


def cells_ready(runs, failed_seeds):
    """The cell runs whose seed's stage 1 has not failed; a line for each seed left out."""
    for seed in sorted(failed_seeds):
        count = sum(run.seed == seed for run in runs)
        complain(f'skip the {count} cell run(s) of seed {seed}: its stage 1 failed')
    return [run for run in runs if run.seed not in failed_seeds]


if __name__ == '__main__':
    sys.exit(main())
