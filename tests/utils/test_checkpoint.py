"""utils/checkpoint.py: a checkpoint refuses non-finite parameters by itself, and restoring one
puts the run where it stopped."""
import os
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import trainer
from utils.checkpoint import (FORMAT, ResumePoint, restore_training_state, rng_states,
                              save_checkpoint, set_rng_states)
from utils.config import Config
from utils.distributed import Distributed


def tiny_run(save_dir, parameters_finite=None):
    model = torch.nn.Linear(2, 2)
    return SimpleNamespace(
        args=Config(save_dir=str(save_dir), resume=None), dist=Distributed(), run_id='abc',
        model=model, optimizer=torch.optim.Adam(model.parameters()), dictionary=None,
        log=SimpleNamespace(history=[{'epoch': 0}]), global_step=7, val_consumed=0, seed=3,
        device=torch.device('cpu'), parameters_finite=parameters_finite, last_step=7,
        position=(2, 3), last_checkpoint_time=0.0, resume_point=ResumePoint())


def test_a_checkpoint_of_non_finite_parameters_is_refused_and_nothing_is_written(tmp_path):
    run = tiny_run(tmp_path, parameters_finite=torch.tensor(False))
    with pytest.raises(trainer.NonFinite) as stop:
        save_checkpoint(run, 2, 3)
    assert stop.value.what == 'parameters' and (stop.value.epoch, stop.value.iteration) == (2, 3)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('iteration, resume_point', [(0, (3, 0)), (3, (2, 3))])
def test_restoring_puts_the_run_where_it_stopped(tmp_path, iteration, resume_point):
    run = tiny_run(tmp_path)
    path = save_checkpoint(run, 2, iteration, meter=trainer.EpochMeter() if iteration else None)
    checkpoint = torch.load(path, weights_only=False)
    assert (checkpoint['format'], checkpoint['run_id'], checkpoint['seed']) == (FORMAT, 'abc', 3)
    assert checkpoint['args'] == {'save_dir': str(tmp_path), 'resume': None}
    restored = tiny_run(tmp_path)
    restored.global_step = 0
    restore_training_state(restored, checkpoint)
    assert restored.resume_point[:2] == resume_point
    assert (restored.global_step, restored.position) == (7, (2, iteration))


def test_an_official_checkpoint_gives_its_epoch_counter_only(tmp_path):
    run = tiny_run(tmp_path)
    restore_training_state(run, {'state_dict': {}, 'epoch': 5})
    assert run.resume_point == ResumePoint(6) and run.global_step == 7


def test_random_states_round_trip():
    states = rng_states()
    draws = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_states(states)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == draws
