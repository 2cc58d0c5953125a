"""Tracking writers: a TensorBoard event file read back, W&B through a fake module, and the
one-line errors for a missing package."""
import sys
import types

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.errors import InputError
from utils.tracking import (TensorBoardWriter, WandbWriter, Writer, Writers, check_backends,
                            numeric_items, open_writer)

EPOCH_ROW = {'epoch': 3, 'iterations': 12, 'loss': 0.75, 'pos_sim': torch.tensor(0.5),
             'skipped': {'warmup': 4, 'zero_weights': 1}, 'seconds': 9.5,
             'R@1': 0.625, 'MAP@R': 0.25, 'note': 'text is not plotted', 'flag': True}
EVAL_ROW = {'epoch': 4, 'iteration': 6, 'per_epoch': 12, 'global_step': 42, 'R@1': 0.7}


def scalars_of(log_dir):
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)]
            for tag in events.Tags()['scalars']}


def test_numeric_items_flattens_and_filters():
    items = dict(numeric_items(EPOCH_ROW))
    assert items['skipped/warmup'] == 4.0 and items['pos_sim'] == 0.5
    assert 'note' not in items and 'flag' not in items
    assert dict(numeric_items({'x': float('nan')}))['x'] != 0  # NaN kept: a diverging run shows


def test_tensorboard_event_file_holds_r1_and_loss(tmp_path):
    writer = TensorBoardWriter(tmp_path / 'tb')
    writer.record(EPOCH_ROW, step=36)
    writer.record(EVAL_ROW)  # step from its global_step
    writer.scalars({'loss': torch.tensor(1.5), 'w_mean': 0.125}, step=37)
    writer.close()
    scalars = scalars_of(tmp_path / 'tb')
    assert scalars['R@1'] == [(36, 0.625), (42, pytest.approx(0.7))]
    assert scalars['loss'] == [(36, 0.75)]
    assert scalars['train/loss'] == [(37, 1.5)] and scalars['train/w_mean'] == [(37, 0.125)]
    assert scalars['skipped/warmup'] == [(36, 4.0)]
    assert 'epoch' not in scalars and 'global_step' not in scalars and 'note' not in scalars


def test_step_defaults_to_the_epoch_without_global_step(tmp_path):
    writer = TensorBoardWriter(tmp_path)
    writer.record({'epoch': 0, 'R@1': 0.5})
    writer.close()
    assert scalars_of(tmp_path)['R@1'] == [(0, 0.5)]
    with pytest.raises(ValueError, match='no step'):
        Writer().record({'R@1': 0.5})


def test_missing_tensorboard_is_one_input_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)  # import fails
    with pytest.raises(InputError, match='pip install tensorboard==2.21.0'):
        TensorBoardWriter(tmp_path)
    with pytest.raises(InputError, match='--tensorboard .*tb: the tensorboard package'):
        check_backends(tensorboard=str(tmp_path / 'tb'))


def test_check_backends_writes_nothing(tmp_path, fake_wandb):
    check_backends(tensorboard=str(tmp_path / 'tb'), wandb='mmsi', wandb_mode='offline')
    assert not (tmp_path / 'tb').exists() and not fake_wandb.runs
    with pytest.raises(InputError, match="--wandb_mode 'later'"):
        check_backends(wandb='mmsi', wandb_mode='later')


def test_missing_wandb_is_one_input_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'wandb', None)
    with pytest.raises(InputError, match=r'--wandb mmsi: .*pip install wandb'):
        WandbWriter('mmsi', tmp_path)
    with pytest.raises(InputError, match=r'--wandb mmsi: .*pip install wandb'):
        check_backends(wandb='mmsi')
    with pytest.raises(InputError, match="--wandb_mode 'sometimes'"):
        WandbWriter('mmsi', tmp_path, mode='sometimes')


class FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, values, step=None):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType('wandb')
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, 'wandb', module)
    return module


def test_wandb_writer_through_a_fake_module(tmp_path, fake_wandb):
    writer = WandbWriter('mmsi', tmp_path, mode='offline', name='cub_MS', config={'lr': 1e-5})
    writer.record(EPOCH_ROW, step=36)
    writer.scalars({'loss': 2.0}, step=37)
    writer.close()
    run = fake_wandb.runs[0]
    assert run.init_kwargs == dict(project='mmsi', dir=str(tmp_path), mode='offline',
                                   name='cub_MS', config={'lr': 1e-5})
    step, values = run.logged[0]
    assert step == 36 and values['R@1'] == 0.625 and values['loss'] == 0.75
    assert 'epoch' not in values and values['skipped/zero_weights'] == 1.0
    assert run.logged[1] == (37, {'train/loss': 2.0})
    assert run.finished


def test_open_writer_fans_out_or_does_nothing(tmp_path, fake_wandb):
    assert type(open_writer()) is Writer
    assert isinstance(open_writer(tensorboard=str(tmp_path / 'a')), TensorBoardWriter)
    both = open_writer(tensorboard=str(tmp_path / 'b'), wandb='mmsi', wandb_dir=str(tmp_path),
                       wandb_mode='disabled')
    assert isinstance(both, Writers)
    both.record({'epoch': 1, 'R@1': 0.5})
    both.close()
    assert scalars_of(tmp_path / 'b')['R@1'] == [(1, 0.5)]
    assert fake_wandb.runs[0].logged == [(1, {'R@1': 0.5})] and fake_wandb.runs[0].finished
