"""Retrieval metrics of an embedding: Recall@K, MAP@R and R-Precision, computed in query chunks.

Similarity is the dot product of float32 embeddings (the caller L2-normalises them).
The full query x gallery similarity matrix is never built: queries are processed in chunks
of rows whose size follows a memory budget, so Stanford Online Products (60,502 x 512)
fits in well under a gigabyte on the CPU or on a GPU.

Ranking rule used by both metrics (pessimistic on ties): a gallery item of another label
whose similarity equals that of a positive is ranked above the positive. Duplicated
embeddings therefore never inflate a metric.
"""
import torch

from DataSet.specs import SPECS

# The K of the reported Recall@K per data set (DataSet/specs.py holds them).
RECALL_KS = {name: spec.recall_ks for name, spec in SPECS.items()}

DEFAULT_MAX_CHUNK_BYTES = 512 * 2 ** 20
# Working memory per similarity entry of a chunk, at its peak: the float32 similarities, the
# bool same-label mask and a float32 copy holding only the positives (9 bytes; measured on the
# CPU, SOP-sized) plus headroom.
BYTES_PER_SIMILARITY = 12
# Working memory per retrieved positive / negative of a row (top-k values and indices,
# ranks, precisions).
BYTES_PER_RETRIEVED = 48


def recall_ks_for(data_name):
    """The Recall@K values reported for a data set (`cub`, `car`, `glyphs`, `product`)."""
    if data_name not in RECALL_KS:
        raise ValueError(f'no Recall@K values for dataset {data_name!r}; '
                         f'known: {sorted(RECALL_KS)} (see DataSet/specs.py)')
    return RECALL_KS[data_name]


def recall_at_ks(query, query_labels, gallery=None, gallery_labels=None, ks=(1, 2, 4, 8), *,
                 chunk_size=None, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES):
    """Recall@K for each K in `ks`, as a list of Python floats in [0, 1].

    query: [N, D] embeddings, query_labels: [N] integers (any values). gallery / gallery_labels:
    [M, D] / [M]; when `gallery` is None the queries are their own gallery and each query's own
    row is excluded by index (a duplicate of it at another index still counts).

    A query hits at K when its best-ranked positive (same label) is among the first K retrieved
    items. Ties are pessimistic: a negative whose similarity equals the best positive's ranks
    above it, so a query hits at K iff #(negatives with sim >= best positive sim) < K. A query
    without any positive in the gallery is a miss; the denominator is the number of queries.

    chunk_size: query rows per chunk; by default as many as keep one chunk's working memory
    (about 12 bytes per query-gallery pair) within `max_chunk_bytes` (512 MiB).
    """
    metrics = _evaluate(query, query_labels, gallery, gallery_labels, ks, with_map=False,
                        chunk_size=chunk_size, max_chunk_bytes=max_chunk_bytes)
    return [metrics[f'R@{k}'] for k in ks]


def map_at_r(query, query_labels, gallery=None, gallery_labels=None, *,
             chunk_size=None, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES):
    """MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check") as a Python float.

    For a query with R positives in the gallery (self excluded by index when `gallery` is None),
    AP@R = (1/R) * sum_{i=1..R} P(i) * [i-th retrieved item is a positive], with P(i) the
    precision of the first i retrieved items. Ties are ranked pessimistically (among equal
    similarities, negatives come before positives). Queries with R = 0 are left out of the mean;
    0.0 when no query has a positive. Arguments as in `recall_at_ks`.
    """
    metrics = _evaluate(query, query_labels, gallery, gallery_labels, ks=(), with_map=True,
                        chunk_size=chunk_size, max_chunk_bytes=max_chunk_bytes)
    return metrics['MAP@R']


def r_precision(query, query_labels, gallery=None, gallery_labels=None, *,
                chunk_size=None, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES):
    """R-Precision (Musgrave et al. 2020) as a Python float: for a query with R positives in the
    gallery (self excluded by index when `gallery` is None), the fraction of positives among
    its first R retrieved items. Ties, queries with R = 0 and arguments as in `map_at_r`.
    """
    metrics = _evaluate(query, query_labels, gallery, gallery_labels, ks=(), with_map=True,
                        chunk_size=chunk_size, max_chunk_bytes=max_chunk_bytes)
    return metrics['R-Precision']


def retrieval_metrics(query, query_labels, gallery=None, gallery_labels=None, ks=(1, 2, 4, 8), *,
                      chunk_size=None, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES):
    """Recall@K for every K, MAP@R and R-Precision in one pass over the query chunks.

    Returns {'R@1': float, ..., 'MAP@R': float, 'R-Precision': float}; definitions, tie rule
    and arguments as in `recall_at_ks`, `map_at_r` and `r_precision`.
    """
    return _evaluate(query, query_labels, gallery, gallery_labels, ks, with_map=True,
                     chunk_size=chunk_size, max_chunk_bytes=max_chunk_bytes)


