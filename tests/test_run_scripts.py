"""The Run scripts: every variable from the environment, official output layout, clear errors."""
import os
import signal
import subprocess
import time

import pytest

from utils.config import parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, **env):
    python = (os.path.join(ROOT, '.venv', 'bin', 'python')
              if os.path.exists(os.path.join(ROOT, '.venv')) else 'python3')
    environment = {**os.environ, 'PYTHON': python, **env}
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
    import trainer_MMSI_SOP
    args = parse_args([], **trainer_MMSI_SOP.SOP_DEFAULTS)
    assert (args.data, args.loss, args.dict_min_classes, args.eval_every) == \
        ('product', 'MS', 1000, 100)


def launcher_command(tmp_path, **env):
    """The command line a Run script launches, captured by a stand-in for python."""
    stub = tmp_path / 'python'
    stub.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/argv"\n')
    stub.chmod(0o755)
    result = run_script('Run_MMSI_Con.sh', SAVE_DIR=str(tmp_path / 'run'),
                        RESULT_ROOT=str(tmp_path / 'result'), **env, PYTHON=str(stub))
    return result, (tmp_path / 'argv').read_text().split() if result.returncode == 0 else None


def test_nproc_and_nnodes_launch_through_torchrun(tmp_path):
    _, argv = launcher_command(tmp_path)
    assert argv[0] == 'MMSI_train.py' and '--MMSI' in argv
    _, argv = launcher_command(tmp_path, NPROC='4')
    assert argv[:6] == ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '4',
                        'MMSI_train.py']
    _, argv = launcher_command(tmp_path, NPROC='8', NNODES='2', NODE_RANK='1', MASTER_ADDR='n0')
    assert argv[:13] == ['-m', 'torch.distributed.run', '--nnodes', '2', '--node_rank', '1',
                         '--master_addr', 'n0', '--master_port', '29500', '--nproc_per_node', '8',
                         'MMSI_train.py']
    result, _ = launcher_command(tmp_path, NNODES='2')
    assert result.returncode != 0 and 'set MASTER_ADDR' in result.stderr


def test_auto_resume_continues_whatever_the_save_folder_holds(tmp_path):
    _, argv = launcher_command(tmp_path, AUTO_RESUME='1')
    assert argv[-2:] == ['--resume', 'auto']
    _, argv = launcher_command(tmp_path, RESUME='auto')
    assert argv[argv.index('--resume') + 1] == 'auto'
    _, argv = launcher_command(tmp_path)
    assert '--resume' not in argv


@pytest.mark.parametrize('flag, value', [
    ('--batch_size', '0'), ('--num_instances', '0'), ('--val_batch_size', '0'),
    ('--save_step', '0'), ('--print_freq', '0'), ('--eval_batch_size', '0'), ('--lr', '-1e-4'),
    ('--lr', 'nan'), ('--weight_decay', '-1'), ('--seed', '-1'), ('--dim', '-5'),
    ('--nThreads', '-1'), ('--ratio', '5'), ('--ratio', '0'), ('--margin', 'nan'),
    ('--epochs', 'ten'), ('--meta_lr', '-1'), ('--base_lr_mult', '-1'), ('--eval_every', '-1')])
