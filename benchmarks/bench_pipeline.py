"""Images per second of the training input pipeline on one CPU core: the PIL reference
(Resize, RandomResizedCrop, flip, BGR/mean) against the tensor pipeline (torchvision.io decode,
one resized crop), and on a GPU the 'gpu' mode (nvJPEG batch decode and crops on the device).

    python benchmarks/bench_pipeline.py [--sizes 500x375,800x600 --images 200]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DataSet.image_list import ImageList  # noqa: E402
from DataSet.tensor_pipeline import EncodedImageList, collate, to_network_input  # noqa: E402
from DataSet.transforms import train_transform  # noqa: E402


def write_images(folder, size, count):
    rng = np.random.default_rng(0)
    width, height = size
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    paths = []
    for i in range(count):  # photo-like: smooth content with some noise, quality 90
        image = Image.fromarray(base).resize((width, height), Image.BILINEAR)
        pixels = np.asarray(image).astype(np.int16) + rng.integers(-8, 8, (height, width, 3))
        path = os.path.join(folder, f'{width}x{height}_{i}.jpg')
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def images_per_second(load, count):
    load(0)
    tic = time.perf_counter()
    for index in range(count):
        load(index)
    return count / (time.perf_counter() - tic)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--sizes', default='500x375,800x600')
    parser.add_argument('--images', type=int, default=200)
    parser.add_argument('--width', type=int, default=227)
    parser.add_argument('--batch', type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one loader worker = one core
    print(f'# one CPU core, torch {torch.__version__}, crop {args.width}, origin_width 256')
    print('| image size | PIL reference (img/s) | tensor pipeline (img/s) | speed-up |'
          + (' gpu mode, batch (img/s) |' if torch.cuda.is_available() else ''))
    print('|---|---|---|---|' + ('---|' if torch.cuda.is_available() else ''))
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes.split(','):
            width, height = map(int, size.split('x'))
            paths = write_images(folder, (width, height), args.images)
            labels = [0] * len(paths)
            pil = ImageList(paths, labels, train_transform(args.width, 256, 0.16))
            tensor = EncodedImageList(ImageList(paths, labels), args.width, 256, 0.16, True)
            pil_rate = images_per_second(lambda i: pil[(i, i)], len(paths))
            tensor_rate = images_per_second(
                lambda i: to_network_input(tensor[(i, i)][0][None], 'cpu', args.width),
                len(paths))
            row = f'| {size} | {pil_rate:.0f} | {tensor_rate:.0f} | {tensor_rate / pil_rate:.2f}x |'
            if torch.cuda.is_available():
                gpu = EncodedImageList(ImageList(paths, labels), args.width, 256, 0.16, True,
                                       mode='gpu')
                batches = [collate([gpu[(i, i)] for i in range(s, s + args.batch)])[0]
                           for s in range(0, len(paths) - args.batch + 1, args.batch)]
                to_network_input(batches[0], 'cuda', args.width)
                torch.cuda.synchronize()
                tic = time.perf_counter()
                for batch in batches:
                    to_network_input(batch, 'cuda', args.width)
                torch.cuda.synchronize()
                row += f' {len(batches) * args.batch / (time.perf_counter() - tic):.0f} |'
            print(row, flush=True)


if __name__ == '__main__':
    main()
