"""Clustering quality of an embedding: NMI (`evaluations.nmi`), k-means with as many clusters
as classes, then the normalised mutual information between the clusters and the classes
(arithmetic-mean normalisation, scikit-learn's default: NMI = I(Y; C) / ((H(Y) + H(C)) / 2)).

k-means is our own, in torch, so that it runs on the evaluation's device and scales to SOP
(60,502 x 512 embeddings, 11,316 clusters): k-means++ seeding (one D^2 draw per centre, no
local trials), then Lloyd iterations. Distances are computed in row chunks whose [rows, k]
block fits a memory budget, so the N x k matrix is never built whole. The random draws come
from a CPU generator seeded with `seed` and are applied on any device, so a seed selects the
same draws on the CPU and on a GPU (the sums around them may still round differently).
benchmarks/bench_nmi.py measures the cost.
"""
import torch

DEFAULT_MAX_CHUNK_BYTES = 256 * 2 ** 20
BYTES_PER_DISTANCE = 12  # the float32 [rows, k] block, the product it is built from, headroom


@torch.no_grad()
def nmi(embeddings, labels, seed=0, max_iter=100, tol=1e-4,
        max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES):
    """NMI in [0, 1] of k-means clusters (k = number of distinct labels) against the labels.

    embeddings: [N, D] (any float dtype; clustered in float32 or wider), labels: [N] integers.
    """
    embeddings, labels = _checked(embeddings, labels)
    num_classes = int(torch.unique(labels).numel())
    clusters, _ = kmeans(embeddings, num_classes, seed=seed, max_iter=max_iter, tol=tol,
                         max_chunk_bytes=max_chunk_bytes)
    return normalized_mutual_info(labels, clusters)


def normalized_mutual_info(labels_true, labels_pred):
    """I(U; V) / mean(H(U), H(V)) from the contingency table, in float64; 1.0 when both are a
    single group (scikit-learn's convention), 0.0 when either is and the other is not."""
    labels_true = torch.as_tensor(labels_true).reshape(-1)
    labels_pred = torch.as_tensor(labels_pred).reshape(-1).to(labels_true.device)
    if labels_true.numel() != labels_pred.numel():
        raise ValueError(f'{labels_true.numel()} true labels but {labels_pred.numel()} predicted')
    _, true_ids = torch.unique(labels_true, return_inverse=True)
    _, pred_ids = torch.unique(labels_pred, return_inverse=True)
    num_true, num_pred = int(true_ids.max()) + 1, int(pred_ids.max()) + 1
    if num_true == num_pred == 1:
        return 1.0
    # Non-zero cells of the contingency table: counts of each (true, predicted) pair.
    pairs, cells = torch.unique(true_ids * num_pred + pred_ids, return_counts=True)
    total = float(labels_true.numel())
    row_sums = torch.bincount(true_ids, minlength=num_true).double()
    col_sums = torch.bincount(pred_ids, minlength=num_pred).double()
    n_ij = cells.double()
    a_i, b_j = row_sums[pairs // num_pred], col_sums[pairs % num_pred]
    mutual_info = float((n_ij / total * torch.log(total * n_ij / (a_i * b_j))).sum())
    entropy_true, entropy_pred = _entropy(row_sums, total), _entropy(col_sums, total)
    if mutual_info <= 0 or entropy_true + entropy_pred == 0:
        return 0.0
    return min(1.0, max(0.0, mutual_info / ((entropy_true + entropy_pred) / 2)))


def kmeans(x, k, seed=0, max_iter=100, tol=1e-4, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES):
    """Lloyd's k-means from k-means++ seeds. Returns (assignment [N] int64, centres [k, D]).

    Stops when no assignment changes or the centres move (sum of squared shifts) by at most
    tol x the mean per-feature variance of x (scikit-learn's criterion), or after max_iter
    iterations. A cluster left empty keeps its previous centre.
    """
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f'k-means needs 1 <= k <= N, got k={k} for N={n}')
    generator = torch.Generator().manual_seed(int(seed))
    centres = kmeans_plus_plus(x, k, generator)
    threshold = tol * float(x.var(dim=0, unbiased=False).mean())
    assignment = None
    for _ in range(max_iter):
        new_assignment = assign(x, centres, max_chunk_bytes)
        if assignment is not None and torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        sums = torch.zeros_like(centres).index_add_(0, assignment, x)
        counts = torch.bincount(assignment, minlength=k)
        filled = counts > 0
        new_centres = torch.where(filled[:, None], sums / counts.clamp(min=1)[:, None].to(x.dtype),
                                  centres)
        shift = float(((new_centres - centres) ** 2).sum())
        centres = new_centres
        if shift <= threshold:
            assignment = assign(x, centres, max_chunk_bytes)
            break
    return assignment, centres


def kmeans_plus_plus(x, k, generator):
    """k centres drawn from the rows of x: the first uniformly, each next with probability
    proportional to its squared distance to the nearest centre drawn so far."""
    n = x.shape[0]
    norms = (x ** 2).sum(dim=1)

    def squared_distances(index):
        # [N] to row `index`: one matrix-vector product, no [N, D] temporary
        return (norms - 2 * (x @ x[index]) + norms[index]).clamp(min=0)

    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    nearest = squared_distances(first)                          # D^2 to the nearest centre
    for _ in range(1, k):
        cumulative = nearest.double().cumsum(0)
        total = float(cumulative[-1])
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if total > 0:
            index = int(torch.searchsorted(cumulative, torch.tensor([u * total],
                        dtype=torch.float64, device=x.device), right=True).clamp(max=n - 1))
        else:  # every point coincides with a centre: any point will do
            index = min(int(u * n), n - 1)
        chosen.append(index)
        nearest = torch.minimum(nearest, squared_distances(index))
    return x[torch.tensor(chosen, device=x.device)].clone()


def assign(x, centres, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES):
    """Index of the nearest centre of every row of x, by chunks of rows: argmin over centres of
    |c|^2 - 2 x.c (|x|^2 is the same for the whole row)."""
    k = centres.shape[0]
    rows = max(1, int(max_chunk_bytes) // (k * BYTES_PER_DISTANCE))
    centre_norms = (centres ** 2).sum(dim=1)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], rows):
        chunk = x[start:start + rows]
        distances = torch.addmm(centre_norms[None, :], chunk, centres.t(), alpha=-2)
        out[start:start + rows] = distances.argmin(dim=1)
    return out


def _entropy(counts, total):
    p = counts[counts > 0] / total
    return float(-(p * torch.log(p)).sum())


def _checked(embeddings, labels):
    embeddings = torch.as_tensor(embeddings)
    labels = torch.as_tensor(labels)
    if embeddings.dim() != 2 or embeddings.shape[0] == 0:
        raise ValueError(f'embeddings must be a non-empty [N, D] tensor, got shape '
                         f'{tuple(embeddings.shape)}')
    if labels.dim() != 1 or len(labels) != len(embeddings):
        raise ValueError(f'labels must be [N] = [{len(embeddings)}], got shape '
                         f'{tuple(labels.shape)}')
    if not torch.isfinite(embeddings).all():
        raise ValueError('embeddings contain NaN or infinite values')
    return embeddings, labels.to(embeddings.device)


__all__ = ['nmi', 'normalized_mutual_info', 'kmeans']
