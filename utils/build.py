"""Building a training run from its flags: checks, network, optimizer, losses, dictionary,
resume, loaders, output folder, in that order.

Every check on the input runs before anything is written: a bad flag or data set ends in one
InputError and leaves --save_dir as it was.
"""
import os
import signal

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

import DataSet
import losses
import models
import trainer
import trainer_MMSI
from DataSet.tensor_pipeline import EncodedImageList, collate as tensor_collate
from DataSet.tensor_pipeline import to_network_input
from models.precision import MixedPrecision, to_channels_last
from utils.args import dict_min_classes
from utils.distributed import Distributed
from utils.checkpoint import (FORMAT, LAST_CHECKPOINT, load_checkpoint, restore_training_state,
                              seed_everything)
from utils.errors import InputError
from utils.logger import LOG_FILE, METRICS_FILE, RunLog
from utils.sampler import (EndlessKPBatchSampler, FastRandomIdentitySampler, KPBatchSampler,
                           check_batch_size)
from utils.semi_global import SemiGlobalDictionary
from utils.training_run import NetworkViews, TrainingRun


def build_run(args, dist=None):
    """Check the input and build everything; writes nothing to save_dir before all checks.
    `dist`: the torch.distributed context of this process (default: a single process)."""
    dist = dist or Distributed()
    # On the CPU, the tiny tangents and gradients of the meta step underflow into denormal
    # floats, which x86 processes up to 25 times slower; flushing them to zero changes nothing
    # measurable in the results.
    torch.set_flush_denormal(True)
    device = dist.device(pick_device(args.device))
    dist.start(device)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    seed = resolve_seed(args, checkpoint)
    seed_everything(seed)

    dataset = load_dataset(args, device)
    num_classes = dataset.train.num_classes
    model = build_model(args, checkpoint).to(device)
    run = TrainingRun(
        args=args, dist=dist, device=device, seed=seed, model=model,
        **wrap_network(args, model, dist, device)._asdict(),
        optimizer=build_optimizer(args, model), criteria=build_criteria(args),
        step=trainer_MMSI.step if args.MMSI else trainer.step)
    if args.MMSI:
        run.dictionary = build_dictionary(args, num_classes, device)
        run.dict_min_classes = dict_min_classes(args, num_classes)
    if checkpoint is not None:
        restore_training_state(run, checkpoint)
    attach_loaders(run, dataset)

    if dist.is_main:
        prepare_save_dir(args, resuming=checkpoint is not None)
    run.log = RunLog(args.save_dir, append=checkpoint is not None, enabled=dist.is_main)
    if checkpoint is not None:
        run.log.history = list(checkpoint.get('metrics') or [])
        run.log.write_metrics()
    describe_run(run, dataset, checkpoint)
    for images in (dataset.train, dataset.gallery):
        images.bad_image_log = os.path.join(args.save_dir, LOG_FILE)
    return run


def pick_device(name):
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f'--device {name!r} is not a device (auto, cpu, cuda, cuda:N)') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise InputError(f'--device {name}: CUDA is not available on this machine')
    return device


def resolve_seed(args, checkpoint):
    if args.seed is not None:
        return args.seed
    if checkpoint is not None and checkpoint.get('seed') is not None:
        return checkpoint['seed']
    return int(np.random.SeedSequence().entropy % 2 ** 31)


def load_dataset(args, device):
    """The data set, after the checks of the flags that describe how it is read and batched."""
    if args.input_pipeline == 'gpu' and device.type != 'cuda':
        raise InputError(f'--input_pipeline gpu decodes on the GPU; this run is on {device}')
    if not models.supported_width(args.width):
        raise InputError(f'--width {args.width}: BN-Inception needs a width of 32k-1 ... 32k+6 '
                         f'pixels (e.g. 64, 96, 224, 227); its reduction blocks need even sizes')
    dataset = DataSet.create(args.data, args.data_root, args.width, args.origin_width,
                             args.ratio, skip_bad_images=args.skip_bad_images)
    num_classes = dataset.train.num_classes
    check_batch_size(args.batch_size, args.num_instances, num_classes)
    if args.MMSI:
        check_batch_size(args.val_batch_size, args.val_num_instances, num_classes,
                         flag='--val_batch_size')
        if not args.freeze_BN:
            raise InputError('--MMSI 1 needs --freeze_BN 1 (the official setting): the meta step '
                             'assumes BatchNorm in eval mode')
    return dataset


