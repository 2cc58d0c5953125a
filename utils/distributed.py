"""Multi-process training with torch.distributed (launched by torchrun), and its no-op form.

`Distributed.from_environment(device_name)` reads torchrun's RANK / LOCAL_RANK / WORLD_SIZE;
with WORLD_SIZE 1 (a plain `python MMSI_train.py`) every collective below is the identity, so the
trainers call them unconditionally.
"""
import os
from datetime import timedelta

import torch
import torch.distributed as dist


class Distributed:

    def __init__(self, rank=0, world_size=1, local_rank=0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @classmethod
    def from_environment(cls):
        world_size = int(os.environ.get('WORLD_SIZE', '1'))
        if world_size == 1:
            return cls()
        return cls(int(os.environ['RANK']), world_size, int(os.environ.get('LOCAL_RANK', 0)))

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def start(self, device):
        """Join the process group: NCCL on CUDA, gloo on the CPU."""
        if self.enabled and not dist.is_initialized():
            backend = 'nccl' if device.type == 'cuda' else 'gloo'
            dist.init_process_group(backend, timeout=timedelta(minutes=30))

    def setup(self, device_name):
        """The device of this process (`device_name` as utils/config.py resolved it; each
        process of a multi-process run on its own GPU), with the process group joined and the
        device's numeric settings made."""
        device = self.device(torch.device(device_name))
        self.start(device)
        if device.type == 'cuda':
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True
        # On the CPU, the tiny tangents and gradients of the meta step underflow into denormal
        # floats, which x86 processes up to 25 times slower; flushing them to zero changes
        # nothing measurable in the results.
        torch.set_flush_denormal(True)
        return device

    def stop(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def device(self, requested):
        """Each rank takes its own GPU (cuda:LOCAL_RANK) when the run asks for CUDA."""
        if self.enabled and requested.type == 'cuda':
            return torch.device('cuda', self.local_rank)
        return requested

    def all_gather(self, tensor):
        """The tensors of every rank concatenated along dim 0 in rank order (equal shapes)."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def all_gather_varying(self, tensor):
        """Like all_gather, for tensors whose first dimension differs between ranks."""
        if not self.enabled:
            return tensor
        size = torch.tensor([len(tensor)], device=tensor.device)
        sizes = self.all_gather(size).tolist()
        padded = tensor.new_zeros((max(sizes),) + tensor.shape[1:])
        padded[:len(tensor)] = tensor
        gathered = self.all_gather(padded).split(max(sizes))
        return torch.cat([part[:n] for part, n in zip(gathered, sizes)])

    def all_true(self, flag, device):
        """True when `flag` holds on every rank (one small all-reduce)."""
        if not self.enabled:
            return bool(flag)
        value = torch.tensor([1 if flag else 0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def any_true(self, flag, device):
        return not self.all_true(not flag, device)

    def all_true_each(self, flags, device):
        """For each of `flags` (Python bools or 0-d bool tensors): whether it holds on every
        rank, as a list of bools. One small all-reduce and one host read for all of them."""
        if not self.enabled and not any(torch.is_tensor(flag) for flag in flags):
            return [bool(flag) for flag in flags]
        values = torch.stack([torch.as_tensor(flag, device=device) for flag in flags])
        values = values.to(torch.int32)
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.MIN)
        return [bool(value) for value in values.tolist()]

    def any_true_each(self, flags, device):
        """For each of `flags` (Python bools): whether it holds on any rank."""
        return [not value for value in self.all_true_each([not flag for flag in flags], device)]

    def barrier(self):
        if self.enabled:
            dist.barrier()
