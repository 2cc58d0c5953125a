"""Building a training run from its resolved configuration (utils/config.py): data, network,
optimizer, losses, dictionary, restored state, loaders and log, in that order.

The configuration has been checked when it gets here; what can still fail is what only
building finds (an unreadable image, weights of another network). Nothing is written to
--save_dir before the log is opened, the last step.
"""
import os
import uuid

import torch
from torch.nn.parallel import DistributedDataParallel

import DataSet
import losses
import models
import trainer
import trainer_MMSI
from common.errors import InputError
from DataSet.loaders import make_loaders
from DataSet.tensor_pipeline import to_network_input
from models.precision import MixedPrecision, to_channels_last
from utils import run_folder
from utils.checkpoint import (load_pretrained_weights, load_resume_weights,
                              restore_training_state, seed_everything, unverified_note)
from utils.distributed import Distributed
from utils.files import atomic_write_text
from utils.image_check import check_images
from utils.logger import RunLog, describe_run
from utils.sampler import EndlessKPBatchSampler, FastRandomIdentitySampler, KPBatchSampler
from utils.semi_global import SemiGlobalDictionary
from utils.tracking import Writer, open_writer
from utils.training_run import NetworkViews, TrainingRun


def build_run(resolved, dist=None):
    """A TrainingRun from `resolved` (utils.config.resolve: configuration, checkpoint, split
    listing, changed flags). `dist`: the torch.distributed context of this process (default:
    a single process)."""
    config, checkpoint = resolved.config, resolved.checkpoint
    dist = dist or Distributed()
    device = dist.setup(config.device)
    seed_everything(config.seed)

    dataset = DataSet.create(config.data, config.data_root, config.width, config.origin_width,
                             config.ratio, splits=resolved.splits,
                             max_image_pixels=config.max_image_pixels)
    dataset, image_notes = check_images(config, dataset, dist, device)
    model, weights_note = build_model(config, checkpoint)
    model.to(device)
    run = TrainingRun(
        args=config, dist=dist, device=device,
        run_id=(checkpoint or {}).get('run_id') or uuid.uuid4().hex[:12], model=model,
        network=wrap_network(config, model, dist, device),
        optimizer=build_optimizer(config, model), criteria=build_criteria(config),
        step=trainer_MMSI.step if config.MMSI else trainer.step)
    if config.MMSI:
        run.dictionary = SemiGlobalDictionary(config.d_size,
                                              config.dim or models.feature_dim(config.net),
                                              config.dict_capacity, device)
    if checkpoint is not None:
        restore_training_state(run, checkpoint)
        set_hyperparameters(run.optimizer, config)  # an --lr given on resuming applies
    attach_loaders(run, dataset)

    notes = (run_folder.prepare(config.save_dir, config.resume, checkpoint, config.overwrite)
             if dist.is_main else []) + ([weights_note] if weights_note else [])
    if resolved.splits is not None:
        notes += resolved.splits.notes  # the split's announcement (DataSet/readers.py)
    notes += image_notes  # the images --skip_bad_images left out
    run.log = RunLog(config.save_dir, append=checkpoint is not None, enabled=dist.is_main)
    if checkpoint is not None:
        run.log.history = list(checkpoint.get('metrics') or [])
        run.log.write_metrics()
    if dist.is_main and resolved.splits is not None and resolved.splits.relabelled:
        atomic_write_text(run_folder.noisy_labels_csv(resolved.splits.relabelled),
                          os.path.join(config.save_dir, run_folder.NOISY_LABELS_FILE))
    describe_run(run, dataset, notes, resolved.changes if checkpoint is not None else None,
                 resolved.splits.relabelled if resolved.splits is not None else ())
    run.tracker = open_tracker(config) if dist.is_main else Writer()
    return run


def open_tracker(config):
    """TensorBoard events under <save_dir>/tensorboard and/or a W&B run, fed the rows of
    metrics.jsonl and the iteration statistics (utils/tracking.py); a Writer that does nothing
    when neither is asked for."""
    return open_writer(
        tensorboard=os.path.join(config.save_dir, 'tensorboard') if config.tensorboard else None,
        wandb=config.wandb, wandb_dir=config.save_dir, wandb_mode=config.wandb_mode,
        run_name=os.path.basename(os.path.normpath(config.save_dir)), config=vars(config))


