"""One epoch of training, and the plain DML step (MMSI=0).

`train_epoch(run, epoch, step)` drives the loop shared by every trainer: batches from the K-P
loader, one `step(run, images, labels)` per batch, a log line every --print_freq iterations, and
the run's iteration hooks (evaluation every --eval_every iterations, stop requests).
A step returns a dict of 0-d tensors (kept on the device; read only when a line is printed) and
may name a skip reason under 'skipped'.
"""
import math
import os
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from DataSet.tensor_pipeline import to_network_input
import losses
from models.precision import MixedPrecision, to_channels_last
from utils.logger import format_stat


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


def train_epoch(run, epoch, step, start_iteration=0, meter_state=None):
    """Train one epoch from batch `start_iteration` on; returns the epoch's EpochMeter."""
    run.train_batches.set_epoch(epoch, start_iteration)
    total = start_iteration + len(run.train_batches)
    meter = EpochMeter(meter_state)
    since_print = EpochMeter()
    tic = time.time()
    run.model.train()
    for iteration, (images, labels) in enumerate(run.train_loader, start_iteration + 1):
        try:
            stats = step(run, images, labels)
        except NonFiniteLoss as err:
            err.iteration, err.meter = iteration, meter
            raise
        meter.add(dict(stats))
        since_print.add(dict(stats))
        run.global_step += 1
        if iteration % run.args.print_freq == 0 or iteration == total:
            log_iteration(run, epoch, iteration, total, since_print, time.time() - tic)
            since_print, tic = EpochMeter(), time.time()
        run.after_iteration(epoch, iteration, meter)
    return meter


def log_iteration(run, epoch, iteration, total, meter, seconds):
    parts = [f'Epoch: [{epoch}][{iteration}/{total}]',
             f'Time {seconds / max(meter.iterations, 1):.3f}s/it']
    for key, value in meter.means().items():
        parts.append(f'{key} {format_stat(value)}')
    if meter.skipped:
        parts.append('skipped ' + ', '.join(f'{k} {v}' for k, v in sorted(meter.skipped.items())))
    run.log.print('  '.join(parts))


def configure_speed(run):
    """run.embed: the network as the training forward runs it (--amp, --channels_last, and
    DistributedDataParallel across processes), float32 embeddings out;
    run.meta_embed: the same network without DDP, for the meta step's functional forwards
    (local to each process) and for evaluation; run.scaler: the gradient scaler of --amp fp16."""
    args = run.args
    if run.device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    if args.channels_last:
        to_channels_last(run.model)
    network = run.model
    if run.dist.enabled:
        # Frozen BN: nothing to broadcast; every parameter takes part in every forward.
        network = DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == 'cuda' else None,
            broadcast_buffers=False)
    run.embed = MixedPrecision(network, args.amp, args.channels_last)
    if args.input_pipeline == 'pil':
        run.prepare = lambda images, device: images.to(device, non_blocking=True)
    else:
        run.prepare = lambda batch, device: to_network_input(batch, device, args.width)
    run.meta_embed = MixedPrecision(run.model, args.amp, args.channels_last)
    run.scaler = torch.amp.GradScaler(run.device.type) if run.args.amp == 'fp16' else None


def optimizer_step(run, loss):
    """Backward, then the one host synchronisation of a plain iteration: a NaN or infinite loss
    stops the run before the optimizer touches the parameters. The test hook
    MMSI_INJECT_NAN=<global iteration> turns that iteration's loss into NaN."""
    if os.environ.get('MMSI_INJECT_NAN') == str(run.global_step + 1):
        loss = loss * float('nan')
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
    emb = run.embed(images)
    loss = run.criterion(emb, labels)
    optimizer_step(run, loss)
    pos_sim, neg_sim = losses.pair_similarity_stats(emb.detach(), labels)
    return {'loss': loss.detach(), 'pos_sim': pos_sim, 'neg_sim': neg_sim}


def build_criteria(args):
    """The losses this trainer uses."""
    return {'criterion': losses.create(args.loss, margin=args.margin, alpha=args.alpha,
                                       beta=args.beta)}


step = plain_step
