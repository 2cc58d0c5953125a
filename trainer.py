"""One epoch of training, and the plain DML step (MMSI=0).

`train_epoch(run, epoch, after_iteration)` drives the loop shared by every trainer: batches from
the K-P loader, one `run.step(run, images, labels)` per batch, a log line every --print_freq
iterations, then `after_iteration(iteration, meter)` (the entry point's hook: evaluation every
--eval_every iterations, stop requests).
A step returns a dict of 0-d tensors (kept on the device; read only when a line is printed) and
may name a skip reason under 'skipped'.
"""
import time

import torch
from torch.nn.utils import get_total_norm

import losses
from common.log_format import format_skipped, format_stats


class NonFinite(RuntimeError):
    """A NaN or infinity in the run's `what` (the loss, the gradients, the parameters, ...),
    found before it reached a checkpoint, at `epoch` and `iteration`: the iteration that
    produced it, `steps_ago` iterations before the run's current position."""

    def __init__(self, run, what, detail, steps_ago=0):
        super().__init__(detail)
        self.what = what
        epoch, iteration = run.position
        self.epoch, self.iteration = epoch, iteration - steps_ago


AFTER_STEP = 'after the optimizer step'


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
    for iteration, (images, labels) in enumerate(run.loaders.train, start_iteration + 1):
        run.position = (epoch, iteration)
        stats = run.step(run, images, labels)
        meter.add(dict(stats))
        since_print.add(dict(stats))
        run.global_step += 1
        if iteration % run.args.print_freq == 0 or iteration == total:
            log_iteration(run, epoch, iteration, total, since_print, time.time() - tic)
            since_print, tic = EpochMeter(), time.time()
        after_iteration(iteration, meter)
    return meter


def log_iteration(run, epoch, iteration, total, meter, seconds):
    means = meter.means()
    parts = [f'Epoch: [{epoch}][{iteration}/{total}]',
             f'Time {seconds / max(meter.iterations, 1):.3f}s/it', format_stats(means)]
    if meter.skipped:
        parts.append(format_skipped(meter.skipped))
    run.log.print('  '.join(part for part in parts if part))
    run.tracker.scalars(means, step=run.global_step)


def optimizer_step(run, loss):
    """Backward, then the one host synchronisation of an iteration: it reads whether the loss,
    the gradients and the parameters (as the last step left them) are all finite, and raises
    NonFinite before the optimizer touches the parameters if not. The finiteness of the
    parameters this step produces stays on the device until the next synchronisation
    (`check_parameters` reads it before a checkpoint or an evaluation)."""
    run.optimizer.zero_grad(set_to_none=True)
    scaler = run.network.scaler
    (loss if scaler is None else scaler.scale(loss)).backward()
    # Under fp16 the gradient scaler skips the steps with infinite gradients itself.
    grads = [] if scaler is not None else [
        p.grad for p in run.model.parameters() if p.grad is not None]
    flags = [loss.detach().isfinite(), all_finite(grads, run.device), parameters_finite(run)]
    loss_ok, grads_ok, params_ok = run.dist.all_true_each(flags, run.device)
    if not params_ok:  # this is global iteration global_step + 1
        raise NonFinite(run, 'parameters', AFTER_STEP, run.global_step + 1 - run.last_step)
    if not loss_ok:
        raise NonFinite(run, 'loss', f'loss is {float(loss.detach())}' if not loss.isfinite()
                        else 'the loss of another process is not finite')
    if not grads_ok:
        raise NonFinite(run, 'gradients', 'the loss is finite, its gradients are not')
    if scaler is None:
        run.optimizer.step()
    else:
        scaler.step(run.optimizer)
        scaler.update()
    run.parameters_finite = all_finite(list(run.model.parameters()), run.device)
    run.last_step = run.global_step + 1


def check_parameters(run):
    """Raise NonFinite when the last optimizer step left a NaN or an infinity in the
    parameters (utils/checkpoint.save_checkpoint and the evaluation call it). Reads the device
    flag (a host sync); every process holds the same parameters, so the processes agree
    without a collective."""
    if not bool(parameters_finite(run)):
        raise NonFinite(run, 'parameters', AFTER_STEP, run.global_step - run.last_step)


def parameters_finite(run):
    """The device flag of the last optimizer step (True before the first one)."""
    if run.parameters_finite is None:
        return all_finite([], run.device)
    return run.parameters_finite


def all_finite(tensors, device):
    """A 0-d bool tensor on `device`: no NaN or infinity in any of `tensors`. No host sync."""
    if not tensors:
        return torch.ones((), dtype=torch.bool, device=device)
    return get_total_norm(tensors, float('inf')).isfinite().to(device)


def skip_step(run, emb):
    """An iteration without update. Across processes DistributedDataParallel still expects the
    backward of the forward it ran: give it a zero one (no optimizer step)."""
    if run.dist.enabled:
        run.optimizer.zero_grad(set_to_none=True)
        (emb.sum() * 0).backward()


def to_device(run, images, labels):
    """A loader batch -> (network input, labels) on the training device."""
    return run.network.prepare(images, run.device), labels.to(run.device, non_blocking=True)


def plain_step(run, images, labels):
    """Plain DML: the loss on the pairs it mines, one Adam step."""
    images, labels = to_device(run, images, labels)
    emb = run.network.train_embed(images)
    loss = run.criteria.plain(emb, labels)
    optimizer_step(run, loss)
    pos_sim, neg_sim = losses.pair_similarity_stats(emb.detach(), labels)
    return {'loss': loss.detach(), 'pos_sim': pos_sim, 'neg_sim': neg_sim}


step = plain_step