# ---- the network ------------------------------------------------------------------------------

def build_model(config, checkpoint):
    """The network and its starting weights: the checkpoint's when resuming, else the
    --pretrained file (utils/config.py resolved it), each verified against its checksum
    (utils/checkpoint.py). Returns (model, note): the log's note when the weights come from a
    checkpoint without a checksum to verify, else None."""
    try:
        model = models.create(config.net, data=config.data, dim=config.dim, pretrained=None,
                              freeze_bn=config.freeze_BN, width=config.width)
    except InputError:
        raise
    except ValueError as err:  # unknown --net
        raise InputError(str(err)) from None
    if checkpoint is not None:
        load_resume_weights(model, checkpoint, config.resume)
        return model, unverified_note(checkpoint, '--resume', config.resume)
    if config.pretrained:
        return model, load_pretrained_weights(model, config.pretrained)
    return model, None


def wrap_network(config, model, dist, device):
    """The network as the run calls it (NetworkViews): under --amp and --channels_last, inside
    DistributedDataParallel across processes, with float32 embeddings out."""
    if config.channels_last:
        to_channels_last(model)
    network = model
    if dist.enabled:
        # Frozen BN: nothing to broadcast; every parameter takes part in every forward.
        network = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None,
            broadcast_buffers=False)
    if config.input_pipeline == 'pil':
        def prepare(images, to):
            return images.to(to, non_blocking=True)
    else:
        def prepare(batch, to):
            return to_network_input(batch, to, config.width)
    return NetworkViews(
        train_embed=MixedPrecision(network, config.amp, config.channels_last),
        local_embed=MixedPrecision(model, config.amp, config.channels_last),
        prepare=prepare,
        scaler=torch.amp.GradScaler(device.type) if config.amp == 'fp16' else None)


def build_optimizer(config, model):
    """Adam; the backbone's rate is --lr x --base_lr_mult (the official code declared such
    factors but Adam ignored them, so the default 1.0 is its effective behaviour)."""
    head, backbone = [], []
    for name, param in model.named_parameters():
        (head if name.startswith('classifier.') else backbone).append(param)
    groups = [{'params': backbone, 'name': 'backbone'}]
    if head:
        groups.append({'params': head, 'name': 'embedding'})
    optimizer = torch.optim.Adam(groups, lr=config.lr)
    set_hyperparameters(optimizer, config)
    return optimizer


def set_hyperparameters(optimizer, config):
    """Each parameter group's learning rate and weight decay, from the flags."""
    rates = {'backbone': config.lr * config.base_lr_mult, 'embedding': config.lr}
    for group in optimizer.param_groups:
        group['lr'], group['weight_decay'] = rates[group['name']], config.weight_decay


def build_criteria(config):
    """Every form of --loss (LossForms), with the parameters and pair weights that
    utils.config.resolve settled."""
    return losses.forms_of(config.loss, pair_weights=config.pair_weights, **config.loss_params)


# ---- data -------------------------------------------------------------------------------------

def attach_loaders(run, dataset):
    """The training, gallery and (MMSI) validation loaders of this process; the validation
    stream continues after the `run.val_consumed` batches already drawn."""
    config, rank, world = run.args, run.dist.rank, run.dist.world_size
    sampler = FastRandomIdentitySampler(dataset.train, config.num_instances, seed=run.seed)
    run.train_batches = KPBatchSampler(sampler, config.batch_size, rank, world)
    val_batches = None
    if config.MMSI:
        val_sampler = FastRandomIdentitySampler(dataset.train, config.val_num_instances,
                                                seed=run.seed + 1)
        val_batches = EndlessKPBatchSampler(val_sampler, config.val_batch_size, rank, world,
                                            start=run.val_consumed)
    run.loaders = make_loaders(
        dataset, input_pipeline=config.input_pipeline, width=config.width,
        origin_width=config.origin_width, ratio=config.ratio, workers=config.nThreads,
        cuda=run.device.type == 'cuda', train_batches=run.train_batches,
        eval_batch_size=config.eval_batch_size, rank=rank, world_size=world,
        val_batches=val_batches)
