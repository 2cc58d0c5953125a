"""harness/grid.py: the cells of a grid, the trials planned for them (stage 1 included) and the
checks of their flags, against the data too, before anything starts."""
import json

import pytest

from common.errors import InputError
from harness.command_line import build_parser
from harness.grid import Cell, check_with_data, grid_cells, plan, trial_name
from tiny_inshop import make_inshop


def test_grid_cells_resolve_pair_weights_and_vary():
    cells = grid_cells(['MS', 'Triplet'], [0, 1], ['auto', 'official', 'gradient'],
                       [('val_batch_size', ['10', '40']), ('lr', ['1e-5'])],
                       vary_losses=['MS'])
    names = sorted(trial_name(cell, 0) for cell in cells)
    assert names == [
        'MS_mmsi0_none_seed0_lr1e-5',  # an MMSI-only axis does not multiply plain cells
        'MS_mmsi1_gradient_seed0_lr1e-5_val_batch_size10',
        'MS_mmsi1_gradient_seed0_lr1e-5_val_batch_size40',
        'MS_mmsi1_official_seed0_lr1e-5_val_batch_size10',
        'MS_mmsi1_official_seed0_lr1e-5_val_batch_size40',
        'Triplet_mmsi0_none_seed0', 'Triplet_mmsi1_gradient_seed0']  # auto = gradient


@pytest.mark.parametrize('start, pretrained, evaluated', [
    (['--data', 'cub'], None, 1),  # a real data set's default: its ImageNet weights
    (['--data', 'cub', '--pretrained', 'imagenet'], 'imagenet', 1),
    (['--data', 'cub', '--pretrained', 'w.pth'], 'w.pth', 1),
    (['--data', 'cub', '--pretrained', 'none'], 'none', 0),
    (['--data', 'glyphs', '--pretrained', 'none'], 'none', 0)])
def test_stage1_starts_from_the_common_weights_and_evaluates_a_pretrained_start(
        tmp_path, start, pretrained, evaluated):
    options = build_parser().parse_args(['--out', str(tmp_path), '--seeds', '0'])
    (stage1,), _ = plan(options, start + ['--lr', '1e-5'])
    assert (stage1.args.pretrained, stage1.args.eval_first) == (pretrained, evaluated)


def test_the_finetune_protocol_starts_every_cell_from_its_seeds_stage1(tmp_path):
    options = build_parser().parse_args(
        ['--out', str(tmp_path), '--losses', 'MS', 'Triplet', '--seeds', '3', '4',
         '--stage1_epochs', '5', '--stage1_lr', '2e-4'])
    stage1, trials = plan(options, ['--data', 'glyphs', '--lr', '1e-5', '--epochs', '6'])
    assert [trial.name for trial in stage1] == ['MS_seed3', 'MS_seed4']
    for trial in stage1:
        args = trial.args
        # Glyphs' default start (random weights), not evaluated
        assert (args.loss, args.MMSI, args.pretrained, args.lr, args.epochs, args.save_step,
                args.seed, args.eval_first) == ('MS', 0, None, 2e-4, 5, 5, trial.seed, 0)
    # auto is the official form for MS and the gradient form for Triplet
    expected_forms = {'MS_mmsi0_none': (0, 'official'), 'MS_mmsi1_official': (1, 'official'),
                      'Triplet_mmsi0_none': (0, 'gradient'),
                      'Triplet_mmsi1_gradient': (1, 'gradient')}
    assert sorted(trial.name for trial in trials) == sorted(
        f'{cell}_seed{seed}' for seed in (3, 4) for cell in expected_forms)
    for trial in trials:
        cell, seed = trial.name.rsplit('_seed', 1)
        assert (trial.args.loss, trial.args.MMSI, trial.args.pair_weights, trial.args.seed) == (
            cell.split('_')[0], *expected_forms[cell], int(seed))
        expected = str(tmp_path / 'stage1' / f'MS_seed{seed}' / 'ckp_ep5.pth.tar')
        assert trial.args.pretrained == expected
        assert (trial.args.lr, trial.args.epochs) == (1e-5, 6)
        # stage 1's last evaluation is the cell's epoch 0: not evaluated twice
        assert trial.args.eval_first == 0
        assert trial.describe()['start'] == f'stage1/MS_seed{seed}'
        # the descriptor the summary reads gives the cell back
        assert Cell.from_descriptor(json.loads(json.dumps(trial.describe()))) == trial.cell


def test_common_flags_are_checked_with_each_loss_of_the_grid(tmp_path, capsys):
    options = build_parser().parse_args(
        ['--out', str(tmp_path), '--losses', 'SupCon', '--seeds', '0', '--stage1_epochs', '2'])
    stage1, trials = plan(options, ['--data', 'glyphs', '--loss_param', 'temperature=0.2'])
    assert {trial.args.loss_params['temperature'] for trial in trials} == {0.2}
    # stage 1 is plain MS, which has no temperature: left out of its flags, with a note
    assert stage1[0].args.loss_params == {} and 'temperature' not in ' '.join(stage1[0].flags)
    assert 'note: stage 1 is plain MS, which has no temperature' in capsys.readouterr().err


def test_the_data_checks_of_a_real_data_set_grid_wait_for_no_weights_file(tmp_path):
    """On a real data set (the tiny In-Shop) the cells fine-tune from stage-1 checkpoints that
    do not exist before the grid runs, and the trainer's weights rule must not refuse them
    while the harness checks the flags against the data; a bad batch size still is."""
    make_inshop(tmp_path)
    common = ['--data', 'shop', '--data_root', str(tmp_path), '--batch_size', '4',
              '--num_instances', '2', '--val_batch_size', '2', '--epochs', '1']
    options = build_parser().parse_args(['--out', str(tmp_path / 'grid'), '--seeds', '0'])
    stage1, trials = plan(options, common)
    check_with_data(stage1 + trials)  # no error: no weights file is looked for
    stage1, trials = plan(options, common + ['--batch_size', '3'])
    with pytest.raises(InputError, match='--batch_size 3 must be a multiple'):
        check_with_data(stage1 + trials)
