"""Label noise (our extension, not in the official code): a fixed share of the training images
get the label of another training class.

`noisy_labels` is a pure function of the training items, the fraction and the seed: all runs of
one noise seed (every cell of a comparison) train on the same noisy labels.
"""
import numpy as np


def noisy_labels(items, fraction, seed):
    """(noisy items, changed) for the (path, label) pairs `items`.

    round(fraction * len(items)) images, chosen by a numpy Generator seeded with `seed`, get a
    label drawn uniformly from the other classes of `items` (never their own, never one outside
    `items`). `changed` lists (path, true label, given label) for each of them, in the order of
    `items`. The other images keep their labels; `items` itself is left unchanged."""
    if not 0 <= fraction < 1:
        raise ValueError(f'label noise fraction {fraction}: expected a value in [0, 1)')
    items = list(items)
    count = int(round(fraction * len(items)))
    if count == 0:
        return items, []
    classes = np.array(sorted({label for _, label in items}))
    if len(classes) < 2:
        raise ValueError('label noise needs at least two classes to draw another label from')
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(items), size=count, replace=False))
    # one of the len(classes) - 1 other classes: draw an offset in [1, C) from the own class
    offsets = rng.integers(1, len(classes), size=count)
    position = {label: index for index, label in enumerate(classes.tolist())}
    noisy, changed = list(items), []
    for index, offset in zip(chosen.tolist(), offsets.tolist()):
        path, label = items[index]
        given = classes[(position[label] + offset) % len(classes)].item()
        noisy[index] = (path, given)
        changed.append((path, label, given))
    return noisy, changed
