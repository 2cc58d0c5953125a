"""The MMSI step (trainer_MMSI.py). One step checked arithmetically for every registered loss
and pair-weight form: the trainer's parameter update equals a direct meta_gradient ->
normalize_weights -> weighted loss -> Adam step on a copy of the model. Then, with the meta step
replaced by a stand-in that returns a chosen g and L_G: the closures the step hands it, the
weights it trains with, the fp16 validation-loss scale, the skips and the stop."""
import copy

import pytest
import torch

import losses
import trainer
import trainer_MMSI
from models.meta_layers import meta_gradient, normalize_weights
from tiny_network import META_LR, loss_closures, setup
from utils.distributed import Distributed
from utils.semi_global import SemiGlobalDictionary
from DataSet.loaders import Loaders
from utils.config import Config
from utils.training_run import NetworkViews, TrainingRun

CASES = [(name, pair_weights) for name in sorted(losses.RULES)
         for pair_weights in (['official', 'gradient'] if losses.has_official_weights(name)
                              else ['gradient'])]
LR = 0.05


def problem(seed=0):
    """The tiny network, a batch of 8 (4 classes), a validation batch and a dictionary."""
    net, x, y, x_val, y_val, mem_emb, mem_labels = setup(seed)
    dictionary = SemiGlobalDictionary(3, 5, 40)
    dictionary.push(mem_emb, mem_labels)
    return net, x, y, x_val, y_val, dictionary


def make_run(net, dictionary, val_batch, name='MS', pair_weights='official', amp='off',
             dict_min_classes=1):
    """A run of the MMSI step on the CPU with what the step reads of the flags; `amp` is only
    the flag (the network stays float64)."""
    return TrainingRun(
        args=Config(amp=amp, meta_lr=META_LR, meta_grad='jvp', seed=0,
                    dict_min_classes=dict_min_classes),
        dist=Distributed(), device=torch.device('cpu'), run_id='step', model=net,
        network=NetworkViews(train_embed=net, local_embed=net,
                             prepare=lambda images, device: images, scaler=None),
        optimizer=torch.optim.Adam(net.parameters(), lr=LR),
        criteria=losses.forms_of(name, pair_weights), step=trainer_MMSI.mmsi_step,
        dictionary=dictionary, loaders=Loaders(None, None, iter([val_batch])))


def adam_step(net, loss):
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def assert_same_parameters(net, reference_net):
    for (key, got), want in zip(net.state_dict().items(), reference_net.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10, msg=key)


