"""utils/evaluation.py, the one evaluation of training and test.py, on the Glyphs subset of
conftest.glyphs_root with a small network (tests/tiny_network.py)."""
import pytest
import torch

import DataSet
from evaluations import ExtractionStopped
from tiny_network import TinyEmbedder
from tiny_run import run_args
from utils.config import resolve
from utils.distributed import Distributed
from utils.evaluation import (NonFiniteEmbeddings, evaluate_network, evaluation_loaders,
                              holdout_metrics)
from utils.training_run import NetworkViews

CPU = torch.device('cpu')


def views(net):
    return NetworkViews(train_embed=net, local_embed=net, scaler=None,
                        prepare=lambda images, device: images.to(device))


def setting(glyphs_root, tmp_path, *flags):
    """(config, loaders) of the Glyphs subset for `flags`."""
    config, _, splits, _ = resolve(run_args(glyphs_root, tmp_path / 'run', *flags),
                                   evaluate_only=True)
    dataset = DataSet.create('glyphs', glyphs_root, config.width, config.origin_width,
                             splits=splits)
    return config, evaluation_loaders(dataset, config, CPU)


def evaluate(net, config, loaders, **options):
    return evaluate_network(views(net), loaders, config, device=CPU, dist=Distributed(),
                            **options)


@pytest.mark.parametrize('nmi, final, has_nmi', [('final', False, False), ('final', True, True),
                                                 ('every', False, True), ('off', True, False)])
def test_nmi_is_computed_as_the_nmi_flag_says(glyphs_root, tmp_path, nmi, final, has_nmi):
    torch.manual_seed(0)
    config, loaders = setting(glyphs_root, tmp_path, '--nmi', nmi)
    row = evaluate(TinyEmbedder().eval(), config, loaders, final=final)
    assert ('NMI' in row) == has_nmi
    assert [key for key in row if key.startswith('R@')] == [
        f'R@{k}' for k in (1, 2, 4, 8, 16, 32)]  # Glyphs' Ks
    assert row.pop('test_images') == len(loaders.gallery.dataset)  # every test image scored
    assert all(0 <= value <= 1 for value in row.values())


def test_the_row_holds_the_holdout_classes_and_the_nmi_of_the_given_seed(glyphs_root, tmp_path):
    torch.manual_seed(0)
    net = TinyEmbedder().eval()
    config, loaders = setting(glyphs_root, tmp_path, '--holdout_classes', '2')
    row = evaluate(net, config, loaders, final=True, seed=3)
    plain, _ = setting(glyphs_root, tmp_path)
    without = evaluate(net, plain, evaluation_loaders(
        DataSet.create('glyphs', glyphs_root, 64, 72), plain, CPU), final=True, seed=3)
    # the test split is the same with or without held-out training classes
    assert {key: row[key] for key in without} == without
    with torch.no_grad():
        images, labels = zip(*(loaders.holdout.dataset[i] for i in range(8)))
        emb = net(torch.stack(images))
    assert {key: row[key] for key in row if key.startswith('holdout/')} == pytest.approx(
        holdout_metrics(emb, torch.tensor(labels)), abs=1e-6)
    assert sorted(set(labels)) == [5, 6]


def test_a_stop_request_abandons_the_evaluation(glyphs_root, tmp_path):
    config, loaders = setting(glyphs_root, tmp_path)
    with pytest.raises(ExtractionStopped):
        evaluate(TinyEmbedder().eval(), config, loaders, should_stop=lambda: True)


def test_non_finite_embeddings_are_refused(glyphs_root, tmp_path):
    net = TinyEmbedder().eval()
    with torch.no_grad():
        net.linear.bias.fill_(float('nan'))
    config, loaders = setting(glyphs_root, tmp_path)
    with pytest.raises(NonFiniteEmbeddings):
        evaluate(net, config, loaders)
