"""Building a training run from its flags: checks, network, optimizer, losses, dictionary,
resume, loaders, output folder, in that order.

Every check on the input runs before anything is written: a bad flag or data set ends in one
InputError and leaves --save_dir as it was.
"""
import os
import re
import uuid

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

import DataSet
import losses
import models
import trainer
import trainer_MMSI
from DataSet.image_list import leave_signals_to_main_process, unreadable_images
from DataSet.tensor_pipeline import EncodedImageList, collate as tensor_collate
from DataSet.tensor_pipeline import to_network_input
from models.precision import MixedPrecision, to_channels_last
from utils.args import dict_min_classes
from utils.distributed import Distributed
from utils.checkpoint import (EPOCH_CHECKPOINT, FORMAT, LAST_CHECKPOINT, load_checkpoint,
                              peek_checkpoint, progress, restore_training_state, seed_everything)
from utils.errors import InputError
from utils.logger import LOG_FILE, METRICS_FILE, RunLog, in_use, warn
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
    if checkpoint is not None:
        check_resume_flags(args, checkpoint)
    seed = resolve_seed(args, checkpoint)
    seed_everything(seed)

    dataset = load_dataset(args, device)
    check_images(args, dataset, dist, device)
    num_classes = dataset.train.num_classes
    model = build_model(args, checkpoint).to(device)
    run = TrainingRun(
        args=args, dist=dist, device=device, seed=seed,
        run_id=(checkpoint or {}).get('run_id') or uuid.uuid4().hex[:12], model=model,
        **wrap_network(args, model, dist, device)._asdict(),
        optimizer=build_optimizer(args, model), criteria=build_criteria(args),
        step=trainer_MMSI.step if args.MMSI else trainer.step)
    if args.MMSI:
        run.dictionary = build_dictionary(args, num_classes, device)
        run.dict_min_classes = dict_min_classes(args, num_classes)
    if checkpoint is not None:
        restore_training_state(run, checkpoint)
        set_hyperparameters(run.optimizer, args)  # an --lr given on resuming applies
    attach_loaders(run, dataset)

    notes = prepare_save_dir(args, checkpoint) if dist.is_main else []
    run.log = RunLog(args.save_dir, append=checkpoint is not None, enabled=dist.is_main)
    if checkpoint is not None:
        run.log.history = list(checkpoint.get('metrics') or [])
        run.log.write_metrics()
    describe_run(run, dataset, checkpoint, notes)
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
                         f'pixels with k >= 1 (e.g. 64, 96, 224, 227); its reduction blocks '
                         f'need even sizes')
    if args.num_instances < 2:
        raise InputError(f'--num_instances {args.num_instances}: a batch would hold one image '
                         f'per class, hence no positive pair; use at least 2')
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
        check_warm_up(args, num_classes)
    return dataset


def check_warm_up(args, num_classes):
    """The dictionary must be able to hold --dict_min_classes classes, or MMSI never starts."""
    needed = dict_min_classes(args, num_classes)
    if needed > num_classes:
        raise InputError(f'--dict_min_classes {needed} is more than the {num_classes} training '
                         f'classes: MMSI would never leave its warm-up')
    if args.dict_capacity and needed > args.dict_capacity:
        raise InputError(f'--dict_min_classes {needed} is more than a dictionary of '
                         f'--dict_capacity {args.dict_capacity} rows can hold: MMSI would never '
                         f'leave its warm-up')


def check_images(args, dataset, dist, device):
    """--check_images: read the header of every listed image (each process a share of them),
    so that an unreadable file stops the run before anything is written."""
    if not args.check_images:
        return
    paths = (dataset.train.images + dataset.gallery.images)[dist.rank::dist.world_size]
    errors = unreadable_images(paths, args.nThreads, args.progress and dist.is_main)
    if args.skip_bad_images:
        if errors:
            warn(f'warning: {len(errors)} listed image(s) cannot be read; --skip_bad_images '
                 f'replaces them. First: {errors[0]}')
    elif not dist.all_true(not errors, device):
        raise InputError(f'{len(errors)} listed image(s) cannot be read (--check_images), '
                         f'first: {errors[0]}' if errors else
                         'another process found an unreadable image (--check_images)')


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
    try:
        model.load_state_dict(checkpoint['model'])
    except RuntimeError as err:
        raise InputError(f'--resume {args.resume} does not fit this model: '
                         f'{str(err).splitlines()[0]}') from None


