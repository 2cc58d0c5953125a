"""Loaders read tiny data sets written in each official on-disk format."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

import DataSet
from DataSet.transforms import eval_transform, train_transform
from common.errors import InputError

IMAGES_PER_CLASS = 3


def write_jpeg(path, color=(120, 60, 30), size=(40, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new('RGB', size, color).save(path, quality=95)


def make_cub(root, num_classes=4, folder='CUB_200_2011'):
    base = root / folder
    lines, labels, image_id = [], [], 0
    for class_id in range(1, num_classes + 1):
        for k in range(IMAGES_PER_CLASS):
            image_id += 1
            rel = f'{class_id:03d}.Bird_{class_id}/Bird_{class_id}_{k:04d}.jpg'
            write_jpeg(str(base / 'images' / rel), color=(10 * class_id, 20, 30))
            lines.append(f'{image_id} {rel}')
            labels.append(f'{image_id} {class_id}')
    (base / 'images.txt').write_text('\n'.join(lines) + '\n')
    (base / 'image_class_labels.txt').write_text('\n'.join(labels) + '\n')
    (base / 'train_test_split.txt').write_text(''.join(f'{i} 1\n' for i in range(1, image_id + 1)))
    return base


def make_cars(root, num_classes=4):
    base = root / 'Cars196'
    records = []
    for class_id in range(1, num_classes + 1):
        for k in range(IMAGES_PER_CLASS):
            rel = f'car_ims/{len(records) + 1:06d}.jpg'
            write_jpeg(str(base / rel))
            records.append((rel, 1, 2, 30, 20, class_id, k % 2))
    fields = ['relative_im_path', 'bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'test']
    annotations = np.zeros((1, len(records)), dtype=[(f, 'O') for f in fields])
    for i, record in enumerate(records):
        for field, value in zip(fields, record):
            annotations[0, i][field] = np.array([[value]]) if field != fields[0] else value
    savemat(str(base / 'cars_annos.mat'),
            {'annotations': annotations, 'class_names': np.array([['a', 'b', 'c', 'd']], 'O')})
    return base


def make_sop(root, folder='Stanford_Online_Products'):
    base = root / folder
    header = 'image_id class_id super_class_id path\n'
    rows = {'Ebay_train.txt': [(1, 1, 'bicycle_final'), (2, 1, 'bicycle_final'),
                               (3, 2, 'chair_final'), (4, 2, 'chair_final')],
            'Ebay_test.txt': [(1, 11319, 'bicycle_final'), (2, 11319, 'bicycle_final'),
                              (3, 11320, 'chair_final')]}
    for name, entries in rows.items():
        lines = []
        for image_id, class_id, super_folder in entries:
            rel = f'{super_folder}/{class_id}_{image_id}.JPG'
            write_jpeg(str(base / rel))
            lines.append(f'{image_id} {class_id} {1 if "bicycle" in super_folder else 2} {rel}')
        (base / name).write_text(header + '\n'.join(lines) + '\n')
    return base


def test_cub_layout_images_labels_and_class_split(tmp_path):
    base = make_cub(tmp_path)
    data = DataSet.create('cub', root=str(tmp_path), width=16, origin_width=20)
    assert sorted(set(data.train.labels)) == [1, 2]
    assert sorted(set(data.gallery.labels)) == [3, 4]
    assert len(data.train) == len(data.gallery) == 2 * IMAGES_PER_CLASS
    assert data.train.images[0] == os.path.join(str(base), 'images',
                                                '001.Bird_1/Bird_1_0000.jpg')
    assert data.train.Index == {1: [0, 1, 2], 2: [3, 4, 5]}
    image, label = data.gallery[4]
    assert label == 4 and image.shape == (3, 16, 16)
    # a data set without a query set, read without held-out classes: both there, both None
    assert data.query is None and data.holdout is None
    assert (data.name, data.source) == ('cub', str(base))


def test_cub_split_is_first_half_of_200_classes(tmp_path):
    make_cub(tmp_path, num_classes=200)
    data = DataSet.create('cub', root=str(tmp_path))
    assert sorted(set(data.train.labels)) == list(range(1, 101))
    assert sorted(set(data.gallery.labels)) == list(range(101, 201))


def test_cars_mat_file(tmp_path):
    make_cars(tmp_path)
    data = DataSet.create('car', root=str(tmp_path), width=16, origin_width=20)
    assert sorted(set(data.train.labels)) == [1, 2]
    assert sorted(set(data.gallery.labels)) == [3, 4]
    assert data.train.images[0].endswith(os.path.join('Cars196', 'car_ims', '000001.jpg'))
    assert data.train[0][0].shape == (3, 16, 16)


@pytest.mark.parametrize('folder', ['Products', 'Stanford_Online_Products'])
def test_sop_ebay_files_with_header(tmp_path, folder):
    make_sop(tmp_path, folder)
    data = DataSet.create('product', root=str(tmp_path), width=16, origin_width=20)
    assert data.train.labels == [1, 1, 2, 2]
    assert data.gallery.labels == [11319, 11319, 11320]
    assert data.gallery.images[2].endswith(os.path.join('chair_final', '11320_3.JPG'))


def test_list_files_take_precedence_in_both_forms(tmp_path):
    base = make_cub(tmp_path)
    (base / 'train.txt').write_text('images/001.Bird_1/Bird_1_0000.jpg 0\n'
                                    'images/002.Bird_2/Bird_2_0001.jpg 7\n')
    (base / 'test.txt').write_text('image_id class_id super_class_id path\n'
                                   '1 3 1 images/003.Bird_3/Bird_3_0000.jpg\n'
                                   '2 4 1 images/004.Bird_4/Bird_4_0002.jpg\n')
    data = DataSet.create('cub', root=str(tmp_path))
    assert data.train.labels == [0, 7]
    assert data.train.images[1] == os.path.join(str(base), 'images/002.Bird_2/Bird_2_0001.jpg')
    assert data.gallery.labels == [3, 4]
    assert 'train.txt' in data.source


def test_known_pixel_through_bgr_and_mean():
    rgb = Image.new('RGB', (50, 40), (200, 100, 50))
    expected = torch.tensor([50 - 104.0, 100 - 117.0, 200 - 128.0]).view(3, 1, 1)
    out = eval_transform(width=24, origin_width=32)(rgb)
    assert out.shape == (3, 24, 24)
    assert torch.allclose(out, expected.expand(3, 24, 24), atol=1e-4)
    out = train_transform(width=24, origin_width=32, ratio=0.16)(rgb)
    assert out.shape == (3, 24, 24)
    assert torch.allclose(out, expected.expand(3, 24, 24), atol=1e-4)


def test_eval_transform_resizes_shorter_side_then_centre_crops():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 40:] = 255  # right half white
    out = eval_transform(width=20, origin_width=20)(Image.fromarray(image))
    # resized to 20 x 40; the centre crop spans columns 10..29, white from column 20 of 40
    assert out.shape == (3, 20, 20)
    assert out[0, :, :9].max() < 0 and out[0, :, 11:].min() > 100


def test_seeded_augmentation_is_reproducible_and_leaves_global_rng_alone(tmp_path):
    base = make_cub(tmp_path)
    noise = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(base / 'images/001.Bird_1/Bird_1_0000.jpg')
    data = DataSet.create('cub', root=str(tmp_path), width=16, origin_width=20, ratio=0.1)
    state = torch.get_rng_state()
    first, second = data.train[(0, 12345)][0], data.train[(0, 12345)][0]
    assert torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), state)
    crops = {tuple(data.train[(0, seed)][0].flatten()[:50].tolist()) for seed in range(20)}
    assert len(crops) > 10


def test_missing_dataset_folder_names_the_path(tmp_path):
    with pytest.raises(InputError, match='CUB_200_2011'):
        DataSet.create('cub', root=str(tmp_path))
    with pytest.raises(InputError, match='Products or .*Stanford_Online_Products'):
        DataSet.create('product', root=str(tmp_path))


def test_unknown_dataset_name():
    with pytest.raises(InputError, match="--data 'birds' is unknown"):
        DataSet.create('birds')


@pytest.mark.parametrize('maker,missing', [(make_cub, 'image_class_labels.txt'),
                                           (make_cub, 'images.txt'),
                                           (make_cars, 'cars_annos.mat'),
                                           (make_sop, 'Ebay_test.txt')])
def test_missing_annotation_file_names_it(tmp_path, maker, missing):
    base = maker(tmp_path)
    os.remove(base / missing)
    name = {make_cub: 'cub', make_cars: 'car', make_sop: 'product'}[maker]
    with pytest.raises(InputError, match=f'annotation file not found: .*{missing}'):
        DataSet.create(name, root=str(tmp_path))


def test_malformed_annotations_name_file_and_line(tmp_path):
    base = make_cub(tmp_path)
    with open(base / 'image_class_labels.txt', 'a') as f:
        f.write('thirteen 2\n')
    with pytest.raises(InputError, match=r'image_class_labels.txt, line 13'):
        DataSet.create('cub', root=str(tmp_path))


def test_malformed_mat_file(tmp_path):
    base = make_cars(tmp_path)
    savemat(str(base / 'cars_annos.mat'), {'something_else': np.zeros(3)})
    with pytest.raises(InputError, match='cars_annos.mat: expected .*annotations'):
        DataSet.create('car', root=str(tmp_path))


def test_listed_image_that_does_not_exist(tmp_path):
    base = make_cub(tmp_path)
    os.remove(base / 'images/003.Bird_3/Bird_3_0001.jpg')
    with pytest.raises(InputError, match='missing, first: .*Bird_3_0001.jpg'):
        DataSet.create('cub', root=str(tmp_path))


def test_corrupt_image_names_the_file(tmp_path):
    base = make_cub(tmp_path)
    bad = base / 'images/001.Bird_1/Bird_1_0001.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
    data = DataSet.create('cub', root=str(tmp_path))
    with pytest.raises(InputError, match='cannot decode image .*Bird_1_0001.jpg'):
        data.train[1]
