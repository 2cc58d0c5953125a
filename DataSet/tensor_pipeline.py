"""A faster input pipeline that draws the same crops as the PIL reference (DataSet/transforms.py).

The reference resizes every image so its shorter side is `origin_width`, then takes a random
resized crop and resizes that to `width`: two resamplings, the first of the whole image. Here
the crop box is drawn exactly as the reference draws it (same random numbers, in the frame of the
resized image, for the same per-sample seed), mapped back onto the original image, and cut and
resized once. Two modes (`--input_pipeline`):

- `tensor`: loader workers decode with torchvision.io and crop on the CPU, handing over uint8
  images of width x width;
- `gpu`: workers only read the file bytes and draw the boxes; the training process decodes the
  whole batch with nvJPEG on the GPU and crops there (`to_network_input`).

Only plain JPEGs (grey or RGB: the data sets' photos) take torchvision's decoders. Every other
file (PNG, 16-bit, palette, CMYK, alpha, other formats) is decoded in the worker by the PIL
reference's own `decode_rgb`, so both pipelines see the same RGB values whatever the mode.

Test images (gallery) use the centre crop of the reference, mapped the same way.
"""
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as F2

from DataSet.image_list import decode_rgb, open_image
from DataSet.transforms import BGR_MEAN
from common.errors import InputError

def resized_size(width, height, origin_width):
    """(width, height) after the reference's Resize(origin_width): the shorter side becomes
    origin_width, the longer one int(origin_width * longer / shorter), as torchvision rounds."""
    if width <= height:
        return origin_width, int(origin_width * height / width)
    return int(origin_width * width / height), origin_width


def draw_crop(width, height, out_width, origin_width, ratio, train):
    """The crop box (top, left, box_height, box_width) in the original image and the flip, drawn
    as the reference draws them from the current torch random state."""
    res_w, res_h = resized_size(width, height, origin_width)
    frame = torch.empty(1, 1, 1).expand(3, res_h, res_w)  # only its size is read
    if train:
        top, left, box_h, box_w = T.RandomResizedCrop.get_params(frame, (ratio, 1.0),
                                                                 (3 / 4, 4 / 3))
        flip = bool(torch.rand(1) < 0.5)  # RandomHorizontalFlip's draw
    else:  # CenterCrop(out_width) of the resized image
        box_h = box_w = out_width
        top, left = round((res_h - out_width) / 2.0), round((res_w - out_width) / 2.0)
        flip = False
    scale_y, scale_x = height / res_h, width / res_w
    return (round(top * scale_y), round(left * scale_x), max(1, round(box_h * scale_y)),
            max(1, round(box_w * scale_x))), flip


def crop_resize_flip(image, box, flip, out_width):
    """uint8 [3, H, W] -> uint8 [3, out_width, out_width] (bilinear, antialiased)."""
    top, left, box_h, box_w = box
    out = F2.resized_crop(image, top, left, box_h, box_w, [out_width, out_width], antialias=True)
    return out.flip(-1) if flip else out


def normalise(images):
    """uint8 RGB [B, 3, H, W] -> float BGR in 0..255 minus the Caffe mean, like the reference."""
    mean = torch.tensor(BGR_MEAN, device=images.device).view(1, 3, 1, 1)
    return images.flip(1).float() - mean


class EncodedImageList(Dataset):
    """An ImageList read through the tensor pipeline; same `images`, `labels`, `Index`.

    mode 'tensor': items are (uint8 image [3, width, width], label);
    mode 'gpu': items are ({'data': file bytes, 'box': [4], 'flip': bool}, label), where
    'data' is the decoded uint8 image [3, H, W] for a file that is not a plain JPEG.
    """

    def __init__(self, image_list, width, origin_width, ratio, train, mode='tensor'):
        self.source = image_list
        self.images, self.labels = image_list.images, image_list.labels
        self.Index = image_list.Index
        self.width, self.origin_width, self.ratio = width, origin_width, ratio
        self.train, self.mode = train, mode

    @property
    def num_classes(self):
        return self.source.num_classes

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        (width, height), data, path = self._read(self.images[index])
        if seed is None:
            box, flip = draw_crop(width, height, self.width, self.origin_width, self.ratio,
                                  self.train)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                box, flip = draw_crop(width, height, self.width, self.origin_width, self.ratio,
                                      self.train)
        if self.mode == 'gpu':
            return ({'data': data, 'box': torch.tensor(box), 'flip': flip, 'path': path},
                    self.labels[index])
        return crop_resize_flip(data, box, flip, self.width), self.labels[index]

    def _read(self, path):
        """((width, height), data, path). data: the decoded uint8 image [3, H, W], except for a
        plain JPEG in 'gpu' mode, whose file bytes are decoded on the GPU later (a file that
        fails there stops the run with its name)."""
        with open_image(path, self.source.max_pixels) as image:
            size = image.size
            plain_jpeg = image.format == 'JPEG' and image.mode in ('L', 'RGB')
            if not plain_jpeg:
                return size, rgb_tensor(decode_rgb(image, path)), path
        try:
            data = read_file(path)
        except (OSError, RuntimeError) as err:
            raise InputError(f'cannot read image {path}: {err}') from None
        if self.mode == 'gpu':
            return size, data, path
        return size, decode(data, path), path


def rgb_tensor(image):
    """An RGB PIL image -> uint8 tensor [3, H, W]."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def decode(data, path, device='cpu'):
    """The file bytes of a plain JPEG -> uint8 RGB [3, H, W] on `device` (nvJPEG on a GPU); an
    image the worker decoded already (3 dimensions) is only moved there."""
    if data.dim() == 3:
        return data.to(device)
    try:
        if device != 'cpu':
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise InputError(f'cannot decode image {path}: {err}') from None


def decode_batch(data, paths, device):
    """The uint8 RGB images of a 'gpu' batch on `device`: file bytes alone go to one batched
    decoder call; otherwise, or when that call fails, one by one (a file that fails is named)."""
    if all(item.dim() == 1 for item in data):
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            pass
    return [decode(item, path, device) for item, path in zip(data, paths)]


def collate(batch):
    """Keeps the variable-size data of the 'gpu' mode (file bytes, decoded images) as a list."""
    samples, labels = zip(*batch)
    if isinstance(samples[0], dict):
        return ({'data': [s['data'] for s in samples], 'path': [s['path'] for s in samples],
                 'box': torch.stack([s['box'] for s in samples]),
                 'flip': torch.tensor([s['flip'] for s in samples])},
                torch.tensor(labels))
    return default_collate(batch)


def to_network_input(batch, device, width):
    """A loader batch of either mode -> float network input on `device`."""
    if isinstance(batch, dict):
        decoded = decode_batch(batch['data'], batch['path'], device)
        images = torch.stack([crop_resize_flip(image.to(device), box.tolist(), bool(flip), width)
                              for image, box, flip in zip(decoded, batch['box'], batch['flip'])])
    else:
        images = batch.to(device, non_blocking=True)
    return normalise(images)
