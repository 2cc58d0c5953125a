"""Does MMSI help? Train a grid of runs over losses, MMSI on/off, pair-weight forms and seeds,
then summarise them with 95% confidence intervals.

    python compare.py --out cmp --losses MS Triplet --mmsi 0 1 \\
        --pair_weights official gradient --seeds 0 1 2 --vary val_batch_size=10,40 \\
        -- --data glyphs --width 64 --pretrained none --epochs 6 ...

A cell is one line of the summary (loss, MMSI, pair-weight form and the --vary values); a trial
is one seed of one cell, one MMSI_train.py training. Everything after `--` is passed to every
trial. Trials go to DIR/runs/<loss>_mmsi<0|1>_<pair_weights|none>_seed<k>[_<flag><value>...]/,
one after another or --jobs at a time. --protocol finetune (default): per seed, one plain MS
trial from the initial weights (DIR/stage1/MS_seed<k>/) that every cell of that seed fine-tunes
from, as `make demo` does; --protocol scratch: every cell starts from the initial weights.

Rerunning the same command never reruns a finished trial and resumes an interrupted one. A
trial's flags are its identity (stored in DIR/runs/<name>.cell.json before it first starts): a
rerun that changes them is refused, except a higher --epochs with --extend. One harness at a
time works in DIR (DIR/harness.lock); a trial's folder that a training still holds is waited
for. SIGINT or SIGTERM to the harness is passed on to its trainings, which save and stop; rerun
the same command to resume.

The summary is computed from the trials' metrics.jsonl files alone (`summarise`, also
`python compare.py --summarise DIR`): DIR/summary.csv, DIR/summary.md, DIR/curves.png.
The work is done by the package harness/ (one module per job: harness/__init__.py).
"""
import os
import shlex
import sys

from common.errors import InputError
from harness.command_line import parse_command_line
from harness.grid import check_with_data, plan
from harness.identity import settle_identities
from harness.messages import complain, say
from harness.report import summarise
from harness.supervision import Stop, Supervisor, lock_folder

DESCRIPTION = __doc__.split('\n\n')[0]  # the first paragraph: what --help says


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        options, common = parse_command_line(argv, DESCRIPTION)
        if options.summarise:
            return summarise_folder(options.summarise)
        stage1, trials = plan(options, common)
        check_with_data(stage1 + trials)
    except InputError as err:
        complain(f'error: {err}')
        return 2
    return train_grid(options, stage1, trials, shlex.join(['python', 'compare.py', *argv]))


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


def train_grid(options, stage1, trials, command_line):
    """Train the grid under the harness lock, then summarise it. Exit status: 0 when every
    trial finished and the summary was written; 1 when a trial failed or the summary could not
    be written; 2 when DIR is in use or a trial's flags changed; 128 + signal when stopped."""
    try:
        lock = lock_folder(options.out)
    except InputError as err:
        complain(f'error: {err}')
        return 2
    stop = Stop()
    try:
        settle_identities(stage1 + trials, options.extend)
        threads = options.threads or max(1, len(os.sched_getaffinity(0)) // options.jobs)
        supervisor = Supervisor(options.jobs, threads, command_line, stop,
                                options.keep_checkpoints)
        say(f'{len(stage1)} stage-1 runs and {len(trials)} cell runs; {options.jobs} at a time, '
            f'{threads} threads each; output in {options.out}')
        supervisor.train_all(stage1)
        failed_seeds = {trial.seed for trial in supervisor.failed}  # of stage 1, so far
        if trials and not stop.requested and all(trial.seed in failed_seeds for trial in trials):
            complain(f'error: every stage-1 run failed (see {os.path.dirname(stage1[0].console)}'
                     f'): no cell could start; nothing to summarise')
            return 1
        supervisor.train_all([] if stop.requested else trials_ready(trials, failed_seeds))
        if stop.requested:
            say(f'stopped by {stop.name()}: to resume, rerun the same command: {command_line}')
            return 128 + stop.signum
        if not announce_summary(options.out) or supervisor.failed:
            if supervisor.failed:
                complain(f'{len(supervisor.failed)} run(s) failed: '
                         + ', '.join(trial.name for trial in supervisor.failed))
            return 1
        return 0
    except InputError as err:  # a trial's changed flags; a damaged descriptor
        complain(f'error: {err}')
        return 2
    finally:
        stop.restore()
        lock.close()


def trials_ready(trials, failed_seeds):
    """The cells' trials whose seed's stage 1 has not failed; a line for each seed left out."""
    for seed in sorted(failed_seeds):
        count = sum(trial.seed == seed for trial in trials)
        complain(f'skip the {count} cell run(s) of seed {seed}: its stage 1 failed')
    return [trial for trial in trials if trial.seed not in failed_seeds]


if __name__ == '__main__':
    sys.exit(main())
