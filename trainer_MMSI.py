"""One MMSI training iteration (docs/design.md, "One MMSI iteration"), step by step.

1. e = f(x; theta) with BN in eval; push e (detached) and y into the semi-global dictionary.
2. Warm-up: while the dictionary holds fewer than --dict_min_classes classes, no update.
3. (P, N) = pairs the S-form loss mines in e.
4.-6. g = dL_G/dw at w = 0 (models/meta_layers.py); weights = relu(-g) / max(relu(-g)).
   Skip the iteration when L_G is exactly 0 or no pair gets a positive weight; stop the run
   (trainer.NonFinite) when L_G is NaN or infinite.
7. Real step: L_W(e, weights) on the same batch, reusing e (BN in eval, no dropout: a fresh
   forward would give the same tensor).
"""
import math

import torch

import trainer
from losses.pairs import masked_mean, pair_similarity_stats
from models.meta_layers import meta_gradient, normalize_weights
from trainer import skip_step, to_device

# fp16 gradients of the validation loss can underflow; the pair weights are normalised by their
# maximum, so a constant scale of L_G changes nothing else.
VAL_LOSS_SCALE = {'off': 1.0, 'bf16': 1.0, 'fp16': 1024.0}


def mmsi_step(run, images, labels):
    cpu_labels = labels  # the dictionary's bookkeeping reads them without a device sync
    images, labels = to_device(run, images, labels)
    emb = run.train_embed(images)
    if run.dist.enabled:  # every process stores every process's batch: identical dictionaries
        run.dictionary.push(run.dist.all_gather(emb.detach()), run.dist.all_gather(labels))
    else:
        run.dictionary.push(emb.detach(), cpu_labels)
    if run.dictionary.num_classes < run.dict_min_classes:
        skip_step(run, emb)
        return {'skipped': 'warmup'}

    criteria = run.criteria
    pos_mask, neg_mask = criteria.select(emb.detach(), labels)
    val_images, val_labels = to_device(run, *run.next_val_batch())
    mem_emb, mem_labels = run.dictionary.tensors()
    grad, val_loss = meta_gradient(
        run.local_embed, images, labels, pos_mask, neg_mask, val_images, val_labels, mem_emb,
        mem_labels, criteria.weighted, criteria.semi_global, run.args.meta_lr, method=run.args.meta_grad,
        emb=emb, return_val_loss=True, val_loss_scale=VAL_LOSS_SCALE[run.args.amp])
    value = float(val_loss)  # the skip decision; a NaN L_G means NaN embeddings or dictionary
    weights = None if value == 0 or not math.isfinite(value) else normalize_weights(grad)
    # Processes skip (or stop) together: the real step is one synchronised update.
    finite, usable = run.dist.all_true_each([math.isfinite(value), weights is not None],
                                            run.device)
    if not finite:
        raise trainer.NonFinite('validation loss', f'L_G is {value}' if not math.isfinite(value)
                                else 'L_G of another process is not finite')
    if not usable:
        skip_step(run, emb)
        reason = 'zero_val_loss' if value == 0 else 'zero_weights'
        return {'skipped': reason if weights is None else 'other_process'}

    loss = criteria.weighted(emb, labels, weights, pos_mask, neg_mask)
    trainer.optimizer_step(run, loss)
    pos_sim, neg_sim = pair_similarity_stats(emb.detach(), labels)
    return {'loss': loss.detach(), 'pos_sim': pos_sim, 'neg_sim': neg_sim,
            'val_loss': val_loss, **weight_statistics(weights, pos_mask, neg_mask)}


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
