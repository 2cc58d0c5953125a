"""utils/build.py: a run assembled from its resolved configuration and nothing else."""
import os

import torch

import test as evaluate_script
from tiny_run import run_args
from utils.build import build_run
from utils.config import resolve


def build(glyphs_root, save_dir, *extra, mmsi=1):
    run = build_run(resolve(run_args(glyphs_root, save_dir, *extra, mmsi=mmsi)))
    run.log.close()
    return run


def test_an_mmsi_run_has_its_dictionary_validation_stream_and_optimizer(glyphs_root, tmp_path):
    save_dir = tmp_path / 'mmsi'
    run = build(glyphs_root, save_dir, '--base_lr_mult', '0.5', '--d_size', '3')
    assert run.dictionary.capacity == run.args.dict_capacity == 6 * 3
    assert run.loaders.validation is not None and run.step.__name__ == 'mmsi_step'
    rates = {group['name']: group['lr'] for group in run.optimizer.param_groups}
    assert rates == {'backbone': 0.5e-4, 'embedding': 1e-4}
    log = (save_dir / 'log.txt').read_text()
    assert 'warm-up until 4 classes' in log and 'capacity 18 rows' in log
    assert sorted(os.listdir(save_dir)) == ['log.txt']


def test_a_plain_run_has_no_dictionary_and_no_validation_stream(glyphs_root, tmp_path):
    run = build(glyphs_root, tmp_path / 'plain', mmsi=0)
    assert run.dictionary is None and run.loaders.validation is None
    assert run.step.__name__ == 'plain_step'
    assert run.iterations_per_epoch == 3  # 6 classes per epoch, 2 per batch of 6


def test_the_network_views_share_one_model(glyphs_root, tmp_path):
    run = build(glyphs_root, tmp_path / 'views', mmsi=0)
    assert run.network.local_embed.model is run.network.train_embed.model is run.model
    assert run.network.scaler is None


def without_checksum(finished_run, path):
    """The finished run's checkpoint as a version of the project without checksums saved it."""
    checkpoint = torch.load(finished_run / 'last.pth.tar', weights_only=False)
    del checkpoint['checksum']
    torch.save(checkpoint, path)
    return str(path)


def test_weights_without_a_checksum_load_with_a_note_in_the_log(glyphs_root, finished_run,
                                                                 tmp_path, capsys):
    older = without_checksum(finished_run, tmp_path / 'older.pth.tar')
    official = tmp_path / 'official.pth.tar'
    torch.save({'state_dict': torch.load(older, weights_only=False)['model'], 'epoch': 1},
               official)
    for flag, path in [('--resume', older), ('--pretrained', str(official))]:
        save_dir = tmp_path / flag.strip('-')
        build(glyphs_root, save_dir, flag, path, mmsi=0)
        assert (f'Note: {flag} {path} carries no checksum to verify (an official checkpoint, '
                f'or one saved before checkpoints carried one): loaded as it is'
                in (save_dir / 'log.txt').read_text())
    # test.py says so on its console
    capsys.readouterr()
    assert evaluate_script.main(['--resume', older, '--data_root', glyphs_root,
                                 '--nThreads', '0', '--progress', '0']) == 0
    assert f'Note: --resume {older} carries no checksum to verify' in capsys.readouterr().out


def test_a_checkpoint_of_this_project_loads_without_a_note(glyphs_root, finished_run, tmp_path):
    save_dir = tmp_path / 'resumed'
    build(glyphs_root, save_dir, '--resume', str(finished_run / 'last.pth.tar'), mmsi=0)
    assert 'checksum' not in (save_dir / 'log.txt').read_text()
