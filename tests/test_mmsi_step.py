"""One MMSI training step, checked arithmetically for every registered loss and pair-weight
form: the trainer's parameter update equals a direct meta_gradient -> normalize_weights ->
weighted loss -> Adam step on a copy of the model."""
import copy

import pytest
import torch

import losses
import trainer_MMSI
from models.meta_layers import meta_gradient, normalize_weights
from tiny_network import META_LR, setup
from utils.args import parse_args
from utils.build import build_criteria
from utils.distributed import Distributed
from utils.semi_global import SemiGlobalDictionary
from utils.training_run import TrainingRun

CASES = [(name, pair_weights) for name in sorted(losses.RULES)
         for pair_weights in (['official', 'gradient'] if losses.has_official_weights(name)
                              else ['gradient'])]
LR = 0.05


def make_run(name, pair_weights, model, dictionary, val_batch):
    args = parse_args(['--loss', name, '--pair_weights', pair_weights, '--lr', str(LR),
                       '--meta_lr', str(META_LR)])
    return TrainingRun(
        args=args, dist=Distributed(), device=torch.device('cpu'), seed=0, run_id='step',
        model=model,
        train_embed=model, local_embed=model, prepare=lambda images, device: images, scaler=None,
        optimizer=torch.optim.Adam(model.parameters(), lr=LR), criteria=build_criteria(args),
        step=trainer_MMSI.step, dictionary=dictionary, dict_min_classes=1,
        val_batches=iter([val_batch]))


@pytest.mark.parametrize('name, pair_weights', CASES)
def test_one_mmsi_step_equals_its_definition(name, pair_weights):
    net, x, y, x_val, y_val, mem_emb, mem_labels = setup(0)
    dictionary = SemiGlobalDictionary(3, 5, 40)
    dictionary.push(mem_emb, mem_labels)
    reference_net, reference_dictionary = copy.deepcopy(net), copy.deepcopy(dictionary)
    run = make_run(name, pair_weights, net, dictionary, (x_val, y_val))
    stats = run.step(run, x, y)
    assert 'skipped' not in stats

    # the definition, step by step, on the copies
    criteria = build_criteria(run.args)
    reference_dictionary.push(reference_net(x).detach(), y)
    emb = reference_net(x)
    pos_mask, neg_mask = criteria.select(emb.detach(), y)
    grad = meta_gradient(reference_net, x, y, pos_mask, neg_mask, x_val, y_val,
                         *reference_dictionary.tensors(), criteria.weighted,
                         criteria.semi_global, META_LR, method='exact')
    weights = normalize_weights(grad)
    assert weights is not None and 0 < int((weights > 0).sum())
    loss = criteria.weighted(emb, y, weights, pos_mask, neg_mask)
    optimizer = torch.optim.Adam(reference_net.parameters(), lr=LR)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    torch.testing.assert_close(stats['loss'], loss.detach(), rtol=1e-7, atol=1e-12)
    assert float(stats['w_max']) == 1.0
    for (key, got), want in zip(net.state_dict().items(), reference_net.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10, msg=key)
    moved = sum(float((a - b).abs().sum()) for a, b in zip(
        net.state_dict().values(), setup(0)[0].state_dict().values()))
    assert moved > 1e-4  # the step did update the model
