"""Train an embedding with or without MMSI and evaluate it: `python MMSI_train.py --help`.

    python MMSI_train.py --data cub --loss Con --MMSI 1 --save_dir ckps/con_mmsi
    python MMSI_train.py ... --resume ckps/con_mmsi/last.pth.tar      # continue a run

Everything printed also goes to <save_dir>/log.txt; per-epoch numbers to metrics.jsonl;
checkpoints to last.pth.tar (every epoch) and ckp_epN.pth.tar (every --save_step epochs).
Bad input ends with one "error: ..." line and exit status 2, before anything is written.
"""
import os
import signal
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

import DataSet
from DataSet.tensor_pipeline import EncodedImageList, collate as tensor_collate
import models
import trainer
import trainer_MMSI
from evaluations import extract_features, recall_ks_for, retrieval_metrics
from utils.args import dict_min_classes, parse_args
from utils.checkpoint import (FORMAT, atomic_torch_save, load_checkpoint, rng_states,
                              seed_everything, set_rng_states)
from utils.distributed import Distributed
from utils.errors import InputError
from utils.logger import LOG_FILE, METRICS_FILE, RunLog, format_recalls, format_stat
from utils.sampler import (EndlessKPBatchSampler, FastRandomIdentitySampler, KPBatchSampler,
                           check_batch_size)
from utils.semi_global import SemiGlobalDictionary

