"""The MMSI step (trainer_MMSI.py). One step checked arithmetically for every registered loss
and pair-weight form: the trainer's parameter update equals a direct meta_gradient ->
normalize_weights -> weighted loss -> Adam step on a copy of the model. Then, with the meta step
replaced by a stand-in that returns a chosen g and L_G: the closures the step hands it, the
weights it trains with, the fp16 validation-loss scale, the skips and the stop."""
import copy
import json
import os

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
             dict_min_classes=1, **flags):
    """A run of the MMSI step on the CPU with what the step reads of the flags; `amp` is only
    the flag (the network stays float64). `flags`: meta_grad, mmsi_weights, weight_norm."""
    flags = {'meta_grad': 'jvp', 'mmsi_weights': 'learned', 'weight_norm': 'max', **flags}
    return TrainingRun(
        args=Config(amp=amp, meta_lr=META_LR, seed=0, dict_min_classes=dict_min_classes,
                    **flags),
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


# ---- --mmsi_weights and --weight_norm (docs/design.md, "Controls of the pair weights") ----

RECORDED = os.path.join(os.path.dirname(__file__), 'data', 'mmsi_step_before_controls.json')


@pytest.mark.parametrize('name, pair_weights', CASES)
def test_learned_max_is_bit_identical_to_the_step_recorded_before_the_controls(name,
                                                                               pair_weights):
    """tests/data/mmsi_step_before_controls.json: the parameters and statistics after one step
    of problem(0), recorded with the code before --mmsi_weights / --weight_norm existed (commit
    0436170, `python record_step.py`: this test's make_run, run.step once, float.hex of every
    value). The default flags must reproduce them bit for bit."""
    with open(RECORDED) as f:
        recorded = json.load(f)[f'{name}/{pair_weights}']
    net, x, y, x_val, y_val, dictionary = problem(0)
    run = make_run(net, dictionary, (x_val, y_val), name, pair_weights,
                   mmsi_weights='learned', weight_norm='max')
    stats = trainer_MMSI.mmsi_step(run, x, y)
    for key, value in recorded['stats'].items():
        assert float(stats[key]).hex() == value, key
    for key, values in recorded['parameters'].items():
        assert [float(v).hex() for v in net.state_dict()[key].flatten().tolist()] == values, key


def weights_of_a_step(monkeypatch, name='MS', pair_weights='official', **flags):
    """(weights the real step trained with, pos_mask, neg_mask, the step's statistics) of one
    step of problem(0) under `flags`, the weighted loss wrapped to catch its weights."""
    net, x, y, x_val, y_val, dictionary = problem(0)
    run = make_run(net, dictionary, (x_val, y_val), name, pair_weights, **flags)
    caught = []
    weighted = run.criteria.weighted

    def catching(emb, labels, weights, pos_mask, neg_mask):
        caught.append((weights.detach().clone(), pos_mask, neg_mask))
        return weighted(emb, labels, weights, pos_mask, neg_mask)
    run.criteria = run.criteria._replace(weighted=catching)
    stats = trainer_MMSI.mmsi_step(run, x, y)
    assert 'skipped' not in stats
    weights, pos_mask, neg_mask = caught[-1]  # the last call is the real step's
    return weights, pos_mask, neg_mask, stats


def kinds(weights, pos_mask, neg_mask):
    return {'pos': weights[pos_mask], 'neg': weights[neg_mask]}


@pytest.mark.parametrize('weight_norm', ['max', 'mean'])
def test_shuffled_keeps_each_kinds_multiset_and_changes_the_assignment(weight_norm, monkeypatch):
    learned, pos, neg, _ = weights_of_a_step(monkeypatch, weight_norm=weight_norm)
    shuffled, pos2, neg2, stats = weights_of_a_step(monkeypatch, weight_norm=weight_norm,
                                                    mmsi_weights='shuffled')
    assert torch.equal(pos, pos2) and torch.equal(neg, neg2)  # same pairs mined
    for kind, values in kinds(shuffled, pos, neg).items():
        assert torch.equal(values.sort().values, kinds(learned, pos, neg)[kind].sort().values)
    assert not torch.equal(shuffled, learned)
    assert torch.equal(shuffled[~(pos | neg)], learned[~(pos | neg)])  # zeros stay zeros
    assert float(stats['w_pos_pairs']) == pytest.approx(float(learned[pos].mean()), rel=1e-12)
    assert float(stats['w_neg_pairs']) == pytest.approx(float(learned[neg].mean()), rel=1e-12)


def test_kind_mean_gives_each_kind_its_learned_mean(monkeypatch):
    learned, pos, neg, _ = weights_of_a_step(monkeypatch)
    flat, _, _, stats = weights_of_a_step(monkeypatch, mmsi_weights='kind_mean')
    for kind, values in kinds(flat, pos, neg).items():
        want = kinds(learned, pos, neg)[kind].mean()
        assert torch.allclose(values, want.expand_as(values), rtol=1e-12, atol=0)
    assert float(stats['w_pos_pairs']) == pytest.approx(float(learned[pos].mean()), rel=1e-12)
    assert float(stats['w_neg_pairs']) == pytest.approx(float(learned[neg].mean()), rel=1e-12)
    assert float(stats['w_max']) < 1  # the maximum is no longer 1: the kind means are smaller


@pytest.mark.parametrize('mmsi_weights', ['learned', 'shuffled', 'kind_mean'])
def test_weight_norm_mean_gives_the_selected_pairs_a_mean_of_one(mmsi_weights, monkeypatch):
    by_max, pos, neg, _ = weights_of_a_step(monkeypatch)
    weights, _, _, stats = weights_of_a_step(monkeypatch, weight_norm='mean',
                                             mmsi_weights=mmsi_weights)
    selected = pos | neg
    assert float(weights[selected].mean()) == pytest.approx(1.0, rel=1e-12)
    assert float(stats['w_mean']) == pytest.approx(1.0, rel=1e-12)
    if mmsi_weights == 'learned':  # the same ranking, another scale: a multiple of max's
        ratio = weights[selected] / by_max[selected].clamp_min(1e-300)
        nonzero = by_max[selected] > 0
        assert torch.allclose(ratio[nonzero], ratio[nonzero][0].expand_as(ratio[nonzero]),
                              rtol=1e-12, atol=0)
        assert float(ratio[nonzero][0]) > 1


def test_the_shuffled_permutation_is_a_function_of_the_seed_and_the_position(monkeypatch):
    first, pos, neg, _ = weights_of_a_step(monkeypatch, mmsi_weights='shuffled')
    again, _, _, _ = weights_of_a_step(monkeypatch, mmsi_weights='shuffled')
    assert torch.equal(first, again)  # a resumed run at the same position draws the same
    net, x, y, x_val, y_val, dictionary = problem(0)
    run = make_run(net, dictionary, (x_val, y_val), mmsi_weights='shuffled')
    now = torch.randperm(50, generator=trainer_MMSI.control_generator(run))
    run.global_step = 5
    assert not torch.equal(torch.randperm(50, generator=trainer_MMSI.control_generator(run)), now)


@pytest.mark.parametrize('meta_grad', ['jvp', 'exact'])
@pytest.mark.parametrize('mmsi_weights', ['learned', 'shuffled', 'kind_mean'])
@pytest.mark.parametrize('weight_norm', ['max', 'mean'])
@pytest.mark.parametrize('name, pair_weights', CASES)
def test_every_control_trains_every_loss_form_and_meta_gradient(name, pair_weights, weight_norm,
                                                                mmsi_weights, meta_grad):
    net, x, y, x_val, y_val, dictionary = problem(0)
    before = copy.deepcopy(net.state_dict())
    run = make_run(net, dictionary, (x_val, y_val), name, pair_weights, meta_grad=meta_grad,
                   mmsi_weights=mmsi_weights, weight_norm=weight_norm)
    stats = trainer_MMSI.mmsi_step(run, x, y)
    assert 'skipped' not in stats and torch.isfinite(stats['loss'])
    assert any(not torch.equal(value, before[key]) for key, value in net.state_dict().items())
