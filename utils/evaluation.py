"""The evaluation of a network on a data set's test split, written once: training
(MMSI_train.evaluate) and test.py both call `evaluate_network`.

It embeds the gallery, the query set (In-Shop) and the --holdout_classes images, each process
its shard, and scores them on the main process: Recall@K (the data set's Ks), MAP@R and
R-Precision of the test split (evaluations.split_metrics), NMI when the --nmi rule asks for it
(`nmi_due`), and the holdout classes' metrics (`holdout_metrics`).
"""
import torch

from common.log_format import HOLDOUT_PREFIX
from DataSet.loaders import make_loaders
from evaluations import (ExtractionStopped, extract_features, recall_ks_for, retrieval_metrics,
                         split_metrics)

HOLDOUT_KEYS = ('R@1', 'MAP@R', 'R-Precision')


class NonFiniteEmbeddings(RuntimeError):
    """The network gave a NaN or an infinity on some test image (finite but huge parameters
    can overflow in it); raised on every process."""


def nmi_due(nmi, final):
    """The --nmi rule: 'every' evaluation, only the 'final' one (the last epoch's; test.py's
    evaluation is final), or 'off'."""
    return nmi == 'every' or (nmi == 'final' and final)


def evaluate_network(network, loaders, config, *, device, dist, final=False, seed=0,
                     should_stop=None):
    """The metrics row of an evaluation, e.g. {'R@1': ..., 'MAP@R': ..., 'R-Precision': ...,
    'NMI': ..., 'holdout/R@1': ..., 'test_images': 1487}, on the main process; {} on the
    others. `test_images`, `query_images`, `holdout_images`: how many images were scored.

    network: the NetworkViews of a run (its `local_embed` and `prepare` are used);
    loaders: `.gallery`, `.query` and `.holdout` DataLoaders of this process's shards (the last
      two None where absent), as DataSet.loaders.make_loaders makes them;
    config: the run's flags (--data for the Ks, --nmi, --progress);
    dist: utils.distributed.Distributed; `seed`: k-means' seed for NMI; `final`: whether this is
      the last evaluation of a run (for --nmi final); `should_stop()`: asked before each batch.
    Raises ExtractionStopped (every process) when `should_stop` said so on any process, and
    NonFiniteEmbeddings."""
    def embed(loader):
        if loader is None:
            return None, None
        return embed_shards(network, loader, config, device, dist, should_stop)
    gallery, query, holdout = embed(loaders.gallery), embed(loaders.query), embed(loaders.holdout)
    if not dist.is_main:
        return {}
    metrics = split_metrics(*gallery, recall_ks_for(config.data), *query,
                            nmi=nmi_due(config.nmi, final), nmi_seed=seed)
    # the images actually scored (--skip_bad_images leaves unreadable ones out of their set)
    metrics['test_images'] = len(gallery[1])
    if query[0] is not None:
        metrics['query_images'] = len(query[1])
    if holdout[0] is not None:
        metrics.update(holdout_metrics(*holdout))
        metrics['holdout_images'] = len(holdout[1])
    return metrics


def holdout_metrics(emb, labels):
    """R@1, MAP@R and R-Precision of the holdout classes (each image queries all the others),
    as `holdout/R@1`, `holdout/MAP@R`, `holdout/R-Precision`."""
    scores = retrieval_metrics(emb, labels, ks=(1,))
    return {HOLDOUT_PREFIX + key: scores[key] for key in HOLDOUT_KEYS}


def embed_shards(network, loader, config, device, dist, should_stop=None):
    """(embeddings, labels) of a test set on `device`, every process's shard gathered on every
    process, in the data set's order."""
    try:
        emb, labels = extract_features(network.local_embed, loader, device,
                                       progress=config.progress and dist.is_main,
                                       desc='evaluate', prepare=network.prepare,
                                       should_stop=should_stop)
        stopped = False
    except ExtractionStopped:
        stopped = True
    if dist.any_true(stopped, device):
        raise ExtractionStopped
    if not dist.all_true(bool(emb.isfinite().all()), device):
        raise NonFiniteEmbeddings('non-finite embeddings in the evaluation')
    emb = dist.all_gather_varying(emb.to(device))
    labels = dist.all_gather_varying(labels.to(device))
    if dist.enabled:  # back to the data set's order (process r embedded r, r + world, ...)
        # k-means++ seeds by position: NMI then equals a single process's
        gathered = torch.cat([torch.arange(rank, len(emb), dist.world_size)
                              for rank in range(dist.world_size)]).to(emb.device)
        order = gathered.argsort()
        emb, labels = emb[order], labels[order]
    return emb, labels


def evaluation_loaders(dataset, config, device):
    """The gallery, query and holdout loaders of a whole data set for one process, as a
    training run makes them (the same pipeline, batch size and workers); for test.py."""
    return make_loaders(dataset, input_pipeline=config.input_pipeline, width=config.width,
                        origin_width=config.origin_width, ratio=config.ratio,
                        workers=config.nThreads, cuda=device.type == 'cuda',
                        train_batches=None, eval_batch_size=config.eval_batch_size)
