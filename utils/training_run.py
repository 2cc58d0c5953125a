"""`TrainingRun`: everything one training run holds, declared in one place.

utils/build.py builds it (`build_run`), MMSI_train.py drives it epoch by epoch, the trainers'
steps read it, and utils/checkpoint.py saves and restores its progress.
"""
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import nn

from DataSet.loaders import Loaders
from losses import LossForms
from utils.checkpoint import ResumePoint
from utils.config import Config
from utils.distributed import Distributed
from utils.logger import RunLog
from utils.semi_global import SemiGlobalDictionary
from utils.tracking import Writer


class NetworkViews(NamedTuple):
    """The ways a run calls its network."""
    train_embed: nn.Module   # the training forward: --amp, --channels_last, DDP across processes
    local_embed: nn.Module   # the same network on this process alone (no DDP): the meta step's
    #                          functional forwards and evaluation
    prepare: Callable        # (loader batch, device) -> network input on the device
    scaler: Optional[torch.amp.GradScaler]  # --amp fp16 only


@dataclass(eq=False)
class TrainingRun:
    args: Config                # the final configuration (utils/config.py), read-only
    dist: Distributed
    device: torch.device
    run_id: str                 # random; in every checkpoint and in log.txt: which run a folder holds

    # the network and how it learns
    model: nn.Module            # the embedding network; its parameters are what trains
    network: NetworkViews       # the ways the run calls it
    optimizer: torch.optim.Optimizer
    criteria: LossForms         # the forms of --loss
    step: Callable              # trainer.step (plain) or trainer_MMSI.step: (run, images, labels)

    # MMSI (None / 0 with --MMSI 0)
    dictionary: Optional[SemiGlobalDictionary] = None

    # data
    train_batches: Any = None   # utils.sampler.KPBatchSampler: this process's batches
    loaders: Optional[Loaders] = None  # training, this process's test shard, MMSI validation

    # output
    log: Optional[RunLog] = None
    tracker: Writer = field(default_factory=Writer)  # TensorBoard / W&B (utils/tracking.py)

    # progress; saved in checkpoints
    global_step: int = 0        # iterations trained, over all epochs
    val_consumed: int = 0       # validation batches drawn
    resume_point: ResumePoint = ResumePoint()
    position: tuple = (0, 0)    # (epoch, iteration) of the last iteration trained (or started)
    stop_signal: Optional[int] = None  # set by the SIGTERM / SIGINT handler
    last_checkpoint_time: float = field(default_factory=time.monotonic)  # of last.pth.tar

    # the non-finite guard (trainer.optimizer_step)
    parameters_finite: Optional[torch.Tensor] = None  # device flag after the last optimizer
    #                                                   step, read at the next host sync
    last_step: int = 0          # the global iteration of that step

    @property
    def seed(self):
        return self.args.seed

    @property
    def iterations_per_epoch(self):
        return len(self.train_batches)

    def next_val_batch(self):
        self.val_consumed += 1
        return next(self.loaders.validation)
