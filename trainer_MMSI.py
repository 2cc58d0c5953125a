"""One MMSI training iteration (docs/design.md, "One MMSI iteration"), step by step.

1. e = f(x; theta) with BN in eval; push e (detached) and y into the semi-global dictionary.
2. Warm-up: while the dictionary holds fewer than --dict_min_classes classes, no update.
3. (P, N) = pairs the S-form loss mines in e.
4.-6. g = dL_G/dw at w = 0 (models/meta_layers.py), given L_W and L_G as closures over this
   batch's labels and pairs and the dictionary; weights = relu(-g) / max(relu(-g)).
   (--weight_norm mean: divided by their mean over the selected pairs instead.) Then the
   --mmsi_weights control: learned (as computed), shuffled (permuted among the selected pairs of
   each kind) or kind_mean (each selected pair gets its kind's mean weight).
   Skip the iteration when L_G is exactly 0 or no pair gets a positive weight; stop the run
   (trainer.NonFinite) when L_G is NaN or infinite.
7. Real step: L_W(e, weights) on the same batch, reusing e (BN in eval, no dropout: a fresh
   forward would give the same tensor).
"""
import math

import numpy as np
import torch

import trainer
from losses.pairs import masked_mean, pair_similarity_stats
from models.meta_layers import control_weights, meta_gradient, normalize_weights
from trainer import skip_step, to_device

# fp16 gradients of the validation loss can underflow: the step differentiates L_G times this
# scale and divides g and L_G by it again (a power of two: exact). The pair weights are
# normalised by their maximum, so the scale changes nothing else.
VAL_LOSS_SCALE = {'off': 1.0, 'bf16': 1.0, 'fp16': 1024.0}


def mmsi_step(run, images, labels):
    cpu_labels = labels  # the dictionary's bookkeeping reads them without a device sync
    images, labels = to_device(run, images, labels)
    emb = run.network.train_embed(images)
    if run.dist.enabled:  # every process stores every process's batch: identical dictionaries
        run.dictionary.push(run.dist.all_gather(emb.detach()), run.dist.all_gather(labels))
    else:
        run.dictionary.push(emb.detach(), cpu_labels)
    if run.dictionary.num_classes < run.args.dict_min_classes:
        skip_step(run, emb)
        return {'skipped': 'warmup'}

    criteria = run.criteria
    pos_mask, neg_mask = criteria.select(emb.detach(), labels)  # 3. (P, N)
    val_images, val_labels = to_device(run, *run.next_val_batch())
    mem_emb, mem_labels = run.dictionary.tensors()
    scale = VAL_LOSS_SCALE[run.args.amp]

    def train_loss(batch_emb, pair_weights):  # L_W(e, w) on (P, N): steps 4 and 7
        return criteria.weighted(batch_emb, labels, pair_weights, pos_mask, neg_mask)

    def val_loss(val_emb):  # L_G of the validation batch against D (step 5), times the scale
        return criteria.semi_global(val_emb, val_labels, mem_emb, mem_labels) * scale

    # 4.-6. g = dL_G/dw at w = 0, then the scale divided back out of g and L_G
    grad, loss_g = meta_gradient(run.network.local_embed, images, val_images, train_loss, val_loss,
                                 run.args.meta_lr, method=run.args.meta_grad, emb=emb)
    grad, loss_g = grad / scale, loss_g / scale
    value = float(loss_g)  # the skip decision; a NaN L_G means NaN embeddings or dictionary
    weights = None
    if value != 0 and math.isfinite(value):
        weights = normalize_weights(grad, pos_mask | neg_mask, by=run.args.weight_norm)
    if weights is not None and run.args.mmsi_weights != 'learned':
        weights = control_weights(weights, pos_mask, neg_mask, run.args.mmsi_weights,
                                  control_generator(run))
    # Processes skip (or stop) together: the real step is one synchronised update.
    finite, usable = run.dist.all_true_each([math.isfinite(value), weights is not None],
                                            run.device)
    if not finite:
        raise trainer.NonFinite(run, 'validation loss', f'L_G is {value}'
                                if not math.isfinite(value)
                                else 'L_G of another process is not finite')
    if not usable:
        skip_step(run, emb)
        reason = 'zero_val_loss' if value == 0 else 'zero_weights'
        return {'skipped': reason if weights is None else 'other_process'}

    loss = train_loss(emb, weights)  # 7. the real step
    trainer.optimizer_step(run, loss)
    pos_sim, neg_sim = pair_similarity_stats(emb.detach(), labels)
    return {'loss': loss.detach(), 'pos_sim': pos_sim, 'neg_sim': neg_sim,
            'val_loss': loss_g, **weight_statistics(weights, pos_mask, neg_mask)}


def control_generator(run):
    """The shuffled control's random stream at this iteration: a function of the run's seed,
    its global step and the process's rank, so that a resumed run draws the same permutations."""
    state = np.random.SeedSequence([run.seed, run.global_step, run.dist.rank]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def weight_statistics(weights, pos_mask, neg_mask):
    """Over the selected pairs: mean and max weight and the fraction with a positive weight;
    and the mean weight of the selected positive and of the selected negative pairs apart.
    Zero where there is no such pair. Masked reductions only: no GPU-host synchronisation."""
    selected = pos_mask | neg_mask
    return {'w_mean': masked_mean(weights, selected, 0),
            'w_max': torch.where(selected, weights, 0).amax(),
            'w_pos_frac': masked_mean((weights > 0).to(weights.dtype), selected, 0),
            'w_pos_pairs': masked_mean(weights, pos_mask, 0),
            'w_neg_pairs': masked_mean(weights, neg_mask, 0)}


step = mmsi_step