def split_metrics(gallery, gallery_labels, ks, query=None, query_labels=None, *, nmi=False,
                  nmi_seed=0, chunk_size=None, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES):
    """The metrics of a data set's test split, both kinds (DataSet.create's `.gallery` /
    `.query`): without a query set the gallery queries itself (each image's own row excluded);
    with one (In-Shop) the queries retrieve from the gallery and nothing is excluded.

    Returns retrieval_metrics' dict, plus 'NMI' when `nmi`: k-means (k = number of classes,
    seed `nmi_seed`) over every test embedding, the gallery's and the query set's together.
    """
    if (query is None) != (query_labels is None):
        raise ValueError('query and query_labels go together: pass both or neither')
    metrics = retrieval_metrics(gallery if query is None else query,
                                gallery_labels if query is None else query_labels,
                                None if query is None else gallery,
                                None if query is None else gallery_labels, ks,
                                chunk_size=chunk_size, max_chunk_bytes=max_chunk_bytes)
    if nmi:
        from evaluations.clustering import nmi as clustering_nmi  # needs nothing else here
        embeddings, labels = torch.as_tensor(gallery), torch.as_tensor(gallery_labels)
        if query is not None:
            embeddings = torch.cat([embeddings, torch.as_tensor(query).to(embeddings.device)])
            labels = torch.cat([labels, torch.as_tensor(query_labels).to(labels.device)])
        metrics['NMI'] = clustering_nmi(embeddings, labels, seed=nmi_seed)
    return metrics


@torch.no_grad()
def _evaluate(query, query_labels, gallery, gallery_labels, ks, with_map, chunk_size,
              max_chunk_bytes):
    query, query_labels, gallery, gallery_labels = _checked_inputs(
        query, query_labels, gallery, gallery_labels)
    ks = _checked_ks(ks)
    self_excluded = gallery is None
    if self_excluded:
        gallery, gallery_labels = query, query_labels
    num_queries, num_gallery = len(query), len(gallery)
    # Upper bound of R; a fixed number of retrieved positives per row also makes MAP@R
    # independent of the chunking, bit for bit.
    largest_class = int(torch.unique(gallery_labels, return_counts=True)[1].max())
    if chunk_size is None:
        chunk_size = _chunk_rows(num_gallery, largest_class, max_chunk_bytes)
    elif int(chunk_size) < 1:
        raise ValueError(f'chunk_size must be a positive number of query rows, got {chunk_size}')
    chunk_size = int(chunk_size)

    hits = torch.zeros(len(ks), dtype=torch.int64, device=query.device)
    has_pos = torch.zeros(num_queries, dtype=torch.bool, device=query.device)
    average_precision = torch.zeros(num_queries, dtype=torch.float64, device=query.device)
    precision_at_r = torch.zeros(num_queries, dtype=torch.float64, device=query.device)
    ks_tensor = torch.tensor(ks, dtype=torch.int64, device=query.device)

    for start in range(0, num_queries, chunk_size):
        chunk = slice(start, start + chunk_size)
        num_pos, neg_above_best, chunk_r_metrics = _score_chunk(
            query[chunk], query_labels[chunk], gallery, gallery_labels,
            self_column=start if self_excluded else None, largest_class=largest_class,
            with_map=with_map)
        has_pos[chunk] = num_pos > 0
        # Pessimistic ties: a query hits at K iff fewer than K negatives have sim >= best positive.
        hits += (has_pos[chunk, None] & (neg_above_best[:, None] < ks_tensor)).sum(dim=0)
        if with_map:
            average_precision[chunk], precision_at_r[chunk] = chunk_r_metrics

    metrics = {f'R@{k}': hits[i].item() / num_queries for i, k in enumerate(ks)}
    if with_map:  # means over the queries that have a positive
        for name, values in (('MAP@R', average_precision), ('R-Precision', precision_at_r)):
            metrics[name] = values[has_pos].mean().item() if has_pos.any() else 0.0
    return metrics