# ---- the network ------------------------------------------------------------------------------

def build_model(args, checkpoint):
    pretrained = None if checkpoint is not None else args.pretrained
    try:
        model = models.create(args.net, data=args.data, dim=args.dim, pretrained=pretrained,
                              freeze_bn=args.freeze_BN)
    except InputError:
        raise
    except ValueError as err:  # unknown --net, or a --pretrained file of another network
        raise InputError(str(err)) from None
    if checkpoint is not None:
        load_resume_weights(args, model, checkpoint)
    return model


def load_resume_weights(args, model, checkpoint):
    if checkpoint.get('format') != FORMAT:  # the official code's {'state_dict', 'epoch'}
        try:
            models.load_pretrained(model, args.resume)
        except ValueError as err:
            raise InputError(str(err)) from None
        return
    saved = checkpoint['args']
    for flag in ('net', 'dim', 'data'):
        same = (models.canonical_name(saved[flag]) == models.canonical_name(getattr(args, flag))
                if flag == 'net' else saved[flag] == getattr(args, flag))
        if not same:
            raise InputError(f'--resume {args.resume} was trained with --{flag} {saved[flag]}, '
                             f'this run has --{flag} {getattr(args, flag)}')
    try:
        model.load_state_dict(checkpoint['model'])
    except RuntimeError as err:
        raise InputError(f'--resume {args.resume} does not fit this model: '
                         f'{str(err).splitlines()[0]}') from None


def wrap_network(args, model, dist, device):
    """The network as the run calls it (NetworkViews): under --amp and --channels_last, inside
    DistributedDataParallel across processes, with float32 embeddings out."""
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    if args.channels_last:
        to_channels_last(model)
    network = model
    if dist.enabled:
        # Frozen BN: nothing to broadcast; every parameter takes part in every forward.
        network = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None,
            broadcast_buffers=False)
    if args.input_pipeline == 'pil':
        def prepare(images, to):
            return images.to(to, non_blocking=True)
    else:
        def prepare(batch, to):
            return to_network_input(batch, to, args.width)
    return NetworkViews(
        train_embed=MixedPrecision(network, args.amp, args.channels_last),
        local_embed=MixedPrecision(model, args.amp, args.channels_last),
        prepare=prepare,
        scaler=torch.amp.GradScaler(device.type) if args.amp == 'fp16' else None)


def build_optimizer(args, model):
    """Adam; the backbone's rate is --lr x --base_lr_mult (the official code declared such
    factors but Adam ignored them, so the default 1.0 is its effective behaviour)."""
    head, backbone = [], []
    for name, param in model.named_parameters():
        (head if name.startswith('classifier.') else backbone).append(param)
    groups = [{'params': backbone, 'lr': args.lr * args.base_lr_mult, 'name': 'backbone'}]
    if head:
        groups.append({'params': head, 'lr': args.lr, 'name': 'embedding'})
    return torch.optim.Adam(groups, lr=args.lr, weight_decay=args.weight_decay)


def build_criteria(args):
    """Every form of --loss (LossForms), with the parameters and pair weights that
    utils.args.resolve_loss_flags settled."""
    return losses.forms_of(args.loss, pair_weights=args.pair_weights, **args.loss_params)


def build_dictionary(args, num_classes, device):
    capacity = args.dict_capacity or num_classes * args.d_size
    return SemiGlobalDictionary(args.d_size, args.dim or models.FEATURE_DIM, capacity, device)


# ---- data -------------------------------------------------------------------------------------

