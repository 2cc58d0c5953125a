"""Train an embedding with or without MMSI and evaluate it: `python MMSI_train.py --help`.

    python MMSI_train.py --data cub --loss Con --MMSI 1 --save_dir ckps/con_mmsi
    python MMSI_train.py ... --resume ckps/con_mmsi/last.pth.tar      # continue a run

Everything printed also goes to <save_dir>/log.txt; per-epoch numbers to metrics.jsonl;
checkpoints to last.pth.tar (every epoch) and ckp_epN.pth.tar (every --save_step epochs).
Bad input ends with one "error: ..." line and exit status 2, before anything is written.

Reading order: `main` parses the flags, builds the run (utils/build.py), trains it epoch by
epoch (`train`, with trainer.train_epoch and the step of trainer.py or trainer_MMSI.py) and
evaluates it (`evaluate`).
"""
import signal
import sys
import time

import trainer
from evaluations import extract_features, recall_ks_for, retrieval_metrics
from utils.args import parse_args
from utils.build import build_run
from utils.checkpoint import save_checkpoint
from utils.distributed import Distributed
from utils.errors import InputError
from utils.logger import format_skipped, format_stats, recall_line

EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_SIGNAL = 2, 3, 128

setup = build_run  # MMSI_train.setup(parse_args([...])): a built run, for notebooks and tests


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint has been written at an iteration boundary."""


def main(argv=None, **defaults):
    """Parse, build the run, train it. Returns the exit status. `defaults` override the
    flags' defaults (train.py: MMSI=0; MMSI_SOP_train.py: the SOP configuration)."""
    run, dist = None, Distributed.from_environment()
    try:
        run = build_run(parse_args(argv, **defaults), dist)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, frame: setattr(run, 'stop_signal', number))
        return train(run)
    except InputError as err:
        print(f'error: {last_line(err)}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except StopRequested:
        return EXIT_SIGNAL + run.stop_signal
    finally:
        if run is not None and run.log is not None:
            run.log.close()
        dist.stop()


def train(run):
    """Epochs from the resume point to --epochs: train, log, evaluate every --save_step epochs
    (and before the first), checkpoint."""
    args = run.args
    epoch, first_batch, meter_state = run.resume_point
    if epoch == 1 and first_batch == 0 and not run.log.history:
        evaluate_and_record(run, {'epoch': 0})
    for epoch in range(epoch, args.epochs + 1):
        tic = time.time()
        try:
            meter = trainer.train_epoch(
                run, epoch, lambda iteration, meter: after_iteration(run, epoch, iteration, meter),
                first_batch, meter_state)
        except trainer.NonFiniteLoss as err:
            path = save_checkpoint(run, epoch, err.iteration - 1, err.meter)
            run.log.print(f'error: non-finite loss at epoch {epoch} iteration {err.iteration} '
                          f'({err}); the last finite state is saved in {path}')
            return EXIT_NON_FINITE
        first_batch, meter_state = 0, None
        row = epoch_row(run, epoch, meter, time.time() - tic)
        run.log.print(epoch_line(row))
        if epoch % args.save_step == 0 or epoch == args.epochs:
            evaluate_and_record(run, row)
        else:
            run.log.record(row)
        save_checkpoint(run, epoch)
        if epoch % args.save_step == 0:
            save_checkpoint(run, epoch, name=f'ckp_ep{epoch}.pth.tar')
    run.log.timestamped('Training finished')
    return 0


def after_iteration(run, epoch, iteration, meter):
    """Evaluate every --eval_every iterations; stop at this boundary when a signal arrived
    (on any process)."""
    every = run.args.eval_every
    if every and run.global_step % every == 0:
        evaluate_and_record(run, {'epoch': epoch, 'iteration': iteration,
                                  'per_epoch': run.iterations_per_epoch,
                                  'global_step': run.global_step})
    if run.dist.any_true(run.stop_signal is not None, run.device):
        run.stop_signal = run.stop_signal or signal.SIGTERM  # another rank got it
        path = save_checkpoint(run, epoch, iteration, meter)
        run.log.print(f'{signal.Signals(run.stop_signal).name} received: stopped after '
                      f'epoch {epoch} iteration {iteration}; resume with --resume {path}')
        raise StopRequested


def evaluate(run):
    """Retrieval metrics on the test split. Each process embeds its shard; the main process
    scores them all (the metrics do not depend on the order of the embeddings)."""
    tic = time.time()
    emb, labels = extract_features(run.local_embed, run.gallery_loader, run.device,
                                   progress=run.args.progress and run.dist.is_main,
                                   desc='evaluate', prepare=run.prepare)
    emb = run.dist.all_gather_varying(emb.to(run.device))
    labels = run.dist.all_gather_varying(labels.to(run.device))
    metrics = {}
    if run.dist.is_main:
        metrics = retrieval_metrics(emb, labels, ks=recall_ks_for(run.args.data))
    metrics['eval_seconds'] = round(time.time() - tic, 2)
    return metrics


def evaluate_and_record(run, row):
    """Evaluate, log the Recall line, and record `row` with the metrics in metrics.jsonl."""
    metrics = evaluate(run)
    where = f'epoch {row["epoch"]}' + (f' iteration {row["iteration"]}'
                                       if 'iteration' in row else '')
    run.log.print(recall_line(where, metrics))
    row.update(metrics)
    run.log.record(row)
    return metrics


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
