"""How a run prints its numbers: the statistics a step returns, the skip counts and the
retrieval metrics, each with one formatter (log.txt is plain text a human reads; utils/plot.py
reads the R@1 of a "Recall" line back)."""

# The order of a step's statistics in the log lines; any statistic a step returns that is not
# listed here follows, in alphabetical order.
STAT_ORDER = ('loss', 'pos_sim', 'neg_sim', 'val_loss', 'w_mean', 'w_max', 'w_pos_frac',
              'w_pos_pairs', 'w_neg_pairs')
# The evaluation metrics of a "Recall ..." line, in this order after the R@K.
RETRIEVAL_SUMMARY = ('MAP@R', 'R-Precision', 'NMI')


def format_stat(value):
    """Four decimals, or three significant digits for magnitudes below 1e-3 (pair weights of
    the MS negatives are around 1e-8), so that no statistic prints as a misleading 0.0000."""
    return f'{value:.2e}' if 0 < abs(value) < 1e-3 else f'{value:.4f}'


def format_stats(stats):
    """`loss 1.8600  pos_sim 0.5500 ...` for whatever statistics `stats` holds."""
    order = {key: index for index, key in enumerate(STAT_ORDER)}
    keys = sorted(stats, key=lambda key: (order.get(key, len(order)), key))
    return '  '.join(f'{key} {format_stat(stats[key])}' for key in keys)


def format_skipped(counts):
    """`skipped warmup 4, zero_weights 1`, or `skipped none`."""
    return 'skipped ' + (', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none')


def format_recalls(metrics):
    return '  '.join(f'{key} {value:.4f}' for key, value in metrics.items())


def recall_line(where, metrics):
    """`Recall epoch 3: R@1 0.6685  R@2 ...  MAP@R 0.1256  R-Precision 0.2301` (utils/plot.py
    reads R@1 back)."""
    shown = {k: v for k, v in metrics.items() if k.startswith('R@')}
    shown.update((k, metrics[k]) for k in RETRIEVAL_SUMMARY if k in metrics)
    return f'Recall {where}: {format_recalls(shown)}'


# The metrics on the held-out training classes (--holdout_classes) carry this prefix.
HOLDOUT_PREFIX = 'holdout/'


def holdout_line(where, metrics):
    """`Holdout epoch 3: R@1 0.5000  MAP@R 0.1000  R-Precision 0.2000`, or None when `metrics`
    has no holdout metrics."""
    shown = {key[len(HOLDOUT_PREFIX):]: value for key, value in metrics.items()
             if key.startswith(HOLDOUT_PREFIX)}
    return f'Holdout {where}: {format_recalls(shown)}' if shown else None