# What a run keeps from its start to its end; and, in the middle of an epoch, the batches.
FIXED_IN_A_RUN = ('data', 'net', 'dim', 'loss', 'margin', 'alpha', 'beta', 'loss_param',
                  'loss_module', 'MMSI', 'pair_weights')
FIXED_WITHIN_AN_EPOCH = ('batch_size', 'num_instances')


def check_resume_flags(args, checkpoint):
    """Refuse a --resume that changes a flag its run cannot change, naming each one."""
    if checkpoint.get('format') != FORMAT:
        return
    saved = dict(checkpoint['args'], seed=checkpoint.get('seed'))
    fixed = FIXED_IN_A_RUN + (FIXED_WITHIN_AN_EPOCH if checkpoint['iteration'] else ())
    changed = [name for name in fixed if name in saved
               and not same_flag_value(name, saved[name], getattr(args, name, None))]
    if args.seed is not None and args.seed != saved['seed']:
        changed.append('seed')
    if changed:
        within = (' (--batch_size and --num_instances: until the epoch ends)'
                  if set(changed) & set(FIXED_WITHIN_AN_EPOCH) else '')
        raise InputError(
            f'--resume {args.resume} was trained with '
            f'{" ".join(f"--{name} {saved[name]}" for name in changed)}, this run has '
            f'{" ".join(f"--{name} {getattr(args, name)}" for name in changed)}; these cannot '
            f'change within a run{within}: start a new one in another --save_dir, with '
            f'--pretrained {args.resume} to begin from its weights')


def same_flag_value(name, a, b):
    if name == 'net':
        return models.canonical_name(a) == models.canonical_name(b)
    return a == b


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
    groups = [{'params': backbone, 'name': 'backbone'}]
    if head:
        groups.append({'params': head, 'name': 'embedding'})
    optimizer = torch.optim.Adam(groups, lr=args.lr)
    set_hyperparameters(optimizer, args)
    return optimizer


def set_hyperparameters(optimizer, args):
    """Each parameter group's learning rate and weight decay, from the flags."""
    rates = {'backbone': args.lr * args.base_lr_mult, 'embedding': args.lr}
    if max(rates.values()) > MAX_LEARNING_RATE:
        raise InputError(f'--lr {args.lr} (x --base_lr_mult {args.base_lr_mult} for the '
                         f'backbone) is above {MAX_LEARNING_RATE:g}: Adam\'s first step, 10 '
                         f'times the rate, would not fit in float32')
    for group in optimizer.param_groups:
        group['lr'], group['weight_decay'] = rates[group['name']], args.weight_decay


# float32 holds up to 3.4e38; Adam's first step is 10 times the rate (bias correction).
MAX_LEARNING_RATE = 3e37


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
                          worker_init_fn=leave_signals_to_main_process, **workers)
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


# ---- output -----------------------------------------------------------------------------------

