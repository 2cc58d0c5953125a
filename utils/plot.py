"""R@1 and loss curves of one or more runs, overlaid:

    python utils/plot.py ckps/con_plain ckps/con_mmsi -o curves.png [--labels plain MMSI]

Each RUN is a save_dir (its metrics.jsonl is read, or its log.txt when there is no metrics
file), or one of those files directly. A metrics file cut short (a copy of a run being written,
a full disk) is read up to its last complete line, with a warning (`utils.logger.read_metrics`).
Bad input ends in one "error: ..." line and exit status 2.

`draw_curves` draws every curve of this file's figure and of the harness's curves.png
(compare.py): one line per series, with a band where the series has half-widths.
"""
import argparse
import os
import re
import sys
from typing import NamedTuple, Optional, Sequence

if not __package__:  # run as `python utils/plot.py`: the project's packages must be importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# matplotlib's object-oriented API: no pyplot, so importing this file switches no backend.
from matplotlib.figure import Figure  # noqa: E402

from common.errors import InputError  # noqa: E402
from utils.logger import read_metrics  # noqa: E402

RECALL_LINE = re.compile(r'Recall epoch (\d+)(?: iteration (\d+))?: R@1 ([0-9.]+)')
EPOCH_LINE = re.compile(r'Epoch (\d+) done in [0-9.]+s\s+loss ([0-9.eE+-]+)')


class PlotError(InputError):
    """Bad input: main prints it as one line and exits with status 2."""


class Series(NamedTuple):
    """One curve: y over x (epochs), with a band y +- half_widths when they are given."""
    label: str
    x: Sequence[float]
    y: Sequence[float]
    half_widths: Optional[Sequence[float]] = None


def read_run(path):
    """{'r1': [(epoch, R@1)], 'loss': [(epoch, loss)]} from a run folder or file."""
    if os.path.isdir(path):
        metrics = os.path.join(path, 'metrics.jsonl')
        path = metrics if os.path.exists(metrics) else os.path.join(path, 'log.txt')
    if not os.path.isfile(path):
        raise PlotError(f'{path}: no metrics.jsonl or log.txt to plot')
    if path.endswith('.jsonl'):
        rows = read_metrics(path)
    else:
        with open(path, encoding='utf-8') as f:
            rows = rows_from_log(f.read())
    curves = {'r1': [], 'loss': []}
    for row in rows:
        x = row['epoch'] - 1 + row['iteration'] / row['per_epoch'] if row.get('per_epoch') \
            else row['epoch']
        if 'R@1' in row:
            curves['r1'].append((x, row['R@1']))
        if 'loss' in row:
            curves['loss'].append((row['epoch'], row['loss']))
    for points in curves.values():  # a resumed log may repeat an epoch: keep the last value
        points[:] = sorted(dict(points).items())
    return curves


def rows_from_log(text):
    rows = []
    for line in text.splitlines():
        match = RECALL_LINE.search(line)
        if match and match.group(2) is None:
            rows.append({'epoch': int(match.group(1)), 'R@1': float(match.group(3))})
        match = EPOCH_LINE.search(line)
        if match:
            rows.append({'epoch': int(match.group(1)), 'loss': float(match.group(2))})
    return rows


def draw_curves(ax, series, title, ylabel, markers=True, legend_fontsize=None):
    """One line per series on `ax` (a band of the line's colour where it has half-widths),
    against the epoch; a legend when something was drawn."""
    for curve in series:
        line, = ax.plot(curve.x, curve.y, label=curve.label,
                        **(dict(marker='o', markersize=3) if markers else {}))
        if curve.half_widths is not None:
            ax.fill_between(curve.x, [y - h for y, h in zip(curve.y, curve.half_widths)],
                            [y + h for y, h in zip(curve.y, curve.half_widths)],
                            color=line.get_color(), alpha=0.15)
    ax.set(xlabel='epoch', ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=legend_fontsize)


def plot_curves(series, path, title, ylabel='Recall@1'):
    """A figure of one panel of curves (the harness's curves.png), written to `path`."""
    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    draw_curves(ax, series, title, ylabel, legend_fontsize=7)
    return save_figure(fig, path)


def plot_runs(paths, output, labels=None, title=None):
    """R@1 (left) and training loss (right) of each run, one line per run."""
    labels = labels or [os.path.basename(os.path.normpath(p)) or p for p in paths]
    if len(labels) != len(paths):
        raise PlotError(f'{len(paths)} runs but {len(labels)} --labels')
    r1, loss = [], []
    for path, label in zip(paths, labels):
        curves = read_run(path)
        if curves['r1']:
            r1.append(Series(label, *zip(*curves['r1'])))
        if curves['loss']:
            loss.append(Series(label, *zip(*curves['loss'])))
    fig = Figure(figsize=(11, 4))
    ax_r1, ax_loss = fig.subplots(1, 2)
    draw_curves(ax_r1, r1, 'R@1 on the test classes', 'Recall@1')
    draw_curves(ax_loss, loss, 'loss', 'training loss', markers=False)
    if title:
        fig.suptitle(title)
    return save_figure(fig, output, f'-o {output}')


def save_figure(fig, path, name=None):
    """Lay out and write a figure; PlotError, naming the file as `name` (default: its path),
    when it cannot be written."""
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except (OSError, ValueError) as err:  # an unwritable path; an unknown image format
        reason = getattr(err, 'strerror', None) or err
        raise PlotError(f'{name or path}: cannot write the figure ({reason})') from None
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', help='run folders (save_dir) or metrics/log files')
    parser.add_argument('-o', '--output', default='curves.png', help='image file to write')
    parser.add_argument('--labels', nargs='+', help='legend labels, one per run')
    parser.add_argument('--title')
    args = parser.parse_args(argv)
    try:
        print(plot_runs(args.runs, args.output, args.labels, args.title))
    except InputError as err:  # PlotError, or a damaged metrics file
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
