"""extract_features: order, labels, eval mode inside, training modes restored after."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from evaluations import extract_features

NUM_IMAGES = 11


def make_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    with torch.no_grad():  # running statistics that differ from any batch's own
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model


def make_loader(batch_size=4, dtype=torch.float32):
    images = torch.randn(NUM_IMAGES, 4, generator=torch.Generator().manual_seed(1), dtype=dtype)
    labels = torch.tensor([7, -3, 7, 100, 2, 2, 5, -3, 9, 0, 7])
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)


def test_embeddings_are_eval_mode_outputs_in_loader_order():
    model, loader = make_model(), make_loader()
    images, labels = loader.dataset.tensors
    emb, got_labels = extract_features(model, loader, progress=False)
    model.eval()
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(emb, expected)
    assert torch.equal(got_labels, labels)


def test_output_types():
    double_loader = make_loader(dtype=torch.float64)
    emb, labels = extract_features(make_model().double(), double_loader, progress=False)
    assert emb.dtype == torch.float32 and emb.device.type == 'cpu' and emb.shape == (NUM_IMAGES, 3)
    assert labels.dtype == torch.int64 and labels.shape == (NUM_IMAGES,)
    assert not emb.requires_grad and not emb.is_inference()


def test_batchnorm_statistics_are_not_updated():
    model = make_model().train()
    running_mean = model[1].running_mean.clone()
    extract_features(model, make_loader(), progress=False)
    assert torch.equal(model[1].running_mean, running_mean)


def test_each_module_gets_its_own_training_mode_back():
    model = make_model().train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    extract_features(model, make_loader(), progress=False)
    assert [m.training for m in model] == [True, False, True, True] and model.training


def test_eval_model_stays_in_eval():
    model = make_model().eval()
    extract_features(model, make_loader(), progress=False)
    assert not any(m.training for m in model.modules())


class Failing(nn.Module):
    def forward(self, x):
        raise RuntimeError('broken model')


def test_training_mode_restored_when_the_model_raises():
    model = Failing().train()
    with pytest.raises(RuntimeError, match='broken model'):
        extract_features(model, make_loader(), progress=False)
    assert model.training


def test_progress_bar_goes_to_stderr_only_when_asked(capsys):
    extract_features(make_model(), make_loader(), progress=False, desc='gallery')
    assert capsys.readouterr().err == ''
    extract_features(make_model(), make_loader(), progress=True, desc='gallery')
    captured = capsys.readouterr()
    assert 'gallery' in captured.err and captured.out == ''


def test_empty_loader_raises():
    empty = DataLoader(TensorDataset(torch.ones(0, 4), torch.ones(0, dtype=torch.long)))
    with pytest.raises(ValueError, match='no batch'):
        extract_features(make_model(), empty, progress=False)
