"""Run output: `log.txt` (everything printed, plain text) and `metrics.jsonl` (one JSON object
per epoch or evaluation: epoch, loss, every R@K, MMSI statistics, seconds)."""
import fcntl
import json
import os
import sys
import time

from utils.checkpoint import atomic_write_text

LOG_FILE = 'log.txt'
METRICS_FILE = 'metrics.jsonl'


class RunLog:
    """Prints to stdout and appends to save_dir/log.txt; keeps the metrics history.

    While open it holds a lock on log.txt, which tells other runs that the folder is in use
    (`in_use`). `enabled=False` (ranks other than 0) prints and writes nothing.
    """

    def __init__(self, save_dir, append=False, enabled=True):
        self.save_dir = save_dir
        self.enabled = enabled
        self.history = []
        self._file = None
        if enabled:
            path = os.path.join(save_dir, LOG_FILE)
            if not append:
                open(path, 'w').close()
            # Always append mode: loader workers add lines too (skipped images), and a writer
            # with its own file offset would overwrite them.
            self._file = open(path, 'a', encoding='utf-8')
            _flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def print(self, message=''):
        self._write(message, sys.stdout)

    def error(self, message):
        """An error line: on stderr, and in log.txt."""
        self._write(message, sys.stderr)

    def _write(self, message, stream):
        if not self.enabled:
            return
        print(message, file=stream, flush=True)
        self._file.write(message + '\n')
        self._file.flush()

    def timestamped(self, message):
        self.print(f'[{time.strftime("%Y-%m-%d %H:%M:%S")}] {message}')

    def record(self, row):
        """Append one metrics row and rewrite metrics.jsonl from the whole history."""
        self.history.append(row)
        self.write_metrics()

    def write_metrics(self):
        if self.enabled:
            text = ''.join(json.dumps(row) + '\n' for row in self.history)
            atomic_write_text(text, os.path.join(self.save_dir, METRICS_FILE))

    def close(self):
        if self._file is not None:
            # Explicitly: forked loader workers share the open file and would keep the lock.
            _flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def in_use(log_path):
    """Whether a running training holds the lock on `log_path` (False on a file system that
    has no locks)."""
    with open(log_path, 'rb') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
    return False


def _flock(file, operation):
    """fcntl.flock, where the file system has locks (a run works without)."""
    try:
        fcntl.flock(file, operation)
    except OSError:
        pass


def read_metrics(path):
    """The rows of a metrics.jsonl file."""
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


# The order of a step's statistics in the log lines; any statistic a step returns that is not
# listed here follows, in alphabetical order.
STAT_ORDER = ('loss', 'pos_sim', 'neg_sim', 'val_loss', 'w_mean', 'w_max', 'w_pos_frac',
              'w_pos_pairs', 'w_neg_pairs')
# The evaluation metrics of a "Recall ..." line, in this order after the R@K.
RETRIEVAL_SUMMARY = ('MAP@R', 'R-Precision')


def format_stat(value):
    """Four decimals, or three significant digits for magnitudes below 1e-3 (pair weights of
    the MS negatives are around 1e-8), so that no statistic prints as a misleading 0.0000."""
    return f'{value:.2e}' if 0 < abs(value) < 1e-3 else f'{value:.4f}'


def format_stats(stats):
    """`loss 1.8600  pos_sim 0.5500 ...` for whatever statistics `stats` holds."""
    order = {key: index for index, key in enumerate(STAT_ORDER)}
    keys = sorted(stats, key=lambda key: (order.get(key, len(order)), key))
    return '  '.join(f'{key} {format_stat(stats[key])}' for key in keys)


def format_skipped(counts):
    """`skipped warmup 4, zero_weights 1`, or `skipped none`."""
    return 'skipped ' + (', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none')


def format_recalls(metrics):
    return '  '.join(f'{key} {value:.4f}' for key, value in metrics.items())


def recall_line(where, metrics):
    """`Recall epoch 3: R@1 0.6685  R@2 ...  MAP@R 0.1256  R-Precision 0.2301` (utils/plot.py
    reads R@1 back)."""
    shown = {k: v for k, v in metrics.items() if k.startswith('R@')}
    shown.update((k, metrics[k]) for k in RETRIEVAL_SUMMARY if k in metrics)
    return f'Recall {where}: {format_recalls(shown)}'


def warn(message):
    print(message, file=sys.stderr, flush=True)