def _score_chunk(query, query_labels, gallery, gallery_labels, self_column, largest_class,
                 with_map):
    """One chunk of c queries against the whole gallery [M, D].

    Returns R per query [c], #(negatives with sim >= best positive sim) [c] and, when with_map,
    (AP@R, R-Precision) per query, [c] each (else None). self_column: gallery index of the chunk's first query when
    the queries are their own gallery (their own rows are then excluded), else None.
    Kept in its own function so that the chunk's [c, M] tensors are freed before the next.
    """
    sim = query @ gallery.t()                                       # [c, M]
    same_label = query_labels[:, None] == gallery_labels[None, :]   # [c, M]
    if self_column is not None:
        rows = torch.arange(len(query), device=query.device)
        same_label[rows, self_column + rows] = False
        sim[rows, self_column + rows] = float('-inf')               # never retrieved
    # int32 sums: on the CPU a bool sum first makes a converted copy, int64 by default.
    num_pos = same_label.sum(dim=1, dtype=torch.int32)              # R per query

    # Positives' similarities in descending order; column 0 is the best positive (-inf for a
    # query without positives, which is a miss whatever it is).
    pos_sim = torch.where(same_label, sim, float('-inf'))
    top_pos_sim = pos_sim.topk(largest_class, dim=1).values         # [c, largest_class]
    del pos_sim
    neg_sim = sim.masked_fill_(same_label, float('-inf'))           # reuses sim's memory
    del same_label

    neg_above_best = (neg_sim >= top_pos_sim[:, :1]).sum(dim=1, dtype=torch.int32)
    r_metrics = _metrics_at_r(neg_sim, top_pos_sim, num_pos) if with_map else None
    return num_pos, neg_above_best, r_metrics


def _metrics_at_r(neg_sim, top_pos_sim, num_pos):
    """(AP@R, R-Precision) of each query row (0 when R = 0), from its negatives' similarities
    [c, M] (-inf elsewhere) and its positives' similarities in descending order [c, P] (-inf
    beyond R).

    Under the pessimistic ranking the j-th positive (j = 1..R) sits at rank
    j + #(negatives with sim >= its sim). Only ranks up to R matter, so counting against the
    P >= R most similar negatives is exact: a count capped at P already puts the rank past R.
    """
    max_pos = top_pos_sim.shape[1]
    top_neg_sim = neg_sim.topk(min(max_pos, neg_sim.shape[1]), dim=1).values   # descending
    neg_ascending = top_neg_sim.flip(dims=(1,)).contiguous()
    neg_below = torch.searchsorted(neg_ascending, top_pos_sim)    # #negatives with sim < pos
    neg_at_or_above = neg_ascending.shape[1] - neg_below          # [c, P]
    position = torch.arange(1, max_pos + 1, device=neg_sim.device)  # j
    rank = position[None, :] + neg_at_or_above
    # rank <= R also drops the padding (j > R implies rank > R).
    counted = rank <= num_pos[:, None]  # the positives among the first R retrieved
    precision = position[None, :].double() / rank.double()
    per_positive = num_pos.clamp(min=1).double()
    return ((precision * counted).sum(dim=1) / per_positive,
            counted.sum(dim=1).double() / per_positive)


def _chunk_rows(num_gallery, largest_class, max_chunk_bytes):
    """Query rows per chunk so that one chunk's working memory stays within max_chunk_bytes."""
    bytes_per_row = num_gallery * BYTES_PER_SIMILARITY + largest_class * BYTES_PER_RETRIEVED
    return max(1, int(max_chunk_bytes) // bytes_per_row)


def _checked_inputs(query, query_labels, gallery, gallery_labels):
    """Validated (query, query_labels, gallery, gallery_labels): embeddings float32 and
    labels 1-D, all on the query's device; gallery and gallery_labels stay None together."""
    query = _checked_embeddings(query, 'query')
    query_labels = _checked_labels(query_labels, len(query), 'query', query.device)
    if gallery is None:
        if gallery_labels is not None:
            raise ValueError('gallery_labels given without gallery: pass both, or neither to '
                             'use the queries as their own gallery')
        return query, query_labels, None, None
    if gallery_labels is None:
        raise ValueError('gallery given without gallery_labels: pass both, or neither to use '
                         'the queries as their own gallery')
    gallery = _checked_embeddings(gallery, 'gallery').to(query.device)
    if gallery.shape[1] != query.shape[1]:
        raise ValueError(f'query and gallery embeddings differ in dimension: '
                         f'{query.shape[1]} vs {gallery.shape[1]}')
    gallery_labels = _checked_labels(gallery_labels, len(gallery), 'gallery', query.device)
    return query, query_labels, gallery, gallery_labels


def _checked_embeddings(emb, name):
    emb = torch.as_tensor(emb)
    if emb.dim() != 2:
        raise ValueError(f'{name} embeddings must be a [N, D] tensor, got shape {tuple(emb.shape)}')
    if emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f'{name} embeddings are empty (shape {tuple(emb.shape)})')
    emb = emb.float()
    if not torch.isfinite(emb).all():
        raise ValueError(f'{name} embeddings contain NaN or infinite values')
    return emb


def _checked_labels(labels, num_rows, name, device):
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f'{name}_labels must be a 1-D tensor, got shape {tuple(labels.shape)}')
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(f'{name}_labels must hold integers, got dtype {labels.dtype}')
    if len(labels) != num_rows:
        raise ValueError(f'{name} has {num_rows} embeddings but {len(labels)} labels')
    return labels.to(device)


def _checked_ks(ks):
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f'every K of Recall@K must be a positive integer, got {ks}')
    return ks
