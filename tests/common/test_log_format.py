"""Numbers in the log: small statistics keep their digits; one formatter per kind of line."""
from common.log_format import format_recalls, format_skipped, format_stat, format_stats, recall_line


def test_format_stat_keeps_tiny_values_visible():
    assert format_stat(0.12345) == '0.1235'
    assert format_stat(0.0) == '0.0000'
    assert format_stat(3.2e-9) == '3.20e-09'
    assert format_stat(-4e-5) == '-4.00e-05'
    assert format_stat(float('nan')) == 'nan'


def test_format_recalls():
    assert format_recalls({'R@1': 0.5, 'MAP@R': 0.25}) == 'R@1 0.5000  MAP@R 0.2500'


def test_statistics_print_in_the_declared_order_then_alphabetically():
    stats = {'zeta': 1.0, 'w_mean': 0.5, 'loss': 2.0, 'alpha': 3.0, 'pos_sim': 0.25}
    assert format_stats(stats) == \
        'loss 2.0000  pos_sim 0.2500  w_mean 0.5000  alpha 3.0000  zeta 1.0000'


def test_skip_counts_are_sorted_or_none():
    assert format_skipped({'zero_weights': 1, 'warmup': 4}) == 'skipped warmup 4, zero_weights 1'
    assert format_skipped({}) == 'skipped none'


def test_recall_line_shows_recalls_then_map_at_r_and_r_precision_only():
    metrics = {'R-Precision': 0.25, 'eval_seconds': 3.0, 'R@1': 0.5, 'MAP@R': 0.125, 'R@2': 0.75}
    assert recall_line('epoch 3', metrics) == \
        'Recall epoch 3: R@1 0.5000  R@2 0.7500  MAP@R 0.1250  R-Precision 0.2500'
