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
from DataSet.image_list import unreadable_images
from DataSet.loaders import make_loaders
from DataSet.tensor_pipeline import to_network_input
from models.precision import MixedPrecision, to_channels_last
from utils import run_folder
from utils.checkpoint import FORMAT, restore_training_state, seed_everything
from utils.distributed import Distributed
from utils.logger import RunLog, describe_run, warn
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
                             config.ratio, skip_bad_images=config.skip_bad_images,
                             splits=resolved.splits,
                             bad_image_log=os.path.join(config.save_dir, run_folder.LOG_FILE))
    check_images(config, dataset, dist, device)
    model = build_model(config, checkpoint).to(device)
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
             if dist.is_main else [])
    run.log = RunLog(config.save_dir, append=checkpoint is not None, enabled=dist.is_main)
    if checkpoint is not None:
        run.log.history = list(checkpoint.get('metrics') or [])
        run.log.write_metrics()
    if dist.is_main and resolved.splits is not None and resolved.splits.relabelled:
        run_folder.atomic_write_text(run_folder.noisy_labels_csv(resolved.splits.relabelled),
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


def check_images(config, dataset, dist, device):
    """--check_images: read the header of every listed image (each process a share of them),
    so that an unreadable file stops the run before anything is written."""
    if not config.check_images:
        return
    test_images = dataset.gallery.images + (dataset.query.images if dataset.query else []) + (
        dataset.holdout.images if getattr(dataset, 'holdout', None) else [])
    paths = (dataset.train.images + test_images)[dist.rank::dist.world_size]
    errors = unreadable_images(paths, config.nThreads, config.progress and dist.is_main)
    if config.skip_bad_images:
        if errors:
            warn(f'warning: {len(errors)} listed image(s) cannot be read; --skip_bad_images '
                 f'replaces them. First: {errors[0]}')
    elif not dist.all_true(not errors, device):
        raise InputError(f'{len(errors)} listed image(s) cannot be read (--check_images), '
                         f'first: {errors[0]}' if errors else
                         'another process found an unreadable image (--check_images)')


# ---- the network ------------------------------------------------------------------------------

def build_model(config, checkpoint):
    """The network: --pretrained weights for a new run (utils/config.py resolved the file), the
    checkpoint's when resuming."""
    pretrained = None if checkpoint is not None else config.pretrained
    try:
        model = models.create(config.net, data=config.data, dim=config.dim,
                              pretrained=pretrained, freeze_bn=config.freeze_BN,
                              width=config.width)
    except InputError:
        raise
    except ValueError as err:  # unknown --net, or a --pretrained file of another network
        raise InputError(str(err)) from None
    if checkpoint is not None:
        load_resume_weights(config, model, checkpoint)
    return model


def load_resume_weights(config, model, checkpoint):
    if checkpoint.get('format') != FORMAT:  # the official code's {'state_dict', 'epoch'}
        try:
            models.load_pretrained(model, config.resume, loaded=checkpoint)
        except ValueError as err:
            raise InputError(str(err)) from None
        return
    try:
        model.load_state_dict(checkpoint['model'])
    except RuntimeError as err:
        raise InputError(f'--resume {config.resume} does not fit this model: '
                         f'{str(err).splitlines()[0]}') from None


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
