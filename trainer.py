"""One epoch of training, and the plain DML step (MMSI=0).

`train_epoch(run, epoch, after_iteration)` drives the loop shared by every trainer: batches from
the K-P loader, one `run.step(run, images, labels)` per batch, a log line every --print_freq
iterations, then `after_iteration(iteration, meter)` (the entry point's hook: evaluation every
--eval_every iterations, stop requests).
A step returns a dict of 0-d tensors (kept on the device; read only when a line is printed) and
may name a skip reason under 'skipped'.
"""
import math
import time

import losses
from utils.logger import format_skipped, format_stats


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; raised before the optimizer step touches the model.
    train_epoch adds `iteration` (the failing one) and `meter` (the iterations before it)."""


class EpochMeter:
    """Running sums of a step's statistics, on the device until read."""

    def __init__(self, state=None):
        state = state or {}
        self.sums = dict(state.get('sums', {}))
        self.counts = dict(state.get('counts', {}))
        self.skipped = dict(state.get('skipped', {}))
        self.iterations = state.get('iterations', 0)

    def add(self, stats):
        self.iterations += 1
        reason = stats.pop('skipped', None)
        if reason is not None:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
        for key, value in stats.items():
            value = value.detach().float()
            # sums restored from a checkpoint live on the CPU
            self.sums[key] = self.sums[key].to(value.device) + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self):
        return {key: float(self.sums[key]) / self.counts[key] for key in self.sums}

    def state(self):
        """For a mid-epoch checkpoint."""
        return {'sums': {k: v.cpu() for k, v in self.sums.items()}, 'counts': self.counts,
                'skipped': self.skipped, 'iterations': self.iterations}


def train_epoch(run, epoch, after_iteration, start_iteration=0, meter_state=None):
    """Train one epoch from batch `start_iteration` on; returns the epoch's EpochMeter."""
    run.train_batches.set_epoch(epoch, start_iteration)
    total = start_iteration + len(run.train_batches)
    meter = EpochMeter(meter_state)
    since_print = EpochMeter()
    tic = time.time()
    run.model.train()
    for iteration, (images, labels) in enumerate(run.train_loader, start_iteration + 1):
        try:
            stats = run.step(run, images, labels)
        except NonFiniteLoss as err:
            err.iteration, err.meter = iteration, meter
            raise
        meter.add(dict(stats))
        since_print.add(dict(stats))
        run.global_step += 1
        if iteration % run.args.print_freq == 0 or iteration == total:
            log_iteration(run, epoch, iteration, total, since_print, time.time() - tic)
            since_print, tic = EpochMeter(), time.time()
        after_iteration(iteration, meter)
    return meter


def log_iteration(run, epoch, iteration, total, meter, seconds):
    parts = [f'Epoch: [{epoch}][{iteration}/{total}]',
             f'Time {seconds / max(meter.iterations, 1):.3f}s/it', format_stats(meter.means())]
    if meter.skipped:
        parts.append(format_skipped(meter.skipped))
    run.log.print('  '.join(part for part in parts if part))


def optimizer_step(run, loss):
    """Backward, then the one host synchronisation of a plain iteration: a NaN or infinite loss
    stops the run before the optimizer touches the parameters."""
    run.optimizer.zero_grad(set_to_none=True)
    (loss if run.scaler is None else run.scaler.scale(loss)).backward()
    value = float(loss.detach())
    finite = math.isfinite(value)
    if not run.dist.all_true(finite, run.device):  # every process stops together
        raise NonFiniteLoss(f'loss is {value}' if not finite else
                            'the loss of another process is not finite')
    if run.scaler is None:
        run.optimizer.step()
    else:
        run.scaler.step(run.optimizer)
        run.scaler.update()


def skip_step(run, emb):
    """An iteration without update. Across processes DistributedDataParallel still expects the
    backward of the forward it ran: give it a zero one (no optimizer step)."""
    if run.dist.enabled:
        run.optimizer.zero_grad(set_to_none=True)
        (emb.sum() * 0).backward()


def to_device(run, images, labels):
    """A loader batch -> (network input, labels) on the training device."""
    return run.prepare(images, run.device), labels.to(run.device, non_blocking=True)


def plain_step(run, images, labels):
    """Plain DML: the loss on the pairs it mines, one Adam step."""
    images, labels = to_device(run, images, labels)
    emb = run.train_embed(images)
    loss = run.criteria.plain(emb, labels)
    optimizer_step(run, loss)
    pos_sim, neg_sim = losses.pair_similarity_stats(emb.detach(), labels)
    return {'loss': loss.detach(), 'pos_sim': pos_sim, 'neg_sim': neg_sim}


step = plain_step
