"""The listed images, checked before a run writes anything (utils/build.py calls check_images
right after the data set is made).

- --check_images 1 (default): the header of every image is read; one that cannot be read, or
  declares more than --max_image_pixels pixels, stops the run with one line.
- --skip_bad_images 1: every image is decoded whole (a file cut short after a good header fails
  only there), and those that fail leave the set they were in, each with its label. So nothing
  is skipped while the run reads its images: a skip there would have to put another image in
  the place the sampler, the dictionary or the evaluation counted, a duplicate; here the image
  is simply not there, and the log's Data line counts what is used.

A training class that skipping leaves with fewer than --num_instances images is left out of
training, with a note: the sampler would fill its batches by repeating the images left, which
is the duplication skipping must not cause. (Refusing the run instead would make the flag
useless on SOP, where most classes hold fewer than 5 images: any bad image there would stop
it.) A class listed with fewer images than that and left whole keeps the sampler's usual draw
with replacement. The classes that remain are checked again against the batch and warm-up
flags.
"""
import dataclasses

import torch

from common.errors import InputError
from DataSet.image_list import unreadable_images
from utils.config import check_against_data

SET_NAMES = ('train', 'gallery', 'query', 'holdout')


def check_images(config, dataset, dist, device):
    """(the data set to use, notes for the log). Each process reads a share of the images."""
    if config.skip_bad_images:
        return without_unreadable(config, dataset, dist, device)
    if config.check_images:
        refuse_unreadable(config, dataset, dist, device)
    return dataset, []


def image_sets(dataset):
    """{attribute: ImageList} of the data set's sets that exist, training set first."""
    return {name: getattr(dataset, name) for name in SET_NAMES
            if getattr(dataset, name) is not None}


def set_title(name, dataset):
    return {'train': 'training', 'gallery': 'test' if dataset.query is None else 'gallery',
            'query': 'query', 'holdout': 'holdout'}[name]


def problems_in_share(config, paths, dist, decode):
    """{position in `paths`: message} of the unreadable images of this process's share."""
    found = unreadable_images(paths[dist.rank::dist.world_size], config.nThreads,
                              config.progress and dist.is_main, decode=decode,
                              max_pixels=config.max_image_pixels)
    return {dist.rank + position * dist.world_size: message for position, message in found}


def refuse_unreadable(config, dataset, dist, device):
    """InputError, on every process, when any process found an image whose header does not
    read."""
    paths = [path for images in image_sets(dataset).values() for path in images.images]
    errors = list(problems_in_share(config, paths, dist, decode=False).values())
    if not dist.all_true(not errors, device):
        raise InputError(f'{len(errors)} listed image(s) cannot be read (--check_images), '
                         f'first: {errors[0]}' if errors else
                         'another process found an unreadable image (--check_images)')


def without_unreadable(config, dataset, dist, device):
    """--skip_bad_images: the data set without the images that do not decode (on any process)
    and without the training classes this leaves short; the notes name both."""
    sets = image_sets(dataset)
    paths = [path for images in sets.values() for path in images.images]
    mine = problems_in_share(config, paths, dist, decode=True)
    found = torch.tensor(sorted(mine), dtype=torch.long, device=device)
    positions = sorted(dist.all_gather_varying(found).tolist())
    if not positions:
        return dataset, []
    bad = {paths[position] for position in positions}
    kept = {name: images.without(bad) for name, images in sets.items()}
    for name, images in kept.items():
        if not len(images):
            raise InputError(f'--skip_bad_images: none of the {len(sets[name])} '
                             f'{set_title(name, dataset)} images can be read')
    kept['train'], short = without_short_classes(dataset.train, kept['train'],
                                                 config.num_instances)
    if short:
        try:
            check_against_data(config, kept['train'].num_classes)
        except InputError as err:
            raise InputError(f'{err} (--skip_bad_images left {len(short)} training class(es) '
                             f'out: too few readable images)') from None
    lost = ', '.join(f'{set_title(name, dataset)} {len(sets[name]) - len(kept[name])}'
                     for name in sets if len(sets[name]) != len(kept[name]))
    notes = [f'--skip_bad_images: {len(bad)} of the {len(paths)} listed images cannot be read '
             f'and are left out, each with its label (images left out: {lost}); the Data line '
             f'counts the images used']
    # Only this process's messages are known here: another process's finds are named by path.
    notes += ['skipped: ' + mine.get(position, f'{paths[position]} (found unreadable by '
                                                f'process {position % dist.world_size})')
              for position in positions]
    if short:
        notes.append(f'--skip_bad_images: {len(short)} training class(es) left with fewer than '
                     f'--num_instances {config.num_instances} readable images are left out of '
                     f'training (their batches would repeat images): ' + ', '.join(
                         f'class {label} ({left} of {listed})' for label, left, listed in short))
    return dataclasses.replace(dataset, **kept), notes


def without_short_classes(listed, kept, num_instances):
    """(`kept` without the classes that lost images to skipping and hold fewer than
    `num_instances` now, [(label, images left, images listed)] of those classes)."""
    short = []
    for label, indices in sorted(listed.Index.items()):
        left = len(kept.Index.get(label, ()))
        if left < min(num_instances, len(indices)):
            short.append((label, left, len(indices)))
    dropped = {kept.images[index] for label, _, _ in short for index in kept.Index.get(label, ())}
    return kept.without(dropped), short