LAST_CHECKPOINT = 'last.pth.tar'
EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_SIGNAL = 2, 3, 128


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint has been written at an iteration boundary."""


class TrainingRun:
    """Everything one run holds: built by `setup`, driven by `train`."""

    def __init__(self, args, dist=None):
        self.args = args
        self.dist = dist or Distributed()
        self.device = self.dist.device(pick_device(args.device))
        self.global_step = 0
        self.val_consumed = 0
        self.stop_signal = None
        self.resume_point = (1, 0, None)  # (epoch, first batch, partial-epoch meter)
        self.trainer = trainer_MMSI if args.MMSI else trainer

    # -- per-iteration hooks, called by trainer.train_epoch ------------------------------------
    def next_val_batch(self):
        self.val_consumed += 1
        return next(self.val_iter)

    def after_iteration(self, epoch, iteration, meter):
        every = self.args.eval_every
        if every and self.global_step % every == 0:
            self.evaluate_and_record({'epoch': epoch, 'iteration': iteration,
                                      'per_epoch': self.iterations_per_epoch,
                                      'global_step': self.global_step})
        if self.dist.any_true(self.stop_signal is not None, self.device):
            self.stop_signal = self.stop_signal or signal.SIGTERM  # another rank got it
            path = self.save_checkpoint(epoch, iteration, meter)
            self.log.print(f'{signal.Signals(self.stop_signal).name} received: stopped after '
                           f'epoch {epoch} iteration {iteration}; resume with --resume {path}')
            raise StopRequested

    # -- evaluation and checkpoints -------------------------------------------------------------
    def evaluate(self):
        """Each rank embeds its shard of the test set; the main rank scores them all (the
        metrics do not depend on the order of the embeddings)."""
        tic = time.time()
        emb, labels = extract_features(self.meta_embed, self.gallery_loader, self.device,
                                       progress=self.args.progress and self.dist.is_main,
                                       desc='evaluate', prepare=self.prepare)
        emb = self.dist.all_gather_varying(emb.to(self.device))
        labels = self.dist.all_gather_varying(labels.to(self.device))
        metrics = {}
        if self.dist.is_main:
            metrics = retrieval_metrics(emb, labels, ks=recall_ks_for(self.args.data))
        metrics['eval_seconds'] = round(time.time() - tic, 2)
        return metrics

    def evaluate_and_record(self, row):
        metrics = self.evaluate()
        where = f'epoch {row["epoch"]}' + (f' iteration {row["iteration"]}'
                                           if 'iteration' in row else '')
        self.log.print(f'Recall {where}: {format_recalls(recall_only(metrics))}')
        row.update(metrics)
        self.log.record(row)
        return metrics

    def save_checkpoint(self, epoch, iteration=0, meter=None, name=LAST_CHECKPOINT):
        """`iteration` 0: epochs 1..epoch are complete; else `iteration` batches of `epoch`.
        Only the main process writes; every process gets the path."""
        path = os.path.join(self.args.save_dir, name)
        if not self.dist.is_main:
            return path
        state = {
            'format': FORMAT, 'epoch': epoch, 'iteration': iteration,
            'global_step': self.global_step, 'meter': meter.state() if meter else None,
            'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
            'dictionary': self.dictionary.state_dict() if self.dictionary else None,
            'val_consumed': self.val_consumed, 'rng': rng_states(), 'seed': self.seed,
            'metrics': self.log.history, 'args': vars(self.args),
        }
        atomic_torch_save(state, path)
        return path


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


def recall_only(metrics):
    return {k: v for k, v in metrics.items() if k.startswith('R@') or k == 'MAP@R'}


def setup(args, dist=None):
    """Check the input and build everything; writes nothing to save_dir before all checks.
    `dist`: the torch.distributed context of this process (a single process by default)."""
    # On the CPU, the tiny tangents and gradients of the meta step underflow into denormal
    # floats, which x86 processes up to 25 times slower; flushing them to zero changes nothing
    # measurable in the results.
    torch.set_flush_denormal(True)
    run = TrainingRun(args, dist)
    run.dist.start(run.device)
    if run.device.type == 'cuda':
        torch.cuda.set_device(run.device)
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    run.seed = resolve_seed(args, checkpoint)
    seed_everything(run.seed)

    if args.input_pipeline == 'gpu' and run.device.type != 'cuda':
        raise InputError(f'--input_pipeline gpu decodes on the GPU; this run is on {run.device}')
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

    run.model = build_model(args, checkpoint).to(run.device)
    trainer.configure_speed(run)
    run.optimizer = build_optimizer(args, run.model)
    for name, criterion in run.trainer.build_criteria(args).items():
        setattr(run, name, criterion)
    run.step = run.trainer.step
    run.dictionary = None
    if args.MMSI:
        emb_dim = args.dim or 1024
        capacity = args.dict_capacity or num_classes * args.d_size
        run.dictionary = SemiGlobalDictionary(args.d_size, emb_dim, capacity, run.device)
        run.dict_min_classes = dict_min_classes(args, num_classes)
    if checkpoint is not None:
        restore_training_state(run, checkpoint)

    build_loaders(run, dataset)
    if run.dist.is_main:
        prepare_save_dir(args, resuming=checkpoint is not None)
    run.log = RunLog(args.save_dir, append=checkpoint is not None, enabled=run.dist.is_main)
    if checkpoint is not None:
        run.log.history = list(checkpoint.get('metrics') or [])
        run.log.write_metrics()
    describe_run(run, dataset, checkpoint)
    for images in (dataset.train, dataset.gallery):
        images.bad_image_log = os.path.join(args.save_dir, LOG_FILE)
    return run


def resolve_seed(args, checkpoint):
    if args.seed is not None:
        return args.seed
    if checkpoint is not None and checkpoint.get('seed') is not None:
        return checkpoint['seed']
    return int(np.random.SeedSequence().entropy % 2 ** 31)


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


def restore_training_state(run, checkpoint):
    if checkpoint.get('format') != FORMAT:  # official checkpoint: weights and epoch counter
        run.resume_point = (int(checkpoint.get('epoch', 0)) + 1, 0, None)
        return
    try:
        run.optimizer.load_state_dict(checkpoint['optimizer'])
    except (ValueError, KeyError) as err:
        raise InputError(f'--resume {run.args.resume}: optimizer state does not fit ({err})')
    if run.dictionary is not None and checkpoint.get('dictionary'):
        run.dictionary.load_state_dict(checkpoint['dictionary'])
    set_rng_states(checkpoint['rng'])
    run.global_step = checkpoint['global_step']
    run.val_consumed = checkpoint['val_consumed']
    epoch, iteration = checkpoint['epoch'], checkpoint['iteration']
    if iteration:  # stopped inside `epoch`, after `iteration` batches
        run.resume_point = (epoch, iteration, checkpoint['meter'])
    else:
        run.resume_point = (epoch + 1, 0, None)


def build_loaders(run, dataset):
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
    run.iterations_per_epoch = len(run.train_batches)
    run.train_loader = DataLoader(train_set, batch_sampler=run.train_batches,
                                  **loader_options)
    gallery_shard = Subset(gallery_set, range(rank, len(gallery_set), world))
    run.gallery_loader = DataLoader(gallery_shard, batch_size=args.eval_batch_size,
                                    shuffle=False, **loader_options)
    run.val_iter = None
    if args.MMSI:
        val_sampler = FastRandomIdentitySampler(dataset.train, args.val_num_instances,
                                                seed=run.seed + 1)
        stream = EndlessKPBatchSampler(val_sampler, args.val_batch_size, rank, world,
                                       start=run.val_consumed)
        val_options = dict(loader_options, num_workers=min(args.nThreads, 2))
        if not val_options['num_workers']:
            val_options.pop('persistent_workers', None), val_options.pop('prefetch_factor', None)
        run.val_iter = iter(DataLoader(train_set, batch_sampler=stream, **val_options))


def _ignore_sigint(worker_id):
    """Ctrl-C is handled by the main process at an iteration boundary, not by the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    log.print(f'Device: {run.device}; seed {run.seed}; {len(run.train_batches)} iterations per '
              f'epoch; MMSI {"on" if args.MMSI else "off"}'
              + (f'; {run.dist.world_size} processes, batch {args.batch_size} per process'
                 if run.dist.enabled else ''))
    if args.MMSI:
        log.print(f'MMSI: meta_grad {args.meta_grad}, meta_lr {args.meta_lr}, dictionary d_size '
                  f'{args.d_size}, capacity {run.dictionary.capacity} rows, warm-up until '
                  f'{run.dict_min_classes} classes, validation batch {args.val_batch_size} '
                  f'({args.val_num_instances} per class)')