def prepare_save_dir(args, checkpoint):
    """Make sure --save_dir may take this run: the first write of a run, after every check.
    Files in the way are deleted when that is safe or --overwrite allows it (see
    `files_in_the_way`); never those of a run that is still training. Returns notes for the
    log."""
    found = run_files(args.save_dir)
    if LOG_FILE in found and in_use(os.path.join(args.save_dir, LOG_FILE)):
        raise InputError(f'--save_dir {args.save_dir} is in use: a running training holds its '
                         f'log.txt; wait for it to end or choose another --save_dir')
    doomed, refusal, note = files_in_the_way(args, checkpoint, found)
    if refusal and not args.overwrite:
        raise InputError(f'{refusal} or give --overwrite 1 to delete those files first')
    if refusal:
        note = f'--overwrite: deleted {", ".join(doomed)} from --save_dir'
    for name in doomed:
        os.remove(os.path.join(args.save_dir, name))
    try:
        os.makedirs(args.save_dir, exist_ok=True)
        probe = os.path.join(args.save_dir, f'.write-test-{os.getpid()}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as err:
        raise InputError(f'--save_dir {args.save_dir} is not writable ({err.strerror})') from None
    return [note] if note else []


def files_in_the_way(args, checkpoint, found):
    """(files to delete, why that needs --overwrite or None, a note) for the run files `found`
    in --save_dir. A new run over a run that has checkpoints, a --resume into the folder of
    another run, or over checkpoints of its own run later than the one it continues need
    --overwrite; the files of a run that died before its first checkpoint go without."""
    folder, where = args.save_dir, f'--save_dir {args.save_dir}'
    if not found:
        return [], None, None
    if checkpoint is None:
        if not any(is_checkpoint(name) for name in found):
            return found, None, (f'{where} held {", ".join(found)} of a run that saved no '
                                 f'checkpoint: started afresh')
        return found, (f'{where} already holds a run ({", ".join(found)}); continue it with '
                       f'--resume {os.path.join(folder, newest_checkpoint(found))}, choose '
                       f'another --save_dir'), None
    if not holds_run_of(folder, found, args.resume, checkpoint):
        return found, (f'{where} holds another run ({", ".join(found)}) than --resume '
                       f'{args.resume}; choose another --save_dir'), None
    later = later_checkpoints(folder, found, args.resume, checkpoint)
    if later:
        return later, (f'{where} holds later checkpoints of this run than --resume '
                       f'{args.resume} ({", ".join(later)}), which resuming would overwrite; '
                       f'resume from {os.path.join(folder, newest_checkpoint(found))}, choose '
                       f'another --save_dir'), None
    return [], None, None


def run_files(save_dir):
    """The names of the files of a run in `save_dir`: log, metrics and checkpoints."""
    if not os.path.isdir(save_dir):
        return []
    return sorted(name for name in os.listdir(save_dir)
                  if name in (LOG_FILE, METRICS_FILE) or is_checkpoint(name))


def is_checkpoint(name):
    return name == LAST_CHECKPOINT or EPOCH_CHECKPOINT.fullmatch(name) is not None


def newest_checkpoint(names):
    if LAST_CHECKPOINT in names:
        return LAST_CHECKPOINT
    return max((name for name in names if is_checkpoint(name)),
               key=lambda name: int(EPOCH_CHECKPOINT.fullmatch(name).group(1)))


def holds_run_of(save_dir, found, resume, checkpoint):
    """Whether the run files `found` in `save_dir` belong to the run `checkpoint` continues:
    the same run id; where either has none (older files), the checkpoint lies in save_dir."""
    ours = checkpoint.get('run_id')
    theirs = folder_run_id(save_dir, found)
    if ours and theirs:
        return ours == theirs
    return os.path.samefile(os.path.dirname(os.path.abspath(resume)), save_dir)


# The first line of log.txt names its run: "[time] New run (run 0123456789ab)".
RUN_ID_IN_LOG = re.compile(r'\(run ([0-9a-f]+)\)')


def folder_run_id(save_dir, found):
    """The run id of the run in save_dir: its last.pth.tar's, else its log's, else None."""
    if LAST_CHECKPOINT in found:
        last = peek_checkpoint(os.path.join(save_dir, LAST_CHECKPOINT))
        if last is not None and last.get('run_id'):
            return last['run_id']
    if LOG_FILE in found:
        with open(os.path.join(save_dir, LOG_FILE), encoding='utf-8', errors='replace') as f:
            match = RUN_ID_IN_LOG.search(f.readline())
        if match:
            return match.group(1)
    return None


def later_checkpoints(save_dir, found, resume, checkpoint):
    """The checkpoints among `found` that are further in the run than `checkpoint`."""
    reached = progress(checkpoint)
    later = [name for name in found if EPOCH_CHECKPOINT.fullmatch(name)
             and (int(EPOCH_CHECKPOINT.fullmatch(name).group(1)), 0) > reached]
    last = os.path.join(save_dir, LAST_CHECKPOINT)
    if LAST_CHECKPOINT in found and not os.path.samefile(last, resume):
        saved = peek_checkpoint(last)
        if saved is not None and progress(saved) > reached:
            later.append(LAST_CHECKPOINT)
    return later


def describe_run(run, dataset, checkpoint, notes):
    args, log = run.args, run.log
    log.timestamped((f'Resuming {args.resume}' if checkpoint is not None else 'New run')
                    + f' (run {run.run_id})')
    for note in notes:
        log.print(f'Note: {note}')
    log.print('Arguments: ' + ' '.join(f'--{k} {v}' for k, v in sorted(vars(args).items())))
    if checkpoint is not None and checkpoint.get('format') == FORMAT:
        saved = checkpoint['args']
        changed = [f'--{key} {saved[key]} -> {value}' for key, value in sorted(vars(args).items())
                   if key in saved and key != 'resume' and saved[key] != value]
        log.print('Changed since the checkpoint: ' + (', '.join(changed) or 'nothing'))
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
