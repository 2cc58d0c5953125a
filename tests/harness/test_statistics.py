"""harness/statistics.py: the choice on the held-out classes (--select, and the chosen-epoch
table without it) and the paired differences there, from hand-written metrics."""
import pytest
from scipy.stats import t

from harness.report import summarise
from harness_testing import write_trial


def test_select_picks_the_argmax_of_the_seed_mean_holdout_map_over_values_and_epochs(tmp_path):
    """Two learning rates x epochs 0-2 x 2 seeds per cell, hand-written: each cell is reported
    at its own argmax of the seed-mean holdout MAP@R, and Δ pairs each at its own choice."""
    holdout = {  # (mmsi, lr): seed -> holdout MAP@R at epochs 0, 1, 2
        (0, '1e-5'): {0: [0.10, 0.20, 0.25], 1: [0.10, 0.22, 0.27]},  # best: epoch 2 (0.26)
        (0, '3e-5'): {0: [0.10, 0.30, 0.20], 1: [0.10, 0.24, 0.21]},  # best: epoch 1 (0.27)
        (1, '1e-5'): {0: [0.10, 0.26, 0.21], 1: [0.10, 0.20, 0.31]},  # best: epoch 2 (0.26)
        (1, '3e-5'): {0: [0.10, 0.18, 0.19], 1: [0.10, 0.19, 0.20]}}
    r1 = {key: {seed: [0.5 + 0.01 * seed + 0.1 * e + (0.05 if key[1] == '3e-5' else 0)
                       for e in range(3)] for seed in (0, 1)} for key in holdout}
    for (mmsi, lr), seeds in holdout.items():
        for seed, values in seeds.items():
            write_trial(tmp_path, 'MS', mmsi, 'gradient' if mmsi else 'none', seed,
                        dict(enumerate(r1[mmsi, lr][seed])), vary={'lr': lr},
                        holdout_by_epoch=dict(enumerate(values)), select=['lr'])
    table = summarise(str(tmp_path))
    rows = {row['mmsi']: row for row in table}
    assert len(table) == 2 and 'lr' not in rows[0]
    assert (rows[0]['chosen_lr'], rows[0]['chosen_epoch']) == ('3e-5', 1)
    assert rows[0]['holdout_MAP@R'] == pytest.approx(0.27)
    assert (rows[1]['chosen_lr'], rows[1]['chosen_epoch']) == ('1e-5', 2)
    plain_r1 = [r1[0, '3e-5'][seed][1] for seed in (0, 1)]
    mmsi_r1 = [r1[1, '1e-5'][seed][2] for seed in (0, 1)]
    assert rows[0]['R@1_mean'] == pytest.approx(sum(plain_r1) / 2)
    assert rows[1]['R@1_mean'] == pytest.approx(sum(mmsi_r1) / 2)
    assert rows[1]['diff_R@1_mean'] == pytest.approx(
        sum(m - p for m, p in zip(mmsi_r1, plain_r1)) / 2)
    summary = (tmp_path / 'summary.md').read_text()
    assert 'Each cell is tuned: the values of lr and the epoch with the highest holdout MAP@R' \
        in summary and '| chosen lr | epoch | holdout MAP@R |' in summary
    # Every value tried, by epoch (the plateau check), and its curves.
    by_epoch = summary.split('Seed-mean holdout/MAP@R at each evaluation')[1]
    assert '| cell | ep 0 | ep 1 | ep 2 |' in by_epoch
    for (mmsi, lr), seeds in holdout.items():
        label = f'MS {"MMSI gradient" if mmsi else "plain"} lr={lr} (n=2)'
        means = ' | '.join(f'{(seeds[0][e] + seeds[1][e]) / 2:.4f}' for e in range(3))
        assert f'| {label} | {means} |' in by_epoch, by_epoch
    assert (tmp_path / 'holdout_curves.png').stat().st_size > 0


def test_without_select_the_best_epoch_is_chosen_on_the_holdout_when_there_is_one(tmp_path):
    for seed in (0, 1):
        write_trial(tmp_path, 'MS', 0, 'none', seed, {0: 0.5, 1: 0.9, 2: 0.6},
                    holdout_by_epoch={0: 0.1, 1: 0.2, 2: 0.3})
        # MMSI: the seed-mean holdout MAP@R is highest at epoch 1 (0.25 against 0.2)
        write_trial(tmp_path, 'MS', 1, 'gradient', seed, {0: 0.5, 1: 0.7 + 0.1 * seed, 2: 0.4},
                    holdout_by_epoch={0: 0.1, 1: 0.2 + 0.1 * seed, 2: 0.3 - 0.2 * seed})
    plain, mmsi = summarise(str(tmp_path))
    assert plain['best_epoch_mean'] == 2 and plain['best_R@1_mean'] == pytest.approx(0.6)
    summary = (tmp_path / 'summary.md').read_text()
    assert 'chosen on held-out training classes' in summary
    assert '| MS plain (n=2) | 0.1000 | 0.2000 | 0.3000 |' in summary
    assert (tmp_path / 'holdout_curves.png').exists()
    # The table at each cell's seed-mean choice: plain at epoch 2 (R@1 0.6), MMSI at epoch 1
    # (R@1 0.7 and 0.8), Δ R@1 = 0.15 with the t interval of (0.1, 0.2).
    chosen = summary.split('At the epoch chosen on the held-out classes')[1]
    half = t.ppf(0.975, 1) * 0.05  # s = 0.0707 of two values, / sqrt(2)
    assert '| MS | 0 | none | 2 | 0.3000 | 2 | 0.6000 ± 0.0000 |' in chosen, chosen
    assert f'| MS | 1 | gradient | 1 | 0.2500 | 2 | 0.7500 ± {half:.4f} |' in chosen, chosen
    assert f'| +0.1500 ± {half:.4f} |' in chosen, chosen
