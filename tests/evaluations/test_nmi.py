"""NMI: the mutual-information formula against scikit-learn and a hand computation, and our
k-means (k-means++ seeds, chunked Lloyd iterations)."""
import math

import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

import evaluations
from evaluations.clustering import assign, kmeans, normalized_mutual_info


def test_hand_computed_case():
    """true 0 0 1 1, clusters 0 0 0 1: cells (0,0)=2, (1,0)=1, (1,1)=1; rows 2 2; columns 3 1."""
    mutual_info = 0.5 * math.log(4 * 2 / (2 * 3)) + 0.25 * math.log(4 * 1 / (2 * 3)) \
        + 0.25 * math.log(4 * 1 / (2 * 1))
    entropy_true = math.log(2)
    entropy_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = mutual_info / ((entropy_true + entropy_pred) / 2)
    assert expected == pytest.approx(0.34371, abs=1e-5)
    got = normalized_mutual_info(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('n, classes, clusters, seed', [(50, 3, 3, 0), (1000, 40, 40, 1),
                                                         (500, 500, 500, 2), (300, 7, 20, 3),
                                                         (200, 2, 1, 4)])
def test_matches_scikit_learn(n, classes, clusters, seed):
    generator = torch.Generator().manual_seed(seed)
    truth = torch.randint(classes, (n,), generator=generator) * 7 + 100  # arbitrary label values
    predicted = torch.randint(clusters, (n,), generator=generator)
    # half of the points agree with the truth, so the score is far from 0
    predicted[: n // 2] = truth[: n // 2] % max(clusters, 1)
    expected = normalized_mutual_info_score(truth.numpy(), predicted.numpy())
    assert normalized_mutual_info(truth, predicted) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_limits():
    labels = torch.tensor([3, 3, 5, 5, 9])
    assert normalized_mutual_info(labels, torch.tensor([1, 1, 0, 0, 7])) == pytest.approx(1.0)
    assert normalized_mutual_info(labels, torch.zeros(5, dtype=torch.long)) == 0.0
    assert normalized_mutual_info(torch.zeros(4), torch.zeros(4)) == 1.0  # scikit-learn's
    with pytest.raises(ValueError, match='5 true labels but 4'):
        normalized_mutual_info(labels, torch.zeros(4))


def blobs(num_clusters=20, per_cluster=30, dim=16, spread=0.1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_clusters, dim, generator=generator) * 10
    labels = torch.arange(num_clusters).repeat_interleave(per_cluster)
    points = centres[labels] + torch.randn(len(labels), dim, generator=generator) * spread
    order = torch.randperm(len(labels), generator=generator)
    return points[order], labels[order] + 1000


def test_kmeans_recovers_well_separated_clusters():
    points, labels = blobs()
    clusters, centres = kmeans(points, 20, seed=0)
    assert centres.shape == (20, 16)
    # the same partition, up to the names of the clusters
    pairs = set(zip(labels.tolist(), clusters.tolist()))
    assert len(pairs) == 20 and len({c for _, c in pairs}) == 20
    assert evaluations.nmi(points, labels, seed=0) == pytest.approx(1.0)


def test_kmeans_ends_at_a_fixed_point_of_lloyd():
    """Overlapping clusters: every point is with its nearest centre and every non-empty
    centre is the mean of its points."""
    points, _ = blobs(num_clusters=8, per_cluster=25, dim=4, spread=3.0, seed=1)
    clusters, centres = kmeans(points, 8, seed=3, tol=0)
    distances = torch.cdist(points.double(), centres.double())
    assert torch.equal(distances.argmin(dim=1), clusters)
    for c in clusters.unique():
        torch.testing.assert_close(centres[c], points[clusters == c].mean(dim=0))


def test_seeded_and_independent_of_chunking():
    points, labels = blobs(num_clusters=10, per_cluster=20, spread=4.0, seed=2)
    first, _ = kmeans(points, 10, seed=5)
    again, _ = kmeans(points, 10, seed=5, max_chunk_bytes=64)  # one row per chunk
    assert torch.equal(first, again)
    centres = points[:10]
    assert torch.equal(assign(points, centres, 64), assign(points, centres))


def test_nmi_is_the_mutual_information_of_the_kmeans_clusters():
    points, labels = blobs(num_clusters=6, per_cluster=15, dim=8, spread=6.0, seed=4)
    clusters, _ = kmeans(points, 6, seed=0)
    value = evaluations.nmi(points, labels, seed=0)
    assert 0.2 < value < 1.0  # overlapping: imperfect
    assert value == normalized_mutual_info(labels, clusters)
    assert value == pytest.approx(normalized_mutual_info_score(labels.numpy(), clusters.numpy()))


def test_input_checks():
    with pytest.raises(ValueError, match=r'labels must be \[N\] = \[3\]'):
        evaluations.nmi(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match='NaN'):
        evaluations.nmi(torch.full((3, 2), float('nan')), torch.zeros(3))
    with pytest.raises(ValueError, match='1 <= k <= N'):
        kmeans(torch.zeros(3, 2), 4)
