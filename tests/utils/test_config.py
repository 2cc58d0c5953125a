"""utils/config.py: one resolution of the flags into a final, read-only configuration."""
import re
import shutil

import pytest
import torch

import MMSI_train
from common.errors import InputError
from tiny_run import run_args
from utils.args import default_workers
from utils.build import build_run
from utils.config import Change, Config, parse_args, resolve


def test_the_configuration_is_read_only_and_replace_makes_a_copy():
    config = Config(lr=1e-5, loss='MS')
    with pytest.raises(AttributeError, match='final'):
        config.lr = 1.0
    with pytest.raises(AttributeError):
        del config.loss
    changed = config.replace(lr=2e-5)
    assert (config.lr, changed.lr, changed.loss) == (1e-5, 2e-5, 'MS')
    assert vars(changed) == {'lr': 2e-5, 'loss': 'MS'}  # what a checkpoint saves


def test_every_derived_value_is_resolved_from_the_flags_and_the_data(glyphs_root, tmp_path):
    flags = run_args(glyphs_root, tmp_path / 'run', mmsi=1)
    seed = flags.index('--seed')
    del flags[seed:seed + 2]
    config, checkpoint, splits, changes = resolve(flags)
    assert checkpoint is None and changes == ()
    assert config.meta_lr == config.lr == 1e-4
    assert (config.pair_weights, config.loss_params, config.ignored_loss_flags) == (
        'official', {'margin': 0.1}, {})
    assert isinstance(config.seed, int) and config.device == 'cpu'
    # the Glyphs subset has 6 training classes: warm-up until all but 2 are stored
    assert (config.dict_min_classes, config.dict_capacity) == (4, 6 * config.d_size)
    assert len({label for _, label in splits[0]}) == 6


def test_given_values_are_kept_and_the_flags_alone_need_no_data():
    config = parse_args(['--data', 'cub', '--data_root', '/nonexistent', '--meta_lr', '3e-4',
                         '--dict_min_classes', '7', '--loss', 'Triplet'])
    assert (config.meta_lr, config.dict_min_classes, config.dict_capacity) == (3e-4, 7, 0)
    assert config.pair_weights == 'gradient'  # auto: Triplet has no official weighted form


def test_a_bad_flag_is_refused_before_any_data_is_read():
    with pytest.raises(InputError, match='--num_instances 1'):
        resolve(['--data_root', '/nonexistent', '--num_instances', '1'])


def copy_of(finished_run, tmp_path):
    folder = tmp_path / 'run'
    shutil.copytree(finished_run, folder)
    return folder


def test_a_resumed_run_needs_its_checkpoint_file_only_until_the_flags_are_resolved(
        glyphs_root, finished_run, tmp_path):
    """resolve reads the --resume checkpoint and hands it on: spoiling the file afterwards (as
    a second read would find it) changes nothing, and the run continues to epoch 2."""
    folder = copy_of(finished_run, tmp_path)
    resume = folder / 'last.pth.tar'
    resolved = resolve(run_args(glyphs_root, folder, '--resume', str(resume), epochs=2))
    resume.write_bytes(b'not a checkpoint any more')
    run = build_run(resolved)
    assert MMSI_train.train(run) == 0
    assert 'Epoch 2 done' in (folder / 'log.txt').read_text()


def test_a_changed_flag_is_reported_and_one_given_as_saved_is_not(finished_run):
    resume = str(finished_run / 'last.pth.tar')
    _, checkpoint, _, changes = resolve(['--resume', resume, '--lr', '1e-3', '--margin', '0.1',
                                         '--nThreads', '0'],
                                        read_data=False)
    assert checkpoint['args']['lr'] == 1e-4
    # --margin 0.1 is the checkpoint's own value: not a change
    assert changes == (Change('lr', 1e-4, 1e-3),)


def test_flags_a_run_cannot_change_are_refused_each_named(finished_run):
    resume = str(finished_run / 'last.pth.tar')
    with pytest.raises(InputError, match=r'trained with --dim 512 --loss MS, this run has --dim '
                                         r'64 --loss Con; these cannot change within a run'):
        resolve(['--resume', resume, '--loss', 'Con', '--dim', '64'], read_data=False)


@pytest.mark.parametrize('flag, value, saved', [('--seed', '1', '0'), ('--MMSI', '1', '0'),
                                                ('--holdout_classes', '1', '0'),
                                                ('--pair_weights', 'gradient', 'official'),
                                                ('--mmsi_weights', 'shuffled', 'learned'),
                                                ('--weight_norm', 'mean', 'max')])