@pytest.mark.parametrize('name, pair_weights', CASES)
def test_one_mmsi_step_equals_its_definition(name, pair_weights):
    net, x, y, x_val, y_val, dictionary = problem()
    reference_net, reference_dictionary = copy.deepcopy(net), copy.deepcopy(dictionary)
    run = make_run(net, dictionary, (x_val, y_val), name, pair_weights)
    stats = trainer_MMSI.mmsi_step(run, x, y)
    assert 'skipped' not in stats

    # the definition, step by step, on the copies
    criteria = losses.forms_of(name, pair_weights)
    reference_dictionary.push(reference_net(x).detach(), y)
    emb = reference_net(x)
    pos_mask, neg_mask = criteria.select(emb.detach(), y)
    train_loss, val_loss = loss_closures(criteria.weighted, criteria.semi_global, y, pos_mask,
                                         neg_mask, y_val, *reference_dictionary.tensors())
    grad, loss_g = meta_gradient(reference_net, x, x_val, train_loss, val_loss, META_LR,
                                 method='exact')
    weights = normalize_weights(grad)
    assert weights is not None and 0 < int((weights > 0).sum())
    loss = train_loss(emb, weights)
    adam_step(reference_net, loss)

    torch.testing.assert_close(stats['loss'], loss.detach(), rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(stats['val_loss'], loss_g, rtol=1e-10, atol=0)
    assert float(stats['w_max']) == 1.0
    assert_same_parameters(net, reference_net)
    moved = sum(float((a - b).abs().sum()) for a, b in zip(
        net.state_dict().values(), setup(0)[0].state_dict().values()))
    assert moved > 1e-4  # the step did update the model


def stand_in(returns, calls):
    """A meta_gradient that records what the step hands it, and what its two closures compute
    (train_loss at w = 1 on the embeddings it gets, val_loss on the validation embeddings),
    and returns `returns` = (g, L_G)."""
    def meta_gradient(model, images, val_images, train_loss, val_loss, meta_lr, method, emb):
        ones = torch.ones(len(images), len(images), dtype=emb.dtype)
        calls.append({'images': images, 'val_images': val_images, 'meta_lr': meta_lr,
                      'method': method, 'emb': emb, 'train_loss': train_loss(emb, ones).detach(),
                      'val_loss': val_loss(model(val_images)).detach()})
        return returns
    return meta_gradient


@pytest.mark.parametrize('amp, scale', [('off', 1.0), ('bf16', 1.0), ('fp16', 1024.0)])
def test_the_step_trains_with_relu_of_minus_g_over_its_max_and_unscales_fp16(amp, scale,
                                                                             monkeypatch):
    """The stand-in returns g and L_G as the real meta_gradient would for a validation loss
    times `scale`. The step's closures are L_W on the mined pairs and L_G against the
    dictionary times the scale (1024 under fp16 only); it logs L_G with the scale divided out
    and trains with the weights relu(-g) / max relu(-g)."""
    net, x, y, x_val, y_val, dictionary = problem()
    reference_net = copy.deepcopy(net)
    run = make_run(net, dictionary, (x_val, y_val), amp=amp)
    criteria = losses.forms_of('MS', 'official')
    emb = reference_net(x)
    pos_mask, neg_mask = criteria.select(emb.detach(), y)
    g = torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = torch.where(pos_mask | neg_mask, g, 0)  # zero outside the pairs, as a real one
    assert (g < 0).sum() >= 3 and (g > 0).any()
    calls = []
    monkeypatch.setattr(trainer_MMSI, 'meta_gradient', stand_in(
        (g * scale, torch.tensor(0.375, dtype=torch.float64) * scale), calls))
    stats = trainer_MMSI.mmsi_step(run, x, y)

    (call,) = calls
    assert call['images'] is x and call['val_images'] is x_val
    assert (call['meta_lr'], call['method']) == (META_LR, 'jvp')
    torch.testing.assert_close(call['emb'], emb, rtol=0, atol=0)
    ones = torch.ones(8, 8, dtype=torch.float64)
    assert torch.equal(call['train_loss'], criteria.weighted(emb, y, ones, pos_mask, neg_mask))
    mem_emb, mem_labels = dictionary.tensors()
    assert int((mem_labels == 4).sum()) == 2  # with the batch (class 4 is new) pushed
    expected_val_loss = criteria.semi_global(reference_net(x_val), y_val, mem_emb, mem_labels)
    assert expected_val_loss > 0
    assert torch.equal(call['val_loss'], expected_val_loss * scale)

    assert float(stats['val_loss']) == 0.375
    weights = torch.relu(-g) / torch.relu(-g).max()
    loss = criteria.weighted(emb, y, weights, pos_mask, neg_mask)
    torch.testing.assert_close(stats['loss'], loss.detach(), rtol=1e-12, atol=0)
    adam_step(reference_net, loss)
    assert_same_parameters(net, reference_net)
    assert float(stats['w_max']) == 1.0
    selected = pos_mask | neg_mask
    assert float(stats['w_pos_frac']) == pytest.approx(
        int(((weights > 0) & selected).sum()) / int(selected.sum()), rel=1e-12)


@pytest.mark.parametrize('case', ['warmup', 'zero_val_loss', 'zero_weights'])
def test_a_skipped_step_leaves_the_model_alone(case, monkeypatch):
    net, x, y, x_val, y_val, dictionary = problem()
    before = copy.deepcopy(net.state_dict())
    g = torch.full((8, 8), -1.0 if case == 'zero_val_loss' else 1.0, dtype=torch.float64)
    loss_g = torch.tensor(0.0 if case == 'zero_val_loss' else 0.5, dtype=torch.float64)
    calls = []
    monkeypatch.setattr(trainer_MMSI, 'meta_gradient', stand_in((g, loss_g), calls))
    run = make_run(net, dictionary, (x_val, y_val),
                   dict_min_classes=100 if case == 'warmup' else 1)
    assert trainer_MMSI.mmsi_step(run, x, y) == {'skipped': case}
    assert len(calls) == (0 if case == 'warmup' else 1)
    assert int((dictionary.tensors()[1] == 4).sum()) == 2  # the batch is stored in any case
    assert not run.optimizer.state
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_a_non_finite_validation_loss_stops_the_run(bad, monkeypatch):
    net, x, y, x_val, y_val, dictionary = problem()
    g = -torch.ones(8, 8, dtype=torch.float64)
    monkeypatch.setattr(trainer_MMSI, 'meta_gradient', stand_in(
        (g, torch.tensor(bad, dtype=torch.float64)), []))
    with pytest.raises(trainer.NonFinite, match=f'L_G is {bad}') as err:
        trainer_MMSI.mmsi_step(make_run(net, dictionary, (x_val, y_val)), x, y)
    assert err.value.what == 'validation loss'