def epoch_row(run, epoch, meter, seconds):
    row = {'epoch': epoch, 'iterations': meter.iterations, **meter.means(),
           'skipped': dict(meter.skipped), 'seconds': round(seconds, 2)}
    if run.dictionary is not None:
        row.update(dict_entries=len(run.dictionary), dict_classes=run.dictionary.num_classes)
    return row


def log_epoch(run, row):
    parts = [f'Epoch {row["epoch"]} done in {row["seconds"]:.1f}s']
    parts += [f'{k} {format_stat(row[k])}' for k in ('loss', 'pos_sim', 'neg_sim', 'val_loss',
                                                    'w_mean', 'w_max', 'w_pos_frac',
                                                    'w_pos_pairs', 'w_neg_pairs') if k in row]
    if 'dict_entries' in row:
        parts.append(f'dictionary {row["dict_entries"]} entries / {row["dict_classes"]} classes')
    skipped = row['skipped']
    parts.append('skipped ' + (', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))
                               if skipped else 'none'))
    run.log.print('  '.join(parts))


def train(run):
    args = run.args
    epoch, first_batch, meter_state = run.resume_point
    if epoch == 1 and first_batch == 0 and not run.log.history:
        run.evaluate_and_record({'epoch': 0})
    for epoch in range(epoch, args.epochs + 1):
        tic = time.time()
        try:
            meter = trainer.train_epoch(run, epoch, run.step, first_batch, meter_state)
        except trainer.NonFiniteLoss as err:
            path = run.save_checkpoint(epoch, err.iteration - 1, err.meter)
            run.log.print(f'error: non-finite loss at epoch {epoch} iteration {err.iteration} '
                          f'({err}); the last finite state is saved in {path}')
            return EXIT_NON_FINITE
        first_batch, meter_state = 0, None
        row = epoch_row(run, epoch, meter, time.time() - tic)
        log_epoch(run, row)
        if epoch % args.save_step == 0 or epoch == args.epochs:
            metrics = run.evaluate()
            run.log.print(f'Recall epoch {epoch}: {format_recalls(recall_only(metrics))}')
            row.update(metrics)
        run.log.record(row)
        run.save_checkpoint(epoch)
        if epoch % args.save_step == 0:
            run.save_checkpoint(epoch, name=f'ckp_ep{epoch}.pth.tar')
    run.log.timestamped('Training finished')
    return 0


def main(argv=None, **defaults):
    """Parse, set up, train. Returns the exit status."""
    run, dist = None, Distributed.from_environment()
    try:
        run = setup(parse_args(argv, **defaults), dist)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, frame: setattr(run, 'stop_signal', number))
        status = train(run)
        save_rank_state(run)
        return status
    except InputError as err:
        print(f'error: {last_line(err)}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except StopRequested:
        return EXIT_SIGNAL + run.stop_signal
    finally:
        if run is not None and getattr(run, 'log', None) is not None:
            run.log.close()
        dist.stop()


def save_rank_state(run):
    """Test hook: with MMSI_RANK_STATE_DIR set, every rank writes its final parameters and
    dictionary there (rank<N>.pth), so a test can check that the ranks agree."""
    folder = os.environ.get('MMSI_RANK_STATE_DIR')
    if folder:
        torch.save({'model': run.model.state_dict(),
                    'dictionary': run.dictionary.state_dict() if run.dictionary else None},
                   os.path.join(folder, f'rank{run.dist.rank}.pth'))


def last_line(err):
    """An error re-raised from a DataLoader worker carries the worker's traceback: keep the
    message itself."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1].split(': ', 1)[-1] if len(lines) > 1 else str(err)


if __name__ == '__main__':
    sys.exit(main())
