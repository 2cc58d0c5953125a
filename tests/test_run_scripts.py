"""The Run scripts: every variable from the environment, official output layout, clear errors."""
import os
import subprocess

from utils.args import parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, **env):
    environment = dict(os.environ, PYTHON=os.path.join(ROOT, '.venv', 'bin', 'python')
                       if os.path.exists(os.path.join(ROOT, '.venv')) else 'python3', **env)
    return subprocess.run(['bash', os.path.join(ROOT, name)], env=environment,
                          capture_output=True, text=True, timeout=600)


def test_con_script_takes_its_variables_from_the_environment(glyphs_root, tmp_path):
    save_dir, results = tmp_path / 'ckps' / 'run', tmp_path / 'result'
    result = run_script(
        'Run_MMSI_Con.sh', MMSI='0', DATA='glyphs', DATA_ROOT=glyphs_root, LOSS='MS',
        MARGIN='0.1', LR='1e-4', WIDTH='64', BatchSize='6', NUM_INSTANCES='3', EPOCHS='1',
        SAVE_STEP='1', DIM='32', SAVE_DIR=str(save_dir), RESULT_ROOT=str(results),
        EXTRA_ARGS='--pretrained none --origin_width 72 --nThreads 0 --progress 0 --seed 0')
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = (save_dir / 'log.txt').read_text()
    for flag in ('--MMSI 0', '--data glyphs', '--loss MS', '--margin 0.1', '--lr 0.0001',
                 '--width 64', '--batch_size 6', '--num_instances 3', '--epochs 1', '--dim 32',
                 '--net BN-Inception', '--val_batch_size 10', '--d_size 5', '--alpha 40.0'):
        assert flag in log, flag
    name = 'BN-Inception-DIM-32-lr1e-4-ratio-0.16-BatchSize-6-MMSI0.txt'
    lines = (results / 'MS' / 'glyphs' / name).read_text().splitlines()
    assert [line.split(':')[0] for line in lines] == ['Recall epoch 0', 'Recall epoch 1']


def test_ms_and_sop_scripts_need_a_checkpoint_to_fine_tune(tmp_path):
    for script in ('Run_MMSI_MS.sh', 'Run_MMSI_SOP.sh'):
        for resume in ('', str(tmp_path / 'missing.pth.tar')):
            result = run_script(script, RESUME=resume)
            assert result.returncode == 2
            assert 'set RESUME to an existing checkpoint file' in result.stderr


def test_official_epoch_abbreviation_and_weight_decay_spelling():
    args = parse_args(['--epoch', '7', '--weight-decay', '1e-3'])
    assert args.epochs == 7 and args.weight_decay == 1e-3
    assert args.meta_lr == args.lr  # --meta_lr defaults to --lr


def test_sop_configuration_is_the_same_code_with_other_defaults():
    import trainer_MMSI
    import trainer_MMSI_SOP
    assert trainer_MMSI_SOP.step is trainer_MMSI.step
    args = parse_args([], **trainer_MMSI_SOP.SOP_DEFAULTS)
    assert (args.data, args.loss, args.dict_min_classes, args.eval_every) == \
        ('product', 'MS', 1000, 100)
