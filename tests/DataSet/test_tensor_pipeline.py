"""The tensor input pipeline draws the reference's crops and gives nearly the same pixels."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from DataSet.image_list import ImageList
from DataSet.tensor_pipeline import (EncodedImageList, collate, draw_crop, resized_size,
                                     to_network_input)
from DataSet.transforms import eval_transform, train_transform
from common.errors import InputError

WIDTH, ORIGIN, RATIO = 64, 72, 0.16


def smooth_image(path, width, height, seed=0):
    """A smooth colour image (JPEG artefacts and resampling differences stay small)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(6 * x * rng.uniform(0.5, 2) + rng.uniform(0, 3)) +
                np.cos(5 * y * rng.uniform(0.5, 2)) for _ in range(3)]
    pixels = (np.stack(channels, -1) * 60 + 128).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=98)
    return str(path)


def reference_draw(width, height, seed):
    """What the PIL path draws for `seed`: the crop in the resized frame and the flip."""
    frame = Image.new('RGB', (width, height))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        resized = T.Resize(ORIGIN)(frame)
        box = T.RandomResizedCrop.get_params(resized, (RATIO, 1.0), (3 / 4, 4 / 3))
        flip = bool(torch.rand(1) < 0.5)
    return resized.size, box, flip


@pytest.mark.parametrize('size', [(72, 96), (150, 72), (144, 192), (333, 251)])
def test_resized_size_matches_torchvision(size):
    assert resized_size(*size, ORIGIN) == T.Resize(ORIGIN)(Image.new('RGB', size)).size


@pytest.mark.parametrize('size', [(72, 96), (144, 192), (216, 150)])
def test_same_seed_same_crop_and_flip_as_reference(size):
    for seed in range(40):
        (res_w, res_h), (top, left, h, w), flip = reference_draw(*size, seed)
        sx, sy = size[0] / res_w, size[1] / res_h
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            box, tensor_flip = draw_crop(*size, WIDTH, ORIGIN, RATIO, train=True)
        assert tensor_flip == flip
        expected = [top * sy, left * sx, h * sy, w * sx]
        assert all(abs(a - b) <= 1 for a, b in zip(box, expected)), (box, expected)


def test_train_pixels_close_to_reference(tmp_path):
    paths = [smooth_image(tmp_path / f'{i}.jpg', *size, seed=i)
             for i, size in enumerate([(72, 96), (180, 130), (300, 220)])]
    reference = ImageList(paths, [0, 1, 2], train_transform(WIDTH, ORIGIN, RATIO))
    fast = EncodedImageList(ImageList(paths, [0, 1, 2]), WIDTH, ORIGIN, RATIO, train=True)
    for index in range(3):
        for seed in (1, 2, 3):
            want = reference[(index, seed)][0]
            got = to_network_input(fast[(index, seed)][0][None], 'cpu', WIDTH)[0]
            assert got.shape == want.shape == (3, WIDTH, WIDTH)
            assert (got - want).abs().mean() < 4  # of 0..255: one resampling instead of two


def test_eval_centre_crop_close_to_reference(tmp_path):
    paths = [smooth_image(tmp_path / 'a.jpg', 250, 180)]
    want = ImageList(paths, [0], eval_transform(WIDTH, ORIGIN))[0][0]
    fast = EncodedImageList(ImageList(paths, [0]), WIDTH, ORIGIN, RATIO, train=False)
    got = to_network_input(fast[0][0][None], 'cpu', WIDTH)[0]
    assert (got - want).abs().mean() < 4


def test_gpu_mode_batches_decode_like_tensor_mode(tmp_path):
    """The 'gpu' mode's batch decoding, run here on the CPU, gives the tensor mode's images."""
    paths = [smooth_image(tmp_path / f'{i}.jpg', 120 + 10 * i, 90) for i in range(4)]
    images = ImageList(paths, [5, 5, 6, 6])
    tensor_mode = EncodedImageList(images, WIDTH, ORIGIN, RATIO, train=True)
    gpu_mode = EncodedImageList(images, WIDTH, ORIGIN, RATIO, train=True, mode='gpu')
    keys = [(i, 100 + i) for i in range(4)]
    batch, labels = collate([gpu_mode[k] for k in keys])
    assert labels.tolist() == [5, 5, 6, 6] and len(batch['data']) == 4
    from_gpu_mode = to_network_input(batch, 'cpu', WIDTH)
    from_tensor_mode = to_network_input(collate([tensor_mode[k] for k in keys])[0], 'cpu', WIDTH)
    assert torch.equal(from_gpu_mode, from_tensor_mode)


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8 garbage')
    fast = EncodedImageList(ImageList([str(bad)], [0]), WIDTH, ORIGIN, RATIO, train=True)
    with pytest.raises(InputError, match='bad.jpg'):
        fast[0]

