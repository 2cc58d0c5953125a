"""Train an embedding with or without MMSI and evaluate it: `python MMSI_train.py --help`.

    python MMSI_train.py --data cub --loss Con --MMSI 1 --save_dir ckps/con_mmsi
    python MMSI_train.py ... --resume ckps/con_mmsi/last.pth.tar      # continue a run

Everything printed also goes to <save_dir>/log.txt; per-epoch numbers to metrics.jsonl;
checkpoints to last.pth.tar (every epoch) and ckp_epN.pth.tar (every --save_step epochs).
Bad input ends with one "error: ..." line and exit status 2, before anything is written.

Reading order: `main` resolves the flags into the run's configuration (utils/config.py), builds
the run (utils/build.py), trains it epoch by epoch (`train`, with trainer.train_epoch and the
step of trainer.py or trainer_MMSI.py) and evaluates it (`evaluate`).
"""
import os
import signal
import sys
import threading
import time

import trainer
from evaluations import ExtractionStopped
from common.errors import InputError
from utils.build import build_run
from utils.checkpoint import LAST_CHECKPOINT, epoch_checkpoint_name, save_checkpoint
from utils.config import resolve
from utils.distributed import Distributed
from utils.evaluation import NonFiniteEmbeddings, evaluate_network
from utils.files import NoSpace
from common.log_format import format_skipped, format_stats, holdout_line, recall_line

EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_NO_SPACE, EXIT_SIGNAL = 2, 3, 4, 128
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Launchers deliver one stop request more than once: SLURM signals every process of a job step,
# and torchrun forwards the signal it got to its workers. A repeat within this many seconds is
# the same request; a later one exits at once.
SAME_REQUEST_SECONDS = 2.0


