"""trainer.py: the epoch loop, the plain step's optimizer update and the non-finite guard."""
from types import SimpleNamespace

import pytest
import torch

import trainer
from utils.tracking import Writer
from utils.distributed import Distributed


def linear_run(position=(1, 0)):
    model = torch.nn.Linear(3, 2)
    return SimpleNamespace(model=model, optimizer=torch.optim.Adam(model.parameters()),
                           network=SimpleNamespace(scaler=None), dist=Distributed(),
                           device=torch.device('cpu'), parameters_finite=None, last_step=0,
                           global_step=0, position=position)


def test_non_finite_parameters_are_read_at_the_next_synchronisation():
    """The flag of the parameters an optimizer step leaves is read with the next iteration's
    loss and gradient flags (one host read), and names the step that made them, also when
    steps were skipped in between."""
    run = linear_run()

    def iteration(poison=False):
        run.position = (1, run.global_step + 1)
        trainer.optimizer_step(run, run.model(torch.ones(4, 3)).sum())
        if poison:
            with torch.no_grad():
                run.model.weight[0, 0] = float('inf')
            run.parameters_finite = trainer.all_finite([run.model.weight], run.device)
        run.global_step += 1
    iteration()
    iteration(poison=True)  # iteration 2 (a stand-in for an overflowing step)
    run.global_step += 2  # two MMSI skips: no optimizer step
    weight = run.model.weight.detach().clone()
    with pytest.raises(trainer.NonFinite, match='after the optimizer step') as stop:
        iteration()  # iteration 5
    assert (stop.value.what, stop.value.epoch, stop.value.iteration) == ('parameters', 1, 2)
    assert torch.equal(run.model.weight, weight)  # the optimizer did not touch them


def test_check_parameters_names_the_step_that_made_them():
    run = linear_run(position=(3, 7))
    trainer.check_parameters(run)  # True before the first step
    run.parameters_finite, run.global_step, run.last_step = torch.tensor(False), 10, 9
    with pytest.raises(trainer.NonFinite) as stop:
        trainer.check_parameters(run)
    assert (stop.value.epoch, stop.value.iteration) == (3, 6)


def test_non_finite_loss_and_gradients_are_refused_before_the_step():
    run = linear_run(position=(2, 4))
    with pytest.raises(trainer.NonFinite, match='loss is nan') as stop:
        trainer.optimizer_step(run, run.model(torch.ones(1, 3)).sum() * float('nan'))
    assert (stop.value.what, stop.value.epoch, stop.value.iteration) == ('loss', 2, 4)
    bias = run.model.bias[0]
    with pytest.raises(trainer.NonFinite, match='its gradients are not'):  # d sqrt(x)/dx at 0
        trainer.optimizer_step(run, torch.sqrt(bias - bias.detach()))


def test_train_epoch_steps_every_batch_at_its_position_and_meters_the_statistics():
    seen = []

    def step(run, images, labels):
        seen.append((run.position, int(images)))
        if int(images) == 2:
            return {'skipped': 'warmup'}
        return {'loss': torch.tensor(float(images))}
    run = SimpleNamespace(step=step, model=torch.nn.Linear(1, 1), global_step=0,
                          args=SimpleNamespace(print_freq=100), position=(0, 0),
                          loaders=SimpleNamespace(train=[(1, 0), (2, 0), (3, 0)]),
                          train_batches=_Batches(3), log=SimpleNamespace(print=lambda line: None),
                          tracker=Writer())
    hooks = []
    meter = trainer.train_epoch(run, 4, lambda iteration, meter: hooks.append(iteration))
    assert seen == [((4, 1), 1), ((4, 2), 2), ((4, 3), 3)]
    assert hooks == [1, 2, 3] and run.global_step == 3
    assert meter.iterations == 3 and meter.skipped == {'warmup': 1}
    assert meter.means() == {'loss': 2.0}


class _Batches:
    def __init__(self, n):
        self.n = n

    def set_epoch(self, epoch, start):
        self.epoch = epoch

    def __len__(self):
        return self.n


def test_the_epoch_meter_survives_a_mid_epoch_checkpoint():
    meter = trainer.EpochMeter()
    meter.add({'loss': torch.tensor(1.0), 'pos_sim': torch.tensor(0.5)})
    meter.add({'skipped': 'zero_weights'})
    meter.add({'loss': torch.tensor(3.0)})
    restored = trainer.EpochMeter(meter.state())
    assert restored.means() == meter.means() == {'loss': 2.0, 'pos_sim': 0.5}
    assert (restored.iterations, restored.skipped) == (3, {'zero_weights': 1})
