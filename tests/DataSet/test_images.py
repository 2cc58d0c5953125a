"""Reading one image file: every mode becomes the same RGB values in the PIL and the tensor
pipelines; a header declaring too many pixels, or a file cut short, is one InputError naming the
file; the check before a run finds both."""
import numpy as np
import pytest
import torch
from PIL import Image

from DataSet.image_list import ImageList, read_image, unreadable_images
from DataSet.tensor_pipeline import EncodedImageList, collate, to_network_input
from DataSet.transforms import eval_transform
from common.errors import InputError
from image_files import huge_header_png

WIDTH, ORIGIN, RATIO = 32, 36, 0.16
HEIGHT_PX, WIDTH_PX = 40, 52


def pixels(seed, channels, high=256, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, high, (HEIGHT_PX, WIDTH_PX, channels),
                                                dtype=dtype)


def sixteen_bit_grey(path):
    values = pixels(1, 1, high=65536, dtype=np.uint16)[..., 0]
    Image.fromarray(values).save(path)  # PIL writes mode I;16 as a 16-bit grey PNG
    grey = (values >> 8).astype(np.uint8)  # scaled to 8 bits, not clipped
    return np.stack([grey] * 3, -1)


def palette(path):
    indices = pixels(2, 1, high=16)[..., 0]
    colours = pixels(3, 3)[0, :16]  # 16 random colours
    image = Image.fromarray(indices, 'P')
    image.putpalette(colours.flatten().tolist())
    image.save(path)
    return colours[indices]


def cmyk(path):
    Image.fromarray(pixels(4, 4), 'CMYK').save(path, quality=95)
    # JPEG is lossy: convert the CMYK values the file decodes to. Each channel is
    # (255 - C)(255 - K) / 255, rounded, as (255 - K) - C (255 - K) / 255.
    with Image.open(path) as image:
        c = np.asarray(image).astype(np.int64)
    not_black = 255 - c[..., 3:]
    return (not_black - np.round(c[..., :3] * not_black / 255)).astype(np.uint8)


def grey_alpha(path):
    values = pixels(5, 2)
    Image.fromarray(values, 'LA').save(path)
    return np.stack([values[..., 0]] * 3, -1)  # the alpha channel is dropped


def rgb_alpha(path):
    values = pixels(6, 4)
    Image.fromarray(values, 'RGBA').save(path)
    return values[..., :3]


MODES = {'I;16': ('png', sixteen_bit_grey), 'P': ('png', palette), 'CMYK': ('jpg', cmyk),
         'LA': ('png', grey_alpha), 'RGBA': ('png', rgb_alpha)}


@pytest.mark.parametrize('mode', sorted(MODES))
def test_each_mode_becomes_its_reference_rgb_in_both_pipelines(mode, tmp_path):
    suffix, write = MODES[mode]
    path = str(tmp_path / f'image.{suffix}')
    reference = write(path)
    with Image.open(path) as written:
        assert written.mode == mode
    reference_path = str(tmp_path / 'reference.png')
    Image.fromarray(reference, 'RGB').save(reference_path)

    # the PIL pipeline: exactly the reference's values, then the same network input
    assert np.array_equal(np.asarray(read_image(path)), reference)
    pil = ImageList([path, reference_path], [0, 0], eval_transform(WIDTH, ORIGIN))
    assert torch.equal(pil[0][0], pil[1][0])
    # the tensor pipeline, and the gpu mode's decoding (run here on the CPU)
    images = ImageList([path, reference_path], [0, 0])
    tensor = EncodedImageList(images, WIDTH, ORIGIN, RATIO, train=True)
    assert torch.equal(tensor[(0, 5)][0], tensor[(1, 5)][0])
    gpu = EncodedImageList(images, WIDTH, ORIGIN, RATIO, train=True, mode='gpu')
    batch = collate([gpu[(0, 5)], gpu[(1, 5)]])[0]
    first, second = to_network_input(batch, 'cpu', WIDTH)
    assert torch.equal(first, second)
    # a centre crop that resamples nothing: both pipelines give the reference's pixels
    side, left = HEIGHT_PX, (WIDTH_PX - HEIGHT_PX) // 2
    crop = torch.from_numpy(reference[:, left:left + side]).permute(2, 0, 1)[None]
    plain = EncodedImageList(images, side, side, RATIO, train=False)
    assert torch.equal(plain[0][0], crop[0])
    as_pil = ImageList([path], [0], eval_transform(side, side))[0][0]
    assert torch.equal(as_pil, to_network_input(crop, 'cpu', side)[0])


def test_a_huge_declared_size_is_one_error_naming_the_file_and_the_limit(tmp_path):
    huge = huge_header_png(tmp_path / 'huge.png')
    message = (f'image {huge} declares 30000 x 30000 pixels, more than the limit of '
               f'100,000,000 (--max_image_pixels)')
    for header_only in (True, False):
        with pytest.raises(InputError) as caught:
            read_image(huge, header_only=header_only)
        assert str(caught.value) == message
    with pytest.raises(InputError, match='--max_image_pixels'):
        EncodedImageList(ImageList([huge], [0]), WIDTH, ORIGIN, RATIO, train=True)[0]
    assert unreadable_images([huge]) == [(0, message)]
    # a raised limit reads the header (PIL's own limit, 179 Mpx, stays out of the way)
    assert read_image(huge, header_only=True, max_pixels=10 ** 9) == (30000, 30000)
    assert unreadable_images([huge], max_pixels=10 ** 9) == []
    # and a lowered one refuses a small image
    small = tmp_path / 'small.png'
    Image.new('RGB', (20, 10)).save(small)
    with pytest.raises(InputError, match='declares 20 x 10 pixels, more than the limit of 199 '):
        ImageList([str(small)], [0], max_pixels=199)[0]


def test_a_file_cut_short_passes_the_header_check_but_not_the_decoding(tmp_path):
    good = tmp_path / 'good.jpg'
    Image.fromarray(pixels(7, 3)).save(good, quality=90)
    cut = tmp_path / 'cut.jpg'
    data = good.read_bytes()
    cut.write_bytes(data[:len(data) * 2 // 3])  # the header whole, the pixels cut short
    paths = [str(good), str(cut), str(tmp_path / 'missing.jpg')]
    assert unreadable_images(paths) == [(2, f'image file not found: {paths[2]}')]
    found = unreadable_images(paths, decode=True)
    assert [position for position, _ in found] == [1, 2]
    assert found[0][1].startswith(f'cannot decode image {cut}: ')
    with pytest.raises(InputError, match=f'cannot decode image {cut}'):
        ImageList(paths, [0, 0, 0])[1]


def test_without_removes_images_with_their_labels_and_keeps_the_order(tmp_path):
    images = ImageList(['a', 'b', 'c', 'd', 'e'], [1, 1, 2, 2, 3], transform='t', max_pixels=9)
    kept = images.without({'b', 'e'})
    assert (kept.images, kept.labels, kept.Index) == (['a', 'c', 'd'], [1, 2, 2],
                                                      {1: [0], 2: [1, 2]})
    assert (kept.transform, kept.max_pixels) == ('t', 9)
    assert images.images == ['a', 'b', 'c', 'd', 'e']  # the original is unchanged