def setup(argv=None, **defaults):
    """A built run from command-line flags, for notebooks and tests: MMSI_train.setup([...])."""
    return build_run(resolve(argv, **defaults))


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint has been written at an iteration boundary."""


def main(argv=None, **defaults):
    """Parse, build the run, train it. Returns the exit status. `defaults` override the
    flags' defaults (train.py: MMSI=0; MMSI_SOP_train.py: the SOP configuration). The signal
    handlers it installs are removed again when it returns."""
    run, dist = None, Distributed.from_environment()
    previous_handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        run = build_run(resolve(argv, **defaults), dist)
        handle_stop_signals(run)
        return train(run)
    except InputError as err:
        report_error(run, f'error: {last_line(err)}')
        return EXIT_BAD_INPUT
    except StopRequested:
        return EXIT_SIGNAL + run.stop_signal
    except trainer.NonFinite as err:
        stop_non_finite(run, err)
        return EXIT_NON_FINITE
    except NoSpace as err:  # nothing more can be written: stderr only
        print(f'error: {err.strerror}', file=sys.stderr)
        return EXIT_NO_SPACE
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing to save
        return EXIT_SIGNAL + signal.SIGINT
    except Exception as err:  # a bug: its traceback follows on stderr, log.txt keeps one line
        message = last_line(err)
        report_error(run, f'error: {type(err).__name__}' + (f': {message}' if message else '')
                     + ' (an unexpected error: its traceback follows on stderr)')
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        if run is not None and run.log is not None:
            run.log.close()
            run.tracker.close()
        dist.stop()


def report_error(run, line):
    """The line of an error that ends the run: on stderr, and in log.txt once this run has opened
    it (a bad image met while training, a file the run could not read). Before that, nothing is
    written: an input error leaves the folder as it was."""
    if run is None or run.log is None or not run.log.enabled:
        print(line, file=sys.stderr)
        return
    try:
        run.log.error(line)  # stderr first, then the file
    except OSError:
        pass  # the file cannot take it (a full disk): the line is on stderr


def handle_stop_signals(run):
    """The first SIGTERM or SIGINT asks for a stop at the next iteration boundary
    (`run.stop_signal`); a second one exits at once, leaving the last complete checkpoint (they
    are written atomically). Loader workers leave both to this process
    (DataSet/image_list.leave_signals_to_main_process)."""
    first = None

    def handler(signum, frame):
        nonlocal first
        name = signal.Signals(signum).name
        if first is None:
            first = time.monotonic()
            run.stop_signal = run.stop_signal or signum
            note(run, f'{name} received: stopping at the next iteration boundary (a second '
                      f'signal exits at once)')
        elif time.monotonic() - first > SAME_REQUEST_SECONDS:
            note(run, f'second {name}: exiting at once; the last checkpoint is complete')
            os._exit(EXIT_SIGNAL + signum)

    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, handler)


def note(run, message):
    """A line on stderr from a signal handler: os.write, as the handler may interrupt a print."""
    if run.dist.is_main:
        os.write(sys.stderr.fileno(), (message + '\n').encode())


def train(run):
    """Epochs from the resume point to --epochs: train, log, evaluate every --save_step epochs
    (and before the first, unless --eval_first 0), checkpoint."""
    args = run.args
    epoch, first_batch, meter_state = run.resume_point
    if args.eval_first and epoch == 1 and first_batch == 0 and not run.log.history:
        evaluate_and_record(run, {'epoch': 0}, position=(0, 0, None))
    for epoch in range(epoch, args.epochs + 1):
        tic = time.time()
        meter = trainer.train_epoch(
            run, epoch, lambda iteration, meter: after_iteration(run, epoch, iteration, meter),
            first_batch, meter_state)
        first_batch, meter_state = 0, None
        row = epoch_row(run, epoch, meter, time.time() - tic)
        run.log.print(epoch_line(row))
        if epoch % args.save_step == 0 or epoch == args.epochs:
            # abandoned: the epoch is saved as its last iteration, to evaluate on resuming
            evaluate_and_record(run, row, position=(epoch, meter.iterations, meter),
                                final=epoch == args.epochs)
        else:
            record(run, row)
        save_checkpoint(run, epoch)
        if epoch % args.save_step == 0:
            save_checkpoint(run, epoch, name=epoch_checkpoint_name(epoch))
    run.log.timestamped('Training finished')
    return 0


def after_iteration(run, epoch, iteration, meter):
    """Evaluate every --eval_every iterations; stop at this boundary when a signal arrived, or
    write last.pth.tar when --checkpoint_minutes have passed since the last one (decided
    together by all processes)."""
    every = run.args.eval_every
    if every and run.global_step % every == 0:
        evaluate_and_record(run, {'epoch': epoch, 'iteration': iteration,
                                  'per_epoch': run.iterations_per_epoch,
                                  'global_step': run.global_step},
                            position=(epoch, iteration, meter))
    minutes = run.args.checkpoint_minutes
    due = bool(minutes) and time.monotonic() - run.last_checkpoint_time >= minutes * 60
    stop, due = run.dist.any_true_each([run.stop_signal is not None, due], run.device)
    if stop:
        stop_at(run, epoch, iteration, meter)
    if due:
        save_checkpoint(run, epoch, iteration, meter)


def stop_at(run, epoch, iteration, meter, during=''):
    """Save the state at the boundary after `iteration` of `epoch` and end the run with
    128 + signal."""
    run.stop_signal = run.stop_signal or signal.SIGTERM  # another process got it
    path = save_checkpoint(run, epoch, iteration, meter)
    run.log.print(f'{signal.Signals(run.stop_signal).name} received{during}: stopped after '
                  f'epoch {epoch} iteration {iteration}; resume with --resume {path}')
    raise StopRequested


def stop_non_finite(run, err):
    """Log the error. Nothing is saved: every checkpoint written so far is finite."""
    last = os.path.join(run.args.save_dir, LAST_CHECKPOINT)
    kept = (f'{last}, written before, is kept' if os.path.exists(last) else
            'no checkpoint had been written')
    run.log.error(f'error: non-finite {err.what} at epoch {err.epoch} iteration '
                  f'{err.iteration} ({err}); {kept}')


def evaluate(run, final=False):
    """The run's metrics row (utils/evaluation.evaluate_network: the test split, NMI per
    --nmi, the holdout classes) with the time it took. Raises, on every process, NonFinite for
    non-finite parameters or embeddings, ExtractionStopped when a stop was requested
    meanwhile."""
    trainer.check_parameters(run)
    tic = time.time()
    try:
        metrics = evaluate_network(run.network, run.loaders, run.args, device=run.device,
                                   dist=run.dist, final=final, seed=run.seed,
                                   should_stop=lambda: run.stop_signal is not None)
    except NonFiniteEmbeddings:
        raise trainer.NonFinite(run, 'embeddings',
                                'in the evaluation; the parameters are finite') from None
    metrics['eval_seconds'] = round(time.time() - tic, 2)
    return metrics


def evaluate_and_record(run, row, position, final=False):
    """Evaluate, log the Recall line, and record `row` with the metrics in metrics.jsonl (and
    the tracker). On a stop request the evaluation is abandoned and the run stops at `position`
    (epoch, iteration, meter), the iteration boundary the evaluation follows."""
    try:
        metrics = evaluate(run, final)
    except ExtractionStopped:
        stop_at(run, *position, during=' during the evaluation (abandoned)')
    where = f'epoch {row["epoch"]}' + (f' iteration {row["iteration"]}'
                                       if 'iteration' in row else '')
    run.log.print(recall_line(where, metrics))
    holdout = holdout_line(where, metrics)
    if holdout:
        run.log.print(holdout)
    row.update(metrics)
    record(run, row)
    return metrics


def record(run, row):
    """A row of metrics.jsonl, also sent to TensorBoard / W&B when asked for."""
    run.log.record(row)
    run.tracker.record(row, step=run.global_step)


def epoch_row(run, epoch, meter, seconds):
    row = {'epoch': epoch, 'iterations': meter.iterations, **meter.means(),
           'skipped': dict(meter.skipped), 'seconds': round(seconds, 2)}
    if run.dictionary is not None:
        row.update(dict_entries=len(run.dictionary), dict_classes=run.dictionary.num_classes)
    return row


def epoch_line(row):
    stats = {key: row[key] for key in row if key not in EPOCH_BOOKKEEPING}
    parts = [f'Epoch {row["epoch"]} done in {row["seconds"]:.1f}s', format_stats(stats)]
    if 'dict_entries' in row:
        parts.append(f'dictionary {row["dict_entries"]} entries / {row["dict_classes"]} classes')
    parts.append(format_skipped(row['skipped']))
    return '  '.join(part for part in parts if part)


# The keys of an epoch row that are not a step's statistics.
EPOCH_BOOKKEEPING = ('epoch', 'iterations', 'skipped', 'seconds', 'dict_entries', 'dict_classes')


def last_line(err):
    """An error re-raised from a DataLoader worker carries the worker's traceback: keep the
    message itself."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1].split(': ', 1)[-1] if len(lines) > 1 else str(err)


if __name__ == '__main__':
    sys.exit(main())