def test_out_of_range_flag_values_are_refused_by_name(flag, value, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args([f'{flag}={value}'])
    assert stop.value.code == 2
    assert f'argument {flag}' in capsys.readouterr().err.replace('--weight-decay/', '')


@pytest.mark.parametrize('variable', ['NPROC', 'NNODES'])
def test_a_non_numeric_process_count_is_an_error(tmp_path, variable):
    result, _ = launcher_command(tmp_path, **{variable: 'four'})
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {variable} must be a positive integer, got 'four'"
    assert not (tmp_path / 'argv').exists()  # nothing was launched


def test_sigterm_to_the_group_lets_the_training_save_and_the_script_copy_the_results(tmp_path):
    """A stand-in for python that, like MMSI_train.py, exits with 143 on SIGTERM."""
    stub = tmp_path / 'python'
    stub.write_text('#!/bin/bash\n'
                    'while [ $# -gt 0 ]; do [ "$1" = --save_dir ] && dir=$2; shift; done\n'
                    'trap \'echo "Recall epoch 0: R@1 0.5" > "$dir/log.txt"; exit 143\' TERM\n'
                    'mkdir -p "$dir" && touch "$dir/started"\n'
                    'while true; do sleep 0.1; done\n')
    stub.chmod(0o755)
    save_dir, results = tmp_path / 'run', tmp_path / 'result'
    environment = {**os.environ, 'PYTHON': str(stub), 'SAVE_DIR': str(save_dir),
                   'RESULT_ROOT': str(results)}
    script = subprocess.Popen(['bash', os.path.join(ROOT, 'Run_MMSI_Con.sh')], env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    deadline = time.time() + 60
    while not (save_dir / 'started').exists():
        assert script.poll() is None and time.time() < deadline, script.communicate()[0]
        time.sleep(0.05)
    os.killpg(script.pid, signal.SIGTERM)
    output, _ = script.communicate(timeout=60)
    assert script.returncode == 128 + signal.SIGTERM, output
    assert [p.read_text() for p in results.rglob('*.txt')] == ['Recall epoch 0: R@1 0.5\n']


@pytest.mark.parametrize('usable, workers', [(range(3), 3), (range(64), 16)])
def test_loader_workers_default_to_the_usable_cpus_at_most_16(monkeypatch, usable, workers):
    """The CPUs this process may use (a batch system's cgroup), not the machine's count."""
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(usable))
    monkeypatch.setattr(os, 'cpu_count', lambda: 128)
    assert parse_args([]).nThreads == workers


def test_the_regimes_study_runs_its_parts_with_their_settings(tmp_path):
    """benchmarks/regimes_study.sh with `echo` as Python: the harness commands it would run
    (nothing is written)."""
    def study(**env):
        environment = {key: value for key, value in os.environ.items() if key != 'OUT'}
        return subprocess.run(['bash', os.path.join(ROOT, 'benchmarks', 'regimes_study.sh')],
                              env={**environment, 'PYTHON': 'echo', **env},
                              capture_output=True, text=True, timeout=60)

    def commands(**env):
        result = study(**env)
        assert result.returncode == 0, result.stderr
        return [line for line in result.stdout.splitlines() if line.startswith('compare.py')]

    a, b, c = commands()
    for command in (a, b, c):
        assert '--seeds 0 1 2' in command and '--keep_checkpoints last' in command
        assert '--losses MS --mmsi 0 1 --pair_weights gradient' in command
        # every part starts from a stage 1 long enough for plain MS to near its plateau
        assert '--stage1_lr 3e-4' in command and '--jobs 3 ' in command
    assert '--out compare_output/regimes/a_holdout_lr' in a
    assert '--select lr=1e-5,3e-5,1e-4,3e-4' in a and '--stage1_epochs 150 ' in a
    assert '--epochs 12 --save_step 3' in a
    assert '--holdout_classes 20' in a and '--label_noise' not in a
    assert '--data glyphs_many' in b and '--holdout_classes 200' in b
    assert '--select lr=3e-5,1e-4' in b and '--stage1_epochs 48 ' in b
    assert '--epochs 2 --save_step 1' in b
    assert '--label_noise 0.3' in c and '--select lr=3e-5,1e-4' in c
    assert '--stage1_epochs 150 ' in c and '--holdout_classes 20' in c
    unknown = study(PARTS='a60')  # the old plateau checks are gone
    assert unknown.returncode == 2 and "unknown part 'a60'" in unknown.stderr
    quick = commands(QUICK='1', PARTS='b', OFFICIAL='1', OUT=str(tmp_path))
    assert len(quick) == 1 and '--seeds 0 1 ' in quick[0] and '--quick' not in quick[0]
    assert '--stage1_epochs 1 ' in quick[0] and '--epochs 1 ' in quick[0]
    # QUICK's b trains on 100 of GlyphsMany's classes, MMSI updating after 50
    assert quick[0].endswith('--holdout_classes 1157 --dict_min_classes 50')
    assert '--pair_weights official gradient' in quick[0] and '--select lr=3e-4 ' in quick[0]
    assert f'--out {tmp_path}/b_many_classes' in quick[0]


def study_commands(script, **env):
    """The harness commands `benchmarks/<script>` would run, with `echo` as Python."""
    environment = {key: value for key, value in os.environ.items() if key != 'OUT'}
    result = subprocess.run(['bash', os.path.join(ROOT, 'benchmarks', script)],
                            env={**environment, 'PYTHON': 'echo', **env},
                            capture_output=True, text=True, timeout=60)
    return result, [line for line in result.stdout.splitlines() if line.startswith('compare.py')]


def test_the_real_study_runs_its_two_protocols_on_the_folder_it_is_given(tmp_path):
    result, (r1, r2) = study_commands('real_study.sh', DATA_ROOT=str(tmp_path))
    assert result.returncode == 0, result.stderr
    for command in (r1, r2):
        assert f'--data cub --data_root {tmp_path} ' in command
        assert '--pretrained imagenet' in command and '--net EfficientNetLite0' in command
        assert '--holdout_classes 5' in command and '--seeds 0 1 2 ' in command
        assert '--width 96 ' in command
    assert '--losses MS --mmsi 0 1 --pair_weights gradient official' in r1
    assert '--protocol finetune --stage1_epochs 100 ' in r1 and '--epochs 10 --save_step 5' in r1
    assert '--epochs 40 --save_step 10' in r2 and '--select lr=3e-5,1e-4,3e-4 ' in r2
    assert '--select lr=1e-5,3e-5,1e-4 ' in r1
    assert '--losses Con --mmsi 0 1 --pair_weights auto' in r2 and '--protocol scratch' in r2
    assert r2.endswith('--margin 0.8')
    unknown, _ = study_commands('real_study.sh', PARTS='r3')
    assert unknown.returncode == 2 and "unknown part 'r3'" in unknown.stderr


def test_the_controls_study_runs_the_five_mmsi_cells_of_the_issue_in_one_folder_per_part(
        tmp_path):
    # nothing to link in, nothing written into the repository
    result, (glyphs, glyphs_mean, real, real_mean) = study_commands(
        'controls_study.sh', OUT=str(tmp_path / 'out'), R1_DIR=str(tmp_path / 'no_r1'))
    assert result.returncode == 0, result.stderr
    for command in (glyphs, glyphs_mean, real, real_mean):
        assert '--losses MS --mmsi 0 1 --pair_weights gradient' in command
        assert '--seeds 0 1 2 ' in command
    for with_max, with_mean in ((glyphs, glyphs_mean), (real, real_mean)):
        assert ('--vary mmsi_weights=learned,shuffled,kind_mean --vary weight_norm=max '
                in with_max)
        assert '--vary mmsi_weights=learned,shuffled --vary weight_norm=mean ' in with_mean
        out = lambda command: command.split('--out ')[1].split()[0]
        assert out(with_max) == out(with_mean)  # the plain cells and the stage 1 are shared
        assert with_max.split(' -- ')[1] == with_mean.split(' -- ')[1]
    assert '--data glyphs' in glyphs and '--stage1_epochs 150 --stage1_lr 3e-4' in glyphs
    assert '--select lr=3e-5,1e-4' in glyphs and '--holdout_classes 20' in glyphs
    assert '--epochs 6 --save_step 3' in glyphs
    assert '--data cub' in real and '--net EfficientNetLite0 --holdout_classes 5' in real
    # the real part is real_study.sh r1 at its own settings (so that r1's runs can be reused)
    _, (r1, _) = study_commands('real_study.sh')
    setting = '--stage1_epochs 100 --stage1_lr 3e-5 '
    assert setting in real and setting in r1 and '--select lr=1e-5,3e-5 ' in real
    after_dash = lambda command: command.split(' -- ', 1)[1]
    assert after_dash(real) == after_dash(r1)


def test_the_controls_study_links_in_r1s_stage1_and_the_plain_cells_it_tunes_over(tmp_path):
    r1 = tmp_path / 'r1'
    (r1 / 'stage1' / 'MS_seed0').mkdir(parents=True)
    (r1 / 'stage1' / 'MS_seed0' / 'last.pth.tar').write_text('stage 1')
    for name in ('MS_mmsi0_none_seed0_lr1e-5', 'MS_mmsi0_none_seed0_lr1e-4',
                 'MS_mmsi1_gradient_seed0_lr1e-5'):
        (r1 / 'runs' / name).mkdir(parents=True)
        (r1 / 'runs' / f'{name}.cell.json').write_text('{}')
    out = tmp_path / 'out'
    result, _ = study_commands('controls_study.sh', PARTS='r', R1_DIR=str(r1), OUT=str(out),
                               REAL_LRS='1e-5,3e-5')
    assert result.returncode == 0, result.stderr
    part = out / 'r_cub_efficientnet'
    assert (part / 'stage1' / 'MS_seed0' / 'last.pth.tar').read_text() == 'stage 1'
    assert sorted(os.listdir(part / 'runs')) == ['MS_mmsi0_none_seed0_lr1e-5',
                                                 'MS_mmsi0_none_seed0_lr1e-5.cell.json']
    again, _ = study_commands('controls_study.sh', PARTS='r', R1_DIR=str(r1), OUT=str(out))
    assert again.returncode == 0 and 'linked in' not in again.stdout  # once only
