"""The report of a study folder: DIR/summary.csv, DIR/summary.md and DIR/curves.png (with
held-out classes also DIR/holdout_curves.png), from the trials' descriptors and metrics files
alone (`summarise`)."""
import csv
import io
import os

from common.errors import InputError
from harness.grid import Cell
from harness.messages import complain, say
from harness.results import (HOLDOUT_MAP, METRICS, collect, evaluations, missing_trials,
                             on_holdout, read_descriptors, trainers)
from harness.statistics import mean_ci, summary_rows, tune
from utils.plot import Series, plot_curves


def summarise(out):
    """Write DIR/summary.csv, DIR/summary.md and DIR/curves.png from the trials' descriptors
    and metrics files (with held-out classes also DIR/holdout_curves.png, a table of every
    cell's holdout MAP@R by epoch and, without --select, the cells at their chosen epochs);
    name each missing seed (summary.md and stdout). Returns the summary rows ([] when no trial
    is complete: nothing written). InputError for a damaged metrics file or descriptor, or a
    summary that cannot be written."""
    descriptors = read_descriptors(out)
    cells = collect(out, descriptors)
    missing = missing_trials(out, descriptors, cells)
    for line in missing:
        say(line)
    select = {flag for descriptor in descriptors for flag in descriptor.get('select') or ()}
    trained = trainers(out, descriptors, cells)
    if select:  # each cell reported at its chosen values and epoch
        reported, choices = tune(cells, select)
        curves = {choice.cell: cells[choice.cell] for choice in choices.values()}
    else:
        reported, choices, curves = cells, None, cells
    table, vary_flags = summary_rows(reported, choices)
    if not table:
        complain(f'no complete run under {out}/runs yet: no summary')
        return table
    holdout = select or all(on_holdout(evaluations(rows)) for trials in cells.values()
                            for rows in trials.values())
    markdown = markdown_table(table, vary_flags, trained, missing, holdout=bool(holdout),
                              select=sorted(select))
    if holdout and not select:  # the same cells at the epoch the held-out classes choose
        tuned, epochs = tune(cells, set())
        markdown += '\n' + '\n'.join(chosen_epoch_table(*summary_rows(tuned, epochs))) + '\n'
    if holdout:  # every candidate's curve on the held-out classes: where it levels off
        holdout_curves = curve_series(cells, HOLDOUT_MAP)
        markdown += '\n' + '\n'.join(epoch_table(holdout_curves, HOLDOUT_MAP)) + '\n'
    write_summary(out, table, markdown)
    # PlotError (an InputError) if unwritable
    plot_curves(curve_series(curves), os.path.join(out, 'curves.png'),
                title='R@1: mean over seeds, 95% band')
    if holdout:
        plot_curves(holdout_curves, os.path.join(out, 'holdout_curves.png'),
                    title=f'{HOLDOUT_MAP} of every cell: mean over seeds, 95% band',
                    ylabel=HOLDOUT_MAP)
    return table


def write_summary(out, table, markdown):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(table[0]), lineterminator='\n')
    writer.writeheader()
    for row in table:
        writer.writerow({k: ('' if v is None else v) for k, v in row.items()})
    try:
        for name, content in (('summary.csv', text.getvalue()), ('summary.md', markdown)):
            with open(os.path.join(out, name), 'w', encoding='utf-8') as f:
                f.write(content)
    except OSError as err:
        raise InputError(f'cannot write the summary: {err.filename}: {err.strerror}') from None


def format_ci(mean, half_width, signed=False):
    if mean is None:
        return '–'
    text = f'{mean:+.4f}' if signed else f'{mean:.4f}'
    return f'{text} ± {half_width:.4f}' if half_width is not None else f'{text} (no CI, n=1)'


def markdown_table(table, vary_flags, commands=(), missing=(), holdout=False, select=()):
    lines = ['# MMSI comparison', '']
    if commands:
        lines += ['Trained by:', ''] + [f'    {command}' for command in commands] + ['']
    if select:
        lines += [f'Each cell is tuned: the values of {", ".join(select)} and the epoch with the '
                  f'highest holdout MAP@R averaged over seeds (held-out training classes, never '
                  f'the test classes); the test metrics are reported there, as mean ± '
                  f'half-width of the 95% confidence interval (t distribution, n seeds); Δ is the '
                  f'paired difference to the same loss without MMSI, each at its own choice, '
                  f'seed by seed.', '']
    else:
        chosen_on = ('the highest holdout MAP@R (chosen on held-out training classes)'
                     if holdout else 'the highest R@1 (chosen on the test set, so optimistic)')
        lines += ['Mean ± half-width of the 95% confidence interval (t distribution, n seeds) at '
                  f'the last evaluation; "best" is the evaluation with {chosen_on}; Δ is the '
                  'paired difference to the same loss without MMSI, seed by seed.', '']
    lines += table_lines(table, vary_flags, select, chosen=bool(select), best=True)
    lines += recall_table(table, vary_flags)
    if missing:
        lines += ['', 'Missing runs (left out of the table):', ''] + [f'- {m}' for m in missing]
    return '\n'.join(lines) + '\n'


