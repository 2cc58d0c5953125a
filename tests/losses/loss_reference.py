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




# ---- Triplet, Circle, SupCon: loops over anchors, positives and negatives ----------------------
# Each takes sim(i, j), the similarity of anchor (query) i and item j, so that the same loop
# serves a batch, the dictionary, and an explicit similarity matrix (for dL/dS).

def partners(i, labels, keys_labels, exclude_self):
    pos = [j for j in range(len(keys_labels)) if keys_labels[j] == labels[i]
           and not (exclude_self and j == i)]
    neg = [j for j in range(len(keys_labels)) if keys_labels[j] != labels[i]]
    return pos, neg


def triplet_selection(sim, labels, keys_labels, margin, exclude_self=True):
    chosen = set()
    for i in range(len(labels)):
        pos, neg = partners(i, labels, keys_labels, exclude_self)
        for p in pos:
            for n in neg:
                if float(sim(i, n).detach() - sim(i, p).detach() + margin) > 0:
                    chosen |= {(i, p, 'pos'), (i, n, 'neg')}
    return chosen


def triplet_value(sim, num_queries, chosen, margin):
    total = torch.zeros((), dtype=torch.float64)
    for i in range(num_queries):
        pos = [j for a, j, kind in chosen if a == i and kind == 'pos']
        neg = [j for a, j, kind in chosen if a == i and kind == 'neg']
        for p in pos:
            for n in neg:
                total = total + torch.relu(sim(i, n) - sim(i, p) + margin)
    return total / num_queries


def both_sided_selection(labels, keys_labels, exclude_self=True):
    """Every pair of the anchors that have a positive and a negative (Circle)."""
    chosen = set()
    for i in range(len(labels)):
        pos, neg = partners(i, labels, keys_labels, exclude_self)
        if pos and neg:
            chosen |= {(i, j, 'pos') for j in pos} | {(i, j, 'neg') for j in neg}
    return chosen


def circle_value(sim, num_queries, chosen, m=0.4, gamma=80.0):
    total = torch.zeros((), dtype=torch.float64)
    for i in range(num_queries):
        pos = [j for a, j, kind in chosen if a == i and kind == 'pos']
        neg = [j for a, j, kind in chosen if a == i and kind == 'neg']
        if not pos or not neg:
            continue
        pos_terms, neg_terms = [], []
        for p in pos:
            s = sim(i, p)
            alpha_p = max(1 + m - float(s.detach()), 0.0)  # a constant, not differentiated
            pos_terms.append(-gamma * alpha_p * (s - (1 - m)))
        for n in neg:
            s = sim(i, n)
            alpha_n = max(float(s.detach()) + m, 0.0)
            neg_terms.append(gamma * alpha_n * (s - m))
        inner = torch.logsumexp(torch.stack(neg_terms), 0) + torch.logsumexp(
            torch.stack(pos_terms), 0)
        total = total + torch.nn.functional.softplus(inner)
    return total / num_queries


def supcon_selection(labels, keys_labels, exclude_self=True):
    """Every pair of the anchors that have a positive, except an anchor whose one partner is a
    single positive (its term is S/t - log exp(S/t) = 0)."""
    chosen = set()
    for i in range(len(labels)):
        pos, neg = partners(i, labels, keys_labels, exclude_self)
        if pos and (neg or len(pos) > 1):
            chosen |= {(i, j, 'pos') for j in pos} | {(i, j, 'neg') for j in neg}
    return chosen


def supcon_value(sim, num_queries, chosen, temperature=0.1):
    total = torch.zeros((), dtype=torch.float64)
    for i in range(num_queries):
        pos = [j for a, j, kind in chosen if a == i and kind == 'pos']
        every = [j for a, j, kind in chosen if a == i]
        if not pos:
            continue
        log_denominator = torch.log(sum(torch.exp(sim(i, a) / temperature) for a in every))
        total = total - sum(sim(i, p) / temperature - log_denominator for p in pos) / len(pos)
    return total / num_queries


# ---- test batches --------------------------------------------------------------------------

def make_batch(seed, dtype=torch.float64):
    """Labels that are not 0..C-1, a singleton class, duplicate embeddings within and across
    classes, and a tight cluster whose anchors mine no negative under MS."""
    labels = torch.tensor([7, 7, 7, -3, -3, 100, 100, 42, 42, 42, 5, 11, 11])
    emb = unit_rows(len(labels), 6, seed, dtype)
    emb[1] = emb[0]  # same-label duplicate
    emb[4] = emb[5]  # duplicate with another label
    centre = emb[7].clone()
    for i in (8, 9):
        emb[i] = centre + 0.01 * unit_rows(1, 6, seed + i, dtype)[0]
    emb = emb / emb.norm(dim=1, keepdim=True)
    return emb, labels