def test_resuming_with_a_changed_fixed_flag_is_refused(finished_run, flag, value, saved):
    resume = str(finished_run / 'last.pth.tar')
    with pytest.raises(InputError, match=rf'trained with {flag} {saved}, this run has {flag} '
                                         rf'{value}; these cannot change within a run:'):
        resolve(['--resume', resume, flag, value], read_data=False)


def test_on_resume_watch_only_flags_may_change_and_this_machines_are_not_inherited(
        finished_run, tmp_path):
    """The finished run was trained with --nThreads 0, --print_freq 1, --lr 1e-4."""
    resume = str(finished_run / 'last.pth.tar')
    config = resolve(['--resume', resume], read_data=False).config
    assert (config.lr, config.print_freq) == (1e-4, 1)  # the checkpoint's
    assert config.nThreads == default_workers()  # this machine's, not the checkpoint's 0
    config, _, _, changes = resolve(['--resume', resume, '--print_freq', '7', '--progress', '1',
                                     '--checkpoint_minutes', '0', '--save_dir',
                                     str(tmp_path / 'elsewhere'), '--nThreads', '0'],
                                    read_data=False)
    assert (config.print_freq, config.progress, config.checkpoint_minutes) == (7, True, 0.0)
    assert Change('print_freq', 1, 7) in changes  # logged as a change, not refused


def test_the_batch_flags_change_only_at_an_epoch_end(finished_run, tmp_path):
    resume = str(finished_run / 'last.pth.tar')
    assert resolve(['--resume', resume, '--batch_size', '9', '--nThreads', '0'],
                   read_data=False).config.batch_size == 9
    checkpoint = torch.load(resume, map_location='cpu', weights_only=False)
    checkpoint['iteration'] = 1  # stopped after the first batch of an epoch
    checkpoint.pop('checksum', None)  # edited: saved as one without a checksum (it loads)
    mid_epoch = str(tmp_path / 'mid_epoch.pth.tar')
    torch.save(checkpoint, mid_epoch)
    with pytest.raises(InputError, match=r'trained with --batch_size 6, this run has '
                                         r'--batch_size 9; these cannot change within a run '
                                         r'\(--batch_size and --num_instances: until the epoch '
                                         r'ends\)'):
        resolve(['--resume', mid_epoch, '--batch_size', '9'], read_data=False)


def test_an_explicit_loss_parameter_equal_to_its_effect_is_no_change(finished_run):
    """The finished run is MS with --margin 0.1; MS's alpha default is 40."""
    resume = str(finished_run / 'last.pth.tar')
    _, _, _, changes = resolve(['--resume', resume, '--alpha', '40', '--loss_param',
                                'base=0.5', '--nThreads', '0'], read_data=False)
    assert changes == ()
    with pytest.raises(InputError, match=r'trained with --loss_param alpha=40.0, this run has '
                                         r'--loss_param alpha=20.0; these cannot change'):
        resolve(['--resume', resume, '--alpha', '20'], read_data=False)


def test_refusals_print_values_as_a_user_types_them():
    assert str(Change('freeze_BN', True, False)) == '--freeze_BN 1 -> 0'
    assert str(Change('dict_min_classes', None, 7)) == '--dict_min_classes (unset) -> 7'
    assert str(Change('loss_parameters', {'margin': 0.5, 'k': 1}, {'margin': 0.2, 'k': 1})) == \
        '--loss_param margin=0.5 -> --loss_param margin=0.2'


@pytest.mark.parametrize('value, message', [
    ('temperature=abc', "temperature='abc': expected a finite number above 0"),
    ('temperature=', "temperature='': expected a finite number above 0"),
    ('temperature=True', "temperature='True': expected a finite number above 0"),
    ('temperature=-1', 'temperature=-1: expected a finite number above 0'),
    ('temperature=0', 'temperature=0: expected a finite number above 0'),
    ('temperature=inf', 'temperature=inf: expected a finite number above 0'),
    ('temperature=nan', 'temperature=nan: expected a finite number above 0')])
def test_a_bad_loss_parameter_is_refused_by_name(value, message):
    with pytest.raises(InputError, match=re.escape(f'SupCon parameter {message}')):
        parse_args(['--loss', 'SupCon', '--loss_param', value])


def test_a_repeated_loss_parameter_is_refused():
    with pytest.raises(InputError, match=r'--loss_param temperature is given 2 times '
                                         r'\(temperature=0.1, temperature=0.2\); give it once'):
        parse_args(['--loss', 'SupCon', '--loss_param', 'temperature=0.1',
                    '--loss_param', 'temperature=0.2'])


def test_loss_parameters_take_their_defaults_type():
    assert parse_args(['--loss', 'SupCon', '--loss_param', 'temperature=1']).loss_params == \
        {'temperature': 1.0}