def attach_loaders(run, dataset):
    """The training, gallery and (MMSI) validation loaders of this process; the validation
    stream continues after the `run.val_consumed` batches already drawn."""
    args, cuda = run.args, run.device.type == 'cuda'
    workers = dict(persistent_workers=True, prefetch_factor=4) if args.nThreads > 0 else {}
    loader_options = dict(num_workers=args.nThreads, pin_memory=cuda,
                          worker_init_fn=_ignore_sigint, **workers)
    train_set, gallery_set = dataset.train, dataset.gallery
    if args.input_pipeline != 'pil':
        size = (args.width, args.origin_width, args.ratio)
        train_set = EncodedImageList(dataset.train, *size, train=True, mode=args.input_pipeline)
        gallery_set = EncodedImageList(dataset.gallery, *size, train=False,
                                       mode=args.input_pipeline)
        loader_options['collate_fn'] = tensor_collate
    sampler = FastRandomIdentitySampler(dataset.train, args.num_instances, seed=run.seed,
                                        batch_size=args.batch_size)
    rank, world = run.dist.rank, run.dist.world_size
    run.train_batches = KPBatchSampler(sampler, args.batch_size, rank, world)
    run.train_loader = DataLoader(train_set, batch_sampler=run.train_batches,
                                  **loader_options)
    gallery_shard = Subset(gallery_set, range(rank, len(gallery_set), world))
    run.gallery_loader = DataLoader(gallery_shard, batch_size=args.eval_batch_size,
                                    shuffle=False, **loader_options)
    if args.MMSI:
        val_sampler = FastRandomIdentitySampler(dataset.train, args.val_num_instances,
                                                seed=run.seed + 1)
        stream = EndlessKPBatchSampler(val_sampler, args.val_batch_size, rank, world,
                                       start=run.val_consumed)
        val_options = dict(loader_options, num_workers=min(args.nThreads, 2))
        if not val_options['num_workers']:
            val_options.pop('persistent_workers', None), val_options.pop('prefetch_factor', None)
        run.val_batches = iter(DataLoader(train_set, batch_sampler=stream, **val_options))


def _ignore_sigint(worker_id):
    """Ctrl-C is handled by the main process at an iteration boundary, not by the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---- output -----------------------------------------------------------------------------------

def prepare_save_dir(args, resuming):
    """Refuse to start a new run over an existing one; make sure the folder is writable."""
    existing = [name for name in (LOG_FILE, METRICS_FILE, LAST_CHECKPOINT)
                if os.path.exists(os.path.join(args.save_dir, name))]
    if existing and not resuming:
        last = os.path.join(args.save_dir, LAST_CHECKPOINT)
        advice = (f'continue it with --resume {last}' if os.path.exists(last) else
                  'it saved no checkpoint to continue from: delete the folder')
        raise InputError(f'--save_dir {args.save_dir} already holds a run ({", ".join(existing)})'
                         f'; {advice} or choose another --save_dir')
    try:
        os.makedirs(args.save_dir, exist_ok=True)
        probe = os.path.join(args.save_dir, f'.write-test-{os.getpid()}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as err:
        raise InputError(f'--save_dir {args.save_dir} is not writable ({err.strerror})') from None


def describe_run(run, dataset, checkpoint):
    args, log = run.args, run.log
    log.timestamped(('Resuming ' + args.resume) if checkpoint is not None else 'New run')
    log.print('Arguments: ' + ' '.join(f'--{k} {v}' for k, v in sorted(vars(args).items())))
    log.print(f'Data: {dataset.source}: {len(dataset.train)} training images of '
              f'{dataset.train.num_classes} classes, {len(dataset.gallery)} test images of '
              f'{dataset.gallery.num_classes} classes')
    log.print(f'Device: {run.device}; seed {run.seed}; {run.iterations_per_epoch} iterations '
              f'per epoch; MMSI {"on" if args.MMSI else "off"}'
              + (f'; {run.dist.world_size} processes, batch {args.batch_size} per process'
                 if run.dist.enabled else ''))
    params = {**losses.parameters(args.loss), **args.loss_params}
    log.print(f'Loss: {args.loss} ({", ".join(f"{k} {v}" for k, v in params.items())})'
              + (f'; pair weights {args.pair_weights}' if args.MMSI else ''))
    if args.ignored_loss_flags:
        log.print(f'Not parameters of {args.loss}, ignored: ' + ', '.join(
            f'--{k} {v}' for k, v in args.ignored_loss_flags.items()))
    if args.MMSI:
        log.print(f'MMSI: meta_grad {args.meta_grad}, meta_lr {args.meta_lr}, dictionary d_size '
                  f'{args.d_size}, capacity {run.dictionary.capacity} rows, warm-up until '
                  f'{run.dict_min_classes} classes, validation batch {args.val_batch_size} '
                  f'({args.val_num_instances} per class)')
