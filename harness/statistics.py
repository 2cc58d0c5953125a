"""The summary's statistics: means with t confidence intervals over seeds, the paired
differences to the plain cell, and the choice of values and epoch on the held-out classes
(--select, or the chosen-epoch table)."""
import math
from statistics import stdev  # the standard library's (an absolute import)
from typing import NamedTuple

from harness.grid import Cell
from harness.results import HOLDOUT_MAP, METRICS, best_evaluation, evaluations, last_evaluation
from utils.args import flags_with


class Choice(NamedTuple):
    """What was chosen for one cell on the held-out classes: the cell of the chosen values, the
    chosen epoch, and the seed-mean holdout MAP@R there."""
    cell: Cell
    epoch: int
    holdout: float


def tuned_cell(cell, select):
    """The cell without its --select values: the cell the choice is made for."""
    return cell._replace(vary=tuple((flag, value) for flag, value in cell.vary
                                    if flag not in select))


def choose(candidates):
    """The Choice among `candidates` ({Cell: {seed: rows}}, one per combination of --select
    values) and their epochs with the highest holdout MAP@R averaged over seeds (epochs every
    seed evaluated; the first in cell, then epoch order, of equals). None when no candidate has
    holdout metrics."""
    best = None
    for cell in sorted(candidates):
        per_seed = [{row['epoch']: row for row in evaluations(rows)}
                    for rows in candidates[cell].values()]
        for epoch in sorted(set.intersection(*(set(rows) for rows in per_seed))):
            scores = [rows[epoch].get(HOLDOUT_MAP) for rows in per_seed]
            if None in scores:
                continue
            mean = sum(scores) / len(scores)
            if best is None or mean > best.holdout:
                best = Choice(cell, epoch, mean)
    return best


def tune(cells, select):
    """({tuned cell: {seed: [the row at the chosen epoch]}}, {tuned cell: Choice}): each cell
    at the --select values and epoch chosen on the held-out classes."""
    groups = {}
    for cell, trials in cells.items():
        groups.setdefault(tuned_cell(cell, select), {})[cell] = trials
    chosen, choices = {}, {}
    for group, candidates in groups.items():
        choice = choose(candidates)
        if choice is None:
            continue
        choices[group] = choice
        chosen[group] = {seed: [row for row in evaluations(rows) if row['epoch'] == choice.epoch]
                         for seed, rows in candidates[choice.cell].items()}
    return chosen, choices


def t_quantile(n):
    """t(0.975, n - 1), the 95% two-sided quantile of Student's t."""
    from scipy.stats import t
    return float(t.ppf(0.975, n - 1))


def mean_ci(values):
    """(mean, half-width of the 95% interval mean +- t(0.975, n-1) s / sqrt(n)); the
    half-width is None for n = 1 (no interval from one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, t_quantile(n) * stdev(values) / math.sqrt(n)


def recall_metrics(cells):
    """The Recall@K names every evaluation row of `cells` has ('R@1', 'R@2', ...: the data
    set's Ks), in order of K."""
    names = None
    for trials in cells.values():
        for rows in trials.values():
            for row in evaluations(rows):
                present = {key for key in row if key.startswith('R@')}
                names = present if names is None else names & present
    return sorted(names or (), key=lambda name: int(name[2:]))


def summary_rows(cells, choices=None):
    """One dict per cell: identity, n, and per metric the mean and CI half-width at the last
    evaluation, at the best evaluation, and of the paired difference to the plain cell (every
    Recall@K the runs have, `recall_metrics`, at the last evaluation and paired). With
    `choices` (--select: `tune`), the cells' rows are those at their chosen values and epoch,
    and each row also names the chosen values, the epoch and its holdout MAP@R."""
    mmsi_flags = flags_with('mmsi_only')
    vary_flags = sorted({flag for cell in cells for flag, _ in cell.vary})
    select_flags = sorted({flag for choice in (choices or {}).values()
                           for flag, _ in choice.cell.vary} - set(vary_flags))
    ranked = list(METRICS) + [name for name in recall_metrics(cells) if name not in METRICS]
    table = []
    for cell in sorted(cells, key=Cell.sort_key):
        trials = cells[cell]
        seeds = sorted(trials)
        row = {'loss': cell.loss, 'mmsi': cell.mmsi, 'pair_weights': cell.pair_weights}
        row.update({flag: dict(cell.vary).get(flag, '') for flag in vary_flags})
        if choices is not None:
            chosen = dict(choices[cell].cell.vary)
            row.update({f'chosen_{flag}': chosen.get(flag, '') for flag in select_flags})
            row['chosen_epoch'], row['holdout_MAP@R'] = choices[cell].epoch, choices[cell].holdout
        row['n'] = len(seeds)
        last = {seed: last_evaluation(trials[seed]) for seed in seeds}
        best = {seed: best_evaluation(trials[seed]) for seed in seeds}
        for metric in ranked:
            row[f'{metric}_mean'], row[f'{metric}_ci95'] = mean_ci([last[s][metric] for s in seeds])
        for metric in METRICS:
            row[f'best_{metric}_mean'], row[f'best_{metric}_ci95'] = mean_ci(
                [best[s][metric] for s in seeds])
        row['best_epoch_mean'] = sum(best[s]['epoch'] for s in seeds) / len(seeds)
        partner = cells.get(cell.plain_partner(mmsi_flags)) if cell.mmsi else None
        paired = sorted(set(seeds) & set(partner)) if partner else []
        row['n_paired'] = len(paired)
        for metric in ranked:
            if paired:
                differences = [last[s][metric] - last_evaluation(partner[s])[metric]
                               for s in paired]
                row[f'diff_{metric}_mean'], row[f'diff_{metric}_ci95'] = mean_ci(differences)
            else:
                row[f'diff_{metric}_mean'] = row[f'diff_{metric}_ci95'] = None
        table.append(row)
    return table, vary_flags
