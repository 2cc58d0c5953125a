"""utils/build.py: a run assembled from its resolved configuration and nothing else."""
import os

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
    # the data sets name skipped images in the run's log from their creation on
    assert run.loaders.train.dataset.bad_image_log == os.path.join(str(save_dir), 'log.txt')
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
