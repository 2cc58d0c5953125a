"""Plain per-anchor loop references for the losses, written independently of losses/.

Selections are sets of (anchor, other, kind) with kind 'pos' or 'neg'; values are built from
scalar torch operations so autograd gives reference gradients too.
"""

import torch

BASE = 0.5


def dot(a, b):
    return (a * b).sum()


def contrastive_selection(emb, labels, margin):
    chosen = set()
    for i in range(len(emb)):
        for j in range(len(emb)):
            if j == i:
                continue
            s = float(dot(emb[i], emb[j]))
            if labels[i] == labels[j]:
                chosen.add((i, j, 'pos'))
            elif s > margin:
                chosen.add((i, j, 'neg'))
    return chosen


def ms_selection(emb, labels, margin):
    chosen = set()
    for i in range(len(emb)):
        pos = [j for j in range(len(emb)) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(len(emb)) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        sims = {j: float(dot(emb[i], emb[j])) for j in pos + neg}
        min_pos = min(sims[j] for j in pos)
        max_neg = max(sims[j] for j in neg)
        sel_neg = [j for j in neg if sims[j] + margin > min_pos]
        sel_pos = [j for j in pos if sims[j] - margin < max_neg]
        if sel_neg and sel_pos:
            chosen |= {(i, j, 'pos') for j in sel_pos} | {(i, j, 'neg') for j in sel_neg}
    return chosen


def contrastive_value(query, keys, chosen, weights=None):
    total = query.new_zeros(())
    for i, j, kind in chosen:
        s = dot(query[i], keys[j])
        w = 1.0 if weights is None else weights[i, j]
        total = total + ((1 - s) * w if kind == 'pos' else s * w)
    return total / len(query)


def ms_value(query, keys, chosen, weights=None, alpha=40.0, beta=2.0):
    total = query.new_zeros(())
    for i in range(len(query)):
        pos_sum, neg_sum = query.new_zeros(()), query.new_zeros(())
        for a, j, kind in chosen:
            if a != i:
                continue
            s = dot(query[i], keys[j]) * (1.0 if weights is None else weights[i, j])
            if kind == 'pos':
                pos_sum = pos_sum + torch.exp(-beta * (s - BASE))
            else:
                neg_sum = neg_sum + torch.exp(alpha * (s - BASE))
        total = total + 2 / beta * torch.log(1 + pos_sum) + 2 / alpha * torch.log(1 + neg_sum)
    return total / len(query)


def global_selection(query, query_labels, memory, memory_labels, rule, margin):
    """Dictionary pairs: Con keeps all positives and negatives above the margin; MS keeps
    everything for queries that have both a positive and a negative."""
    chosen = set()
    for i in range(len(query)):
        pos = [j for j in range(len(memory)) if memory_labels[j] == query_labels[i]]
        neg = [j for j in range(len(memory)) if memory_labels[j] != query_labels[i]]
        if rule == 'Con':
            chosen |= {(i, j, 'pos') for j in pos}
            chosen |= {(i, j, 'neg') for j in neg if float(dot(query[i], memory[j])) > margin}
        elif pos and neg:
            chosen |= {(i, j, 'pos') for j in pos} | {(i, j, 'neg') for j in neg}
    return chosen


def masks_to_selection(pos_mask, neg_mask):
    chosen = {(i, j, 'pos') for i, j in pos_mask.nonzero().tolist()}
    return chosen | {(i, j, 'neg') for i, j in neg_mask.nonzero().tolist()}


def unit_rows(rows, cols, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g, dtype=dtype)
    return x / x.norm(dim=1, keepdim=True)


