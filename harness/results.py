"""What the trials' folders hold, read back: their descriptors and metrics rows, the complete
trials of each cell, the missing ones, and the commands that trained them. The summary is
computed from these files alone."""
import os

from common.log_format import HOLDOUT_PREFIX
from harness.grid import Cell
from harness.trial import read_descriptor
from utils.logger import read_metrics
from utils.run_folder import METRICS_FILE, run_files

METRICS = ('R@1', 'MAP@R', 'R-Precision')
HOLDOUT_MAP = HOLDOUT_PREFIX + 'MAP@R'  # what --select and the "best" columns choose on


def read_rows(trial_dir):
    """The metrics rows of a trial's folder ([] before its first); a file cut short is read to
    its last complete line (utils.logger.read_metrics)."""
    path = os.path.join(trial_dir, METRICS_FILE)
    return read_metrics(path) if os.path.exists(path) else []


def evaluations(rows):
    """The per-epoch evaluation rows (not the --eval_every ones inside an epoch)."""
    return [row for row in rows if 'R@1' in row and 'iteration' not in row]


def last_evaluation(rows):
    evaluated = evaluations(rows)
    return evaluated[-1] if evaluated else None


def best_evaluation(rows):
    """The evaluation with the highest holdout MAP@R when the trial has held-out classes
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


def read_descriptors(out):
    """The descriptors of the cells' trials under DIR/runs (DIR/runs/<name>.cell.json)."""
    runs_dir = os.path.join(out, 'runs')
    entries = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    return [read_descriptor(os.path.join(runs_dir, entry)) for entry in entries
            if entry.endswith('.cell.json')]


def complete_rows(out, descriptor):
    """The metrics rows of a descriptor's trial when it is complete (an evaluation at its last
    epoch), else None."""
    rows = read_rows(os.path.join(out, 'runs', descriptor['name']))
    if descriptor.get('start'):
        rows = starting_rows(os.path.join(out, descriptor['start']), rows)
    last = last_evaluation(rows)
    return rows if last is not None and last['epoch'] == descriptor['epochs'] else None


def collect(out, descriptors=None):
    """{Cell: {seed: rows}} of the complete trials under DIR/runs, read from their descriptors
    and metrics files (incomplete trials are left out: `missing_trials` names them)."""
    cells = {}
    for descriptor in read_descriptors(out) if descriptors is None else descriptors:
        rows = complete_rows(out, descriptor)
        if rows is not None:
            cells.setdefault(Cell.from_descriptor(descriptor), {})[descriptor['seed']] = rows
    return cells


def missing_trials(out, descriptors, cells):
    """A line for each trial of a cell (it has a descriptor) that the summary lacks."""
    lines = []
    for descriptor in descriptors:
        cell = Cell.from_descriptor(descriptor)
        if descriptor['seed'] not in cells.get(cell, {}):
            folder = os.path.join(out, 'runs', descriptor['name'])
            state = 'not finished' if run_files(folder) else 'not started'
            lines.append(f'{cell.label()}: seed {descriptor["seed"]} missing ({state})')
    return lines


def trainers(out, descriptors, cells):
    """The harness commands that trained the summarised trials and the stage-1 trials they
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
    """A fine-tuning trial's rows with its epoch 0 taken from the last evaluation of the trial
    it started from (the same weights, so the same numbers), unless it evaluated epoch 0
    itself."""
    start = last_evaluation(read_rows(start_dir))
    if start is None or any(row.get('epoch') == 0 for row in evaluations(rows)):
        return rows
    return [{key: value for key, value in start.items()
             if key in METRICS or key.startswith(('R@', 'holdout/'))} | {'epoch': 0}] + rows
