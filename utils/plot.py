"""R@1 and loss curves of one or more runs, overlaid:

    python utils/plot.py ckps/con_plain ckps/con_mmsi -o curves.png [--labels plain MMSI]

Each RUN is a save_dir (its metrics.jsonl is read, or its log.txt when there is no metrics
file), or one of those files directly. A metrics file cut short (a copy of a run being written,
a full disk) is read up to its last complete line, with a warning. Bad input ends in one
"error: ..." line and exit status 2.
"""
import argparse
import json
import os
import re
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

RECALL_LINE = re.compile(r'Recall epoch (\d+)(?: iteration (\d+))?: R@1 ([0-9.]+)')
EPOCH_LINE = re.compile(r'Epoch (\d+) done in [0-9.]+s\s+loss ([0-9.eE+-]+)')


class PlotError(Exception):
    """Bad input: main prints it as one line and exits with status 2."""


def read_run(path):
    """{'r1': [(epoch, R@1)], 'loss': [(epoch, loss)]} from a run folder or file."""
    if os.path.isdir(path):
        metrics = os.path.join(path, 'metrics.jsonl')
        path = metrics if os.path.exists(metrics) else os.path.join(path, 'log.txt')
    if not os.path.isfile(path):
        raise PlotError(f'{path}: no metrics.jsonl or log.txt to plot')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if path.endswith('.jsonl'):
        rows = rows_from_metrics(path, text)
    else:
        rows = rows_from_log(text)
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


def rows_from_metrics(path, text):
    """The JSON rows of a metrics file; an incomplete last line is left out with a warning."""
    lines = [line for line in text.splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise PlotError(f'{path}, line {number}: not a JSON object: {line[:60]!r}')
            print(f'warning: {path}: the last line is incomplete; read the {len(rows)} complete '
                  f'line(s) before it', file=sys.stderr)
    return rows


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


def plot_runs(paths, output, labels=None, title=None):
    labels = labels or [os.path.basename(os.path.normpath(p)) or p for p in paths]
    if len(labels) != len(paths):
        raise PlotError(f'{len(paths)} runs but {len(labels)} --labels')
    fig, (ax_r1, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for path, label in zip(paths, labels):
        curves = read_run(path)
        if curves['r1']:
            ax_r1.plot(*zip(*curves['r1']), marker='o', markersize=3, label=label)
        if curves['loss']:
            ax_loss.plot(*zip(*curves['loss']), label=label)
    ax_r1.set(xlabel='epoch', ylabel='Recall@1', title='R@1 on the test classes')
    ax_loss.set(xlabel='epoch', ylabel='training loss', title='loss')
    for ax in (ax_r1, ax_loss):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(output, dpi=120)
    except (OSError, ValueError) as err:  # an unwritable path; an unknown image format
        reason = getattr(err, 'strerror', None) or err
        raise PlotError(f'-o {output}: cannot write the figure ({reason})') from None
    finally:
        plt.close(fig)
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', help='run folders (save_dir) or metrics/log files')
    parser.add_argument('-o', '--output', default='curves.png', help='image file to write')
    parser.add_argument('--labels', nargs='+', help='legend labels, one per run')
    parser.add_argument('--title')
    args = parser.parse_args(argv)
    try:
        print(plot_runs(args.runs, args.output, args.labels, args.title))
    except PlotError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
