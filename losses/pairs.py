"""Pair bookkeeping shared by every loss: similarities and positive / negative masks."""
import torch


def batch_pairs(emb, labels):
    """Similarities of a batch with itself and its pair masks.

    emb: [B, D] L2-normalised, labels: [B]. Returns sim [B, B], pos_mask (same label, self
    excluded by index) and neg_mask (other label), both bool [B, B].
    """
    sim = emb @ emb.t()
    same = labels[:, None] == labels[None, :]
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return sim, same & not_self, ~same


def cross_pairs(query_emb, query_labels, memory_emb, memory_labels):
    """Similarities of queries [Q, D] to stored entries [M, D]: sim [Q, M], pos_mask, neg_mask.
    Nothing is excluded: a query is never one of the stored entries."""
    sim = query_emb @ memory_emb.t()
    same = query_labels[:, None] == memory_labels[None, :]
    return sim, same, ~same


@torch.no_grad()
def pair_similarity_stats(emb, labels):
    """(mean positive similarity, mean negative similarity) of a batch, as 0-d tensors (NaN
    when the batch has no such pair); for the training log."""
    sim, pos_mask, neg_mask = batch_pairs(emb.float(), labels)
    return masked_mean(sim, pos_mask), masked_mean(sim, neg_mask)


def masked_mean(values, mask, empty=float('nan')):
    """Mean of `values` where `mask` holds (`empty` if nowhere), without boolean indexing, whose
    data-dependent size would make a GPU wait for the host."""
    count = mask.sum()
    mean = torch.where(mask, values, 0).sum() / count.clamp(min=1)
    return torch.where(count > 0, mean, empty)


def drop_one_sided_rows(pos_sel, neg_sel):
    """Empty both selections of an anchor that lacks positives or negatives."""
    keep = pos_sel.any(1, keepdim=True) & neg_sel.any(1, keepdim=True)
    return pos_sel & keep, neg_sel & keep


def masked_logsumexp(x, mask):
    """Row-wise log(sum over mask of exp(x)) [rows]. A row with an empty mask gives 0 instead
    of -inf, with zero gradient (callers discard such rows; -inf would make NaN gradients)."""
    empty = ~mask.any(1, keepdim=True)
    lse = torch.logsumexp(x.masked_fill(~(mask | empty), float('-inf')), dim=1)
    return torch.where(empty.squeeze(1), 0, lse)
