"""Speed of `--check_images`: the header of every listed image of the full Glyphs set (8,000
JPEGs, generated on first use), read by 0 (the main process), 1, 2 ... loader workers.

    python benchmarks/bench_check_images.py [--root DataSet] [--workers 0 1 2]

Each count is timed twice: first with the image files evicted from the page cache
(posix_fadvise DONTNEED: read from the disk), then again (from the cache).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import DataSet  # noqa: E402
from DataSet.image_list import unreadable_images  # noqa: E402

SOP_IMAGES = 120_053


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--root', default='DataSet')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    args = parser.parse_args()
    dataset = DataSet.create('glyphs', args.root)
    paths = dataset.train.images + dataset.gallery.images
    print(f'# {len(paths)} images, {os.cpu_count()} CPUs')
    print('| workers | seconds, from disk / cached | images/s from disk | SOP (120,053 images) '
          'at that rate |')
    print('|---|---|---|---|')
    for workers in args.workers:
        seconds = []
        for cold in (True, False):
            if cold:
                evict(paths)
            tic = time.perf_counter()
            assert unreadable_images(paths, workers) == []
            seconds.append(time.perf_counter() - tic)
        rate = len(paths) / seconds[0]
        print(f'| {workers} | {" / ".join(f"{s:.2f}" for s in seconds)} | {rate:,.0f} | '
              f'{SOP_IMAGES / rate:.0f} s |')


def evict(paths):
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


if __name__ == '__main__':
    main()