def chosen_epoch_table(table, vary_flags):
    """Markdown lines: each cell at the epoch with its highest seed-mean holdout MAP@R, with
    the paired Δ each at its own epoch (a study without --select)."""
    return (['At the epoch chosen on the held-out classes (the highest holdout MAP@R averaged '
             'over seeds, per cell); Δ pairs each cell with its plain cell, each at its own '
             'epoch:', '']
            + table_lines(table, vary_flags, chosen=True, best=False))


def table_lines(table, vary_flags, select=(), chosen=False, best=True):
    """Markdown header and rows of summary rows: the cell, the chosen values of `select` and
    (`chosen`) the chosen epoch with its holdout MAP@R, n, the metrics, (`best`) the best R@1
    and its epoch, and the paired Δ."""
    header = (['loss', 'MMSI', 'pair weights'] + vary_flags
              + [f'chosen {flag}' for flag in select]
              + (['epoch', 'holdout MAP@R'] if chosen else []) + ['n'] + list(METRICS)
              + (['best R@1 (epoch)'] if best else []) + [f'Δ {m}' for m in METRICS])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in table:
        fields = [row['loss'], str(row['mmsi']), row['pair_weights']]
        fields += [str(row[flag]) for flag in vary_flags]
        fields += [str(row.get(f'chosen_{flag}', '')) for flag in select]
        if chosen:
            fields += [str(row['chosen_epoch']), f'{row["holdout_MAP@R"]:.4f}']
        fields += [str(row['n'])]
        fields += [format_ci(row[f'{m}_mean'], row[f'{m}_ci95']) for m in METRICS]
        if best:
            fields.append(f'{format_ci(row["best_R@1_mean"], row["best_R@1_ci95"])} '
                          f'({row["best_epoch_mean"]:.1f})')
        fields += [format_ci(row[f'diff_{m}_mean'], row[f'diff_{m}_ci95'], signed=True)
                   for m in METRICS]
        lines.append('| ' + ' | '.join(fields) + ' |')
    return lines


def recall_table(table, vary_flags):
    """Markdown lines: MAP@R, then every Recall@K the runs have, for the same rows as the main
    table (the same choice), each with its paired Δ; nothing when the runs have only R@1."""
    ranked = ['MAP@R'] + sorted((key[:-len('_mean')] for key in table[0]
                                 if key.startswith('R@') and key.endswith('_mean')),
                                key=lambda name: int(name[2:]))
    if len(ranked) < 3:
        return []
    header = ['loss', 'MMSI', 'pair weights'] + vary_flags + ranked + [f'Δ {m}' for m in ranked]
    lines = ['', 'MAP@R and Recall@K of the same rows, with the paired Δ:', '',
             '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in table:
        fields = [row['loss'], str(row['mmsi']), row['pair_weights']]
        fields += [str(row[flag]) for flag in vary_flags]
        fields += [format_ci(row[f'{m}_mean'], row[f'{m}_ci95']) for m in ranked]
        fields += [format_ci(row[f'diff_{m}_mean'], row[f'diff_{m}_ci95'], signed=True)
                   for m in ranked]
        lines.append('| ' + ' | '.join(fields) + ' |')
    return lines


def curve_series(cells, metric='R@1'):
    """Per cell, its mean `metric` at each epoch every trial of it evaluated, with the
    half-width of the 95% interval when it has several trials (utils.plot.Series)."""
    series = []
    for cell in sorted(cells, key=Cell.sort_key):
        per_trial = [{row['epoch']: row[metric] for row in evaluations(rows) if metric in row}
                     for rows in cells[cell].values()]
        epochs = sorted(set.intersection(*(set(points) for points in per_trial)))
        stats = [mean_ci([points[epoch] for points in per_trial]) for epoch in epochs]
        series.append(Series(f'{cell.label()} (n={len(per_trial)})', epochs,
                             [mean for mean, _ in stats],
                             [half for _, half in stats] if len(per_trial) > 1 else None))
    return series


def epoch_table(series, metric):
    """Markdown lines: each curve's seed-mean `metric` at every epoch, one row per cell (is
    it still rising at the last epoch, or has it levelled off?)."""
    epochs = sorted({epoch for curve in series for epoch in curve.x})
    lines = [f'Seed-mean {metric} at each evaluation (every cell, every value tried):', '',
             '| cell | ' + ' | '.join(f'ep {epoch}' for epoch in epochs) + ' |',
             '|---|' + '---|' * len(epochs)]
    for curve in series:
        values = dict(zip(curve.x, curve.y))
        lines.append(f'| {curve.label} | ' + ' | '.join(
            f'{values[epoch]:.4f}' if epoch in values else '' for epoch in epochs) + ' |')
    return lines
