"""DataSet/noise.py: the label-noise draw is a pure function of the items, fraction and seed."""
import pytest

from DataSet.noise import noisy_labels


def items(num_classes=7, per_class=9):
    return [(f'img/{c}_{k}.jpg', 100 + 3 * c) for c in range(num_classes) for k in range(per_class)]


@pytest.mark.parametrize('fraction', [0.0, 0.1, 0.25, 0.5, 0.99])
def test_exactly_round_p_n_labels_change_each_to_another_training_class(fraction):
    original = items()
    noisy, changed = noisy_labels(original, fraction, seed=3)
    classes = {label for _, label in original}
    assert len(changed) == round(fraction * len(original))
    assert [path for path, _ in noisy] == [path for path, _ in original]  # same images, order
    differing = [(a, b) for a, b in zip(original, noisy) if a != b]
    assert len(differing) == len(changed)
    for (path, true), (_, given) in differing:
        assert given != true and given in classes
    assert [(path, true, given) for (path, true), (_, given) in differing] == changed
    assert original == items()  # the input is left alone


def test_the_draw_is_fixed_by_the_seed():
    first, second = noisy_labels(items(), 0.3, 0), noisy_labels(items(), 0.3, 0)
    other = noisy_labels(items(), 0.3, 1)
    assert first == second
    assert first[1] != other[1]


def test_labels_are_drawn_uniformly_from_the_other_classes():
    original = items(num_classes=3, per_class=2000)
    _, changed = noisy_labels(original, 0.5, seed=0)
    counts = {}
    for _, true, given in changed:
        counts[true, given] = counts.get((true, given), 0) + 1
    assert len(counts) == 6  # every (class, other class) pair occurs
    assert max(counts.values()) / min(counts.values()) < 1.25


def test_a_fraction_outside_zero_one_is_refused():
    with pytest.raises(ValueError):
        noisy_labels(items(), 1.0, 0)
