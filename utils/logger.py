"""Run output: `log.txt` (everything printed, plain text) and `metrics.jsonl` (one JSON object
per epoch or evaluation: epoch, loss, every R@K, MMSI statistics, seconds)."""
import fcntl
import json
import os
import sys
import time

import losses
from common.errors import InputError
from utils.files import atomic_write_text, is_no_space, no_space
from utils.run_folder import LOG_FILE, METRICS_FILE, NOISY_LABELS_FILE


class RunLog:
    """Prints to stdout and appends to save_dir/log.txt; keeps the metrics history.

    While open it holds a lock on log.txt, which tells other runs that the folder is in use
    (utils.run_folder.in_use). `enabled=False` (ranks other than 0) prints and writes nothing.
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
        try:
            self._file.write(message + '\n')
            self._file.flush()
        except OSError as err:
            if is_no_space(err):
                raise no_space(err, self._file.name) from None
            raise

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


def _flock(file, operation):
    """fcntl.flock, where the file system has locks (a run works without)."""
    try:
        fcntl.flock(file, operation)
    except OSError:
        pass


def read_metrics(path):
    """The rows of a metrics.jsonl file: the one reader (utils/plot.py, the harness compare.py).

    A file cut short (a copy of a run being written, a full disk) is read up to its last
    complete line, with a warning on stderr; a damaged line before the last is an InputError
    naming the file and the line."""
    with open(path, encoding='utf-8') as f:
        lines = [(number, line) for number, line in enumerate(f.read().splitlines(), 1)
                 if line.strip()]
    rows = []
    for position, (number, line) in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif position < len(lines):
            raise InputError(f'{path}, line {number}: not a JSON object: {line[:60]!r}')
        else:
            warn(f'warning: {path}: the last line is incomplete; read the {len(rows)} '
                 f'complete line(s) before it')
    return rows


def warn(message):
    print(message, file=sys.stderr, flush=True)


def describe_run(run, dataset, notes, changes=None, relabelled=()):
    """The run's header in log.txt: what it is (new or resumed, with its run id), the notes of
    the folder's preparation, every flag, what changed since the checkpoint (`changes`, from
    utils.config; None for a new run), the data (with the holdout classes and the labels
    --label_noise changed: `relabelled`), the device, the loss and MMSI's settings."""
    args, log = run.args, run.log
    log.timestamped((f'Resuming {args.resume}' if changes is not None else 'New run')
                    + f' (run {run.run_id})')
    for note in notes:
        log.print(f'Note: {note}')
    log.print('Arguments: ' + ' '.join(f'--{k} {v}' for k, v in sorted(vars(args).items())))
    if changes is not None:
        log.print('Changed since the checkpoint: ' + (', '.join(map(str, changes))
                                                      or 'nothing'))
    query = dataset.query
    test = (f'{len(dataset.gallery)} test images of {dataset.gallery.num_classes} classes'
            if query is None else
            f'{len(query)} query images of {query.num_classes} classes against '
            f'{len(dataset.gallery)} gallery images of {dataset.gallery.num_classes} classes')
    log.print(f'Data: {dataset.source}: {len(dataset.train)} training images of '
              f'{dataset.train.num_classes} classes, {test}')
    if dataset.holdout is not None:
        log.print(f'Holdout: {len(dataset.holdout)} images of {dataset.holdout.num_classes} '
                  f'training classes (--holdout_classes) set aside for selection, never trained '
                  f'on')
    if args.label_noise:
        log.print(f'Label noise: {len(relabelled)} of {len(dataset.train)} training labels '
                  f'changed (seed {args.noise_seed}); {NOISY_LABELS_FILE}')
    log.print(f'Device: {run.device}; seed {run.seed}; {run.iterations_per_epoch} iterations '
              f'per epoch; MMSI {"on" if args.MMSI else "off"}'
              + (f'; {run.dist.world_size} processes, batch {args.batch_size} per process'
                 if run.dist.enabled else ''))
    params = {**losses.parameters(args.loss), **args.loss_params}
    log.print(f'Loss: {args.loss} ({", ".join(f"{k} {v}" for k, v in params.items())})'
              + (f'; pair weights {args.pair_weights}' if args.MMSI else '')
              + f'; rule {losses.rule_of(args.loss)}')
    if args.ignored_loss_flags:
        log.print(f'Not parameters of {args.loss}, ignored: ' + ', '.join(
            f'--{k} {v}' for k, v in args.ignored_loss_flags.items()))
    if args.MMSI:
        log.print(f'MMSI: meta_grad {args.meta_grad}, meta_lr {args.meta_lr}, dictionary d_size '
                  f'{args.d_size}, capacity {run.dictionary.capacity} rows, warm-up until '
                  f'{args.dict_min_classes} classes, validation batch {args.val_batch_size} '
                  f'({args.val_num_instances} per class), pair weights {args.mmsi_weights} '
                  f'normalised by their {args.weight_norm}')
