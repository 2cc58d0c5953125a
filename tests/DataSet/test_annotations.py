"""Every reader refuses inconsistent annotations with one line naming the file, the line and what
was expected, before anything is written; a subset of the official classes is announced. The
data sets are written here in their official on-disk formats."""
import codecs
import os
import re

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

import DataSet
import MMSI_train
from DataSet import readers
from common.errors import InputError

from tiny_inshop import make_inshop


def write_image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new('RGB', (8, 8), (90, 60, 30)).save(path)


def write_lines(path, lines, encoding='utf-8'):
    with open(path, 'w', encoding=encoding) as f:
        f.write(''.join(f'{line}\n' for line in lines))


def write_cub(root, classes=(1, 2, 3, 4), per_class=2, images=True):
    """CUB_200_2011/images.txt, image_class_labels.txt and images/ (`images=False`: the two
    files alone)."""
    base = root / 'CUB_200_2011'
    base.mkdir(parents=True)
    paths, labels = [], []
    for class_id in classes:
        for k in range(per_class):
            image_id = len(paths) + 1
            rel = f'{class_id:03d}.Bird_{class_id}/Bird_{class_id}_{k:04d}.jpg'
            if images:
                write_image(base / 'images' / rel)
            paths.append(f'{image_id} {rel}')
            labels.append(f'{image_id} {class_id}')
    write_lines(base / 'images.txt', paths)
    write_lines(base / 'image_class_labels.txt', labels)
    return base


def append(path, *lines):
    with open(path, 'a', encoding='utf-8') as f:
        f.write(''.join(f'{line}\n' for line in lines))


def edit_line(path, number, new):
    lines = path.read_text().splitlines()
    lines[number - 1] = new
    write_lines(path, lines)


def refusal(name, root):
    """The message of the InputError reading data set `name` under `root` gives: one line."""
    with pytest.raises(InputError) as caught:
        DataSet.read_splits(name, str(root))
    message = str(caught.value)
    assert '\n' not in message
    return message


# ---- CUB-200-2011 layout --------------------------------------------------------------------

def test_a_consistent_cub_layout_reads_as_before(tmp_path):
    base = write_cub(tmp_path)
    splits = DataSet.read_splits('cub', str(tmp_path))
    assert [label for _, label in splits.train] == [1, 1, 2, 2]
    assert [label for _, label in splits.gallery] == [3, 3, 4, 4]
    assert splits.train[0][0] == str(base / 'images' / '001.Bird_1' / 'Bird_1_0000.jpg')


def test_a_repeated_image_id_with_another_path_is_refused(tmp_path):
    # today's reader let the last line win: a test photo trained under another class
    base = write_cub(tmp_path)
    append(base / 'images.txt', '7 001.Bird_1/Bird_1_0001.jpg')
    message = refusal('cub', tmp_path)
    assert message == (f'{base / "images.txt"}, line 9: image id 7 is listed again (first on '
                       f'line 7); expected each image id once')


def test_one_image_under_two_ids_is_refused(tmp_path):
    base = write_cub(tmp_path)
    edit_line(base / 'images.txt', 7, '7 001.Bird_1/Bird_1_0000.jpg')
    assert refusal('cub', tmp_path) == (
        f'{base / "images.txt"}, line 7: 001.Bird_1/Bird_1_0000.jpg is listed again (first on '
        f'line 1); expected each image once')


def test_a_second_label_of_an_image_is_refused(tmp_path):
    # '1 5' appended: image 1 (class 1) would also be a test image of class 5
    base = write_cub(tmp_path, classes=(1, 2, 3, 4, 5, 6))
    append(base / 'image_class_labels.txt', '1 5')
    assert refusal('cub', tmp_path) == (
        f'{base / "image_class_labels.txt"}, line 13: image id 1 is listed again (first on '
        f'line 1); expected each image id once')


def test_the_test_lines_appended_twice_are_refused(tmp_path):
    # every test image twice in the gallery: each query finds its own copy (R@1 = 1.0)
    base = write_cub(tmp_path)
    labels = base / 'image_class_labels.txt'
    append(labels, *labels.read_text().splitlines()[4:])
    assert 'line 9: image id 5 is listed again (first on line 5)' in refusal('cub', tmp_path)


def test_a_label_typed_0_is_refused_not_moving_a_class_into_the_test(tmp_path):
    base = write_cub(tmp_path)
    edit_line(base / 'image_class_labels.txt', 3, '3 0')
    assert refusal('cub', tmp_path) == (
        f"{base / 'image_class_labels.txt'}, line 3: expected a class id, an integer from 1 to "
        f"200, got '0'")


def test_a_label_file_cut_short_is_refused(tmp_path):
    # today: the unlabelled images vanished and the split moved to the classes left
    base = write_cub(tmp_path, classes=range(1, 11))
    labels = base / 'image_class_labels.txt'
    write_lines(labels, labels.read_text().splitlines()[:12])
    assert refusal('cub', tmp_path) == (
        f'{labels}: no class for 8 image(s) of images.txt, first: id 13 (images.txt, line 13); '
        f'expected a line "<id> <class id>" for every image (a file cut short?)')


def test_a_label_without_an_image_is_refused(tmp_path):
    base = write_cub(tmp_path)
    append(base / 'image_class_labels.txt', '9 4')
    assert 'line 9: image id 9 is not listed in images.txt' in refusal('cub', tmp_path)


@pytest.mark.parametrize('label', ['201', '-3', '--3', '+5', '\u00b2', '\u0663', '2.0', '3e1',
                                   '12345678901234567890', '9' * 5000, '2 extra'])
def test_odd_class_ids_are_refused_with_file_and_line(tmp_path, label):
    base = write_cub(tmp_path)
    edit_line(base / 'image_class_labels.txt', 2, f'2 {label}')
    assert refusal('cub', tmp_path).startswith(
        f'{base / "image_class_labels.txt"}, line 2: expected a class id, an integer from 1 '
        f'to 200, got ')


@pytest.mark.parametrize('image_id', ['\u00b2', '-2', '99999999999999999999', 'two'])
def test_odd_image_ids_are_refused(tmp_path, image_id):
    base = write_cub(tmp_path)
    edit_line(base / 'images.txt', 2, f'{image_id} 001.Bird_1/Bird_1_0001.jpg')
    assert refusal('cub', tmp_path).startswith(
        f'{base / "images.txt"}, line 2: expected "<id> <path>" with the id an integer')


def test_leading_zeros_and_a_utf8_byte_order_mark_are_accepted(tmp_path):
    base = write_cub(tmp_path)
    expected = DataSet.read_splits('cub', str(tmp_path))
    labels = base / 'image_class_labels.txt'
    edit_line(labels, 1, '0001 001')
    for path in (base / 'images.txt', labels):
        path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    assert DataSet.read_splits('cub', str(tmp_path))[:3] == expected[:3]


@pytest.mark.parametrize('encoding, expected', [
    ('latin-1', r'images.txt, line 2: byte 0xe9 is not UTF-8; expected a UTF-8 text file'),
    ('utf-16', r'images.txt: UTF-16 text or binary data; expected a UTF-8 text file'),
    ('utf-16-le', r'images.txt: UTF-16 text or binary data; expected a UTF-8 text file')])
def test_annotation_files_in_another_encoding_are_refused(tmp_path, encoding, expected):
    base = write_cub(tmp_path)
    lines = (base / 'images.txt').read_text().splitlines()
    lines[1] = lines[1].replace('Bird_1_0001', 'Bird_\u00e9')
    write_lines(base / 'images.txt', lines, encoding)
    assert expected in refusal('cub', tmp_path)


# ---- the split's announcement ---------------------------------------------------------------

def test_a_subset_of_classes_is_announced_and_still_splits_in_halves(tmp_path):
    base = write_cub(tmp_path, classes=(1, 2, 3, 7, 8, 9))
    splits = DataSet.read_splits('cub', str(tmp_path))
    assert sorted({label for _, label in splits.train}) == [1, 2, 3]
    assert splits.notes == (f'{base}: 6 classes found (1-3, 7-9), not the 200 of CUB-200-2011: '
                            f'training on the 3 classes 1-3, testing on the 3 classes 7-9',)


def test_the_official_classes_are_not_announced(tmp_path):
    base = write_cub(tmp_path, classes=range(1, 201), per_class=1, images=False)
    sets = readers.read_cub_layout(str(base))
    train, test = sets
    assert sets.notes == () and len(train) == len(test) == 100


def test_the_announcement_is_in_the_log_of_a_run(finished_run, glyphs_root):
    # conftest's Glyphs subset: classes 1-6 and 101-106 of the CUB layout's 200
    log = (finished_run / 'log.txt').read_text().splitlines()
    notes = [line for line in log if 'classes found' in line]
    assert notes == [f'Note: {os.path.join(glyphs_root, "Glyphs")}: 12 classes found (1-6, '
                     f'101-106), not the 200 of CUB-200-2011: training on the 6 classes 1-6, '
                     f'testing on the 6 classes 101-106']


# ---- end to end: the silent wrong results are one line, exit 2, nothing written -------------

def repeat_an_id(base):
    append(base / 'images.txt', '7 001.Bird_1/Bird_1_0001.jpg')


def add_a_second_label(base):
    append(base / 'image_class_labels.txt', '1 3')


def append_the_test_lines(base):
    labels = base / 'image_class_labels.txt'
    append(labels, *labels.read_text().splitlines()[4:])


def type_a_zero(base):
    edit_line(base / 'image_class_labels.txt', 8, '8 0')


def cut_the_label_file(base):
    labels = base / 'image_class_labels.txt'
    write_lines(labels, labels.read_text().splitlines()[:5])


@pytest.mark.parametrize('damage, message', [
    (repeat_an_id, r'images.txt, line 9: image id 7 is listed again'),
    (add_a_second_label, r'image_class_labels.txt, line 9: image id 1 is listed again'),
    (append_the_test_lines, r'image_class_labels.txt, line 9: image id 5 is listed again'),
    (type_a_zero, r"image_class_labels.txt, line 8: expected a class id, .* got '0'"),
    (cut_the_label_file, r'image_class_labels.txt: no class for 3 image\(s\) of images.txt')])
def test_a_damaged_annotation_stops_the_run_before_anything_is_written(tmp_path, capsys, damage,
                                                                       message):
    damage(write_cub(tmp_path))
    save_dir = tmp_path / 'run'
    assert MMSI_train.main(['--data', 'cub', '--data_root', str(tmp_path), '--save_dir',
                            str(save_dir), '--pretrained', 'none', '--batch_size', '4',
                            '--num_instances', '2', '--nThreads', '0']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ')
    assert re.search(message, err[0]), err[0]
    assert not save_dir.exists()


# ---- Cars-196: cars_annos.mat ---------------------------------------------------------------

def write_cars(root, classes=(1, 1, 2, 2, 3, 3, 4, 4), paths=None):
    """Cars196/cars_annos.mat as the distribution stores it: a 1 x N struct array
    `annotations` (relative_im_path, bbox, class, test), and car_ims/."""
    base = root / 'Cars196'
    paths = paths or [f'car_ims/{i:06d}.jpg' for i in range(1, len(classes) + 1)]
    fields = ['relative_im_path', 'bbox_x1', 'class', 'test']
    annotations = np.zeros((1, len(classes)), dtype=[(field, 'O') for field in fields])
    for i, (path, class_id) in enumerate(zip(paths, classes)):
        if path:
            write_image(str(base / path))
        annotations[0, i]['relative_im_path'] = path
        annotations[0, i]['bbox_x1'] = np.array([[3]], np.uint8)
        annotations[0, i]['class'] = (np.zeros((0, 0)) if class_id is None else
                                      np.array([[class_id]]))
        annotations[0, i]['test'] = np.array([[i % 2]], np.uint8)
    savemat(str(base / 'cars_annos.mat'), {'annotations': annotations})
    return base


def test_cars_classes_stored_as_uint8_or_double_read_alike(tmp_path):
    write_cars(tmp_path, classes=[np.uint8(c) for c in (1, 1, 2, 2)] + [3.0, 3.0, 4.0, 4.0])
    splits = DataSet.read_splits('car', str(tmp_path))
    assert [label for _, label in splits.gallery] == [3, 3, 4, 4]
    assert splits.notes[0].endswith('4 classes found (1-4), not the 196 of Cars-196: training '
                                    'on the 2 classes 1-2, testing on the 2 classes 3-4')


@pytest.mark.parametrize('value', [2.5, np.inf, -np.inf, np.nan, 0, 197, -3, 1e30, 'two',
                                   None])
def test_a_bad_cars_class_is_refused_naming_the_annotation(tmp_path, value):
    base = write_cars(tmp_path, classes=(1, 1, 2, value, 3, 3, 4, 4))
    message = refusal('car', tmp_path)
    assert message.startswith(f'{base / "cars_annos.mat"}, annotation 4: ')
    assert 'expected' in message and 'from 1 to 196' in message


def test_a_cars_image_listed_twice_or_without_a_path_is_refused(tmp_path):
    paths = [f'car_ims/{i:06d}.jpg' for i in (1, 2, 3, 4, 5, 6, 7, 3)]
    base = write_cars(tmp_path, paths=paths)
    assert refusal('car', tmp_path) == (f'{base / "cars_annos.mat"}, annotation 8: '
                                        f'car_ims/000003.jpg is listed again (first on '
                                        f'annotation 3); expected each image once')
    write_cars(tmp_path, paths=paths[:5] + ['', 'car_ims/000007.jpg', 'car_ims/000008.jpg'])
    assert 'annotation 6: no image path' in refusal('car', tmp_path)


def write_v73_header(path):
    """The first bytes of a MATLAB v7.3 file: a 128-byte MAT header (text, subsystem offset,
    version 0x0200, endianness), zeros up to byte 512, then the HDF5 signature."""
    text = b'MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5'
    header = text.ljust(116, b' ') + bytes(8) + b'\x00\x02IM'
    path.write_bytes(header.ljust(512, b'\x00') + b'\x89HDF\r\n\x1a\n' + bytes(64))


def test_empty_cut_short_and_v73_mat_files_are_one_line(tmp_path):
    base = write_cars(tmp_path)
    mat = base / 'cars_annos.mat'
    whole = mat.read_bytes()
    for cut in (10, 100, len(whole) // 2, len(whole) - 9):
        mat.write_bytes(whole[:cut])
        message = refusal('car', tmp_path)
        assert message.startswith(f'{mat}: cannot be read as a MATLAB file (')
        assert 'cut short or damaged?' in message
    mat.write_bytes(b'')
    assert refusal('car', tmp_path).startswith(f'{mat}: the file is empty; expected a MATLAB')
    write_v73_header(mat)
    assert refusal('car', tmp_path) == (
        f"{mat}: a MATLAB v7.3 (HDF5) file, which scipy cannot read; save it again in the v7 "
        f"format (in MATLAB or Octave: load it, then save('cars_annos.mat', 'annotations', "
        f"'-v7'))")


# ---- Stanford Online Products: Ebay_train.txt / Ebay_test.txt -------------------------------

SOP_HEADER = 'image_id class_id super_class_id path'


def write_sop(root, header=True):
    base = root / 'Stanford_Online_Products'
    rows = {'Ebay_train.txt': [(1, 1), (2, 1), (3, 2), (4, 2)],
            'Ebay_test.txt': [(1, 11319), (2, 11319), (3, 11320), (4, 11320)]}
    for name, entries in rows.items():
        lines = [SOP_HEADER] if header else []
        for image_id, class_id in entries:
            rel = f'bicycle_final/{class_id}_{image_id}.JPG'
            write_image(str(base / rel))
            lines.append(f'{image_id} {class_id} 1 {rel}')
        write_lines(base / name, lines)
    return base


def test_sop_without_header_and_with_a_byte_order_mark_keeps_its_first_image(tmp_path):
    base = write_sop(tmp_path, header=False)
    train = base / 'Ebay_train.txt'
    train.write_bytes(codecs.BOM_UTF8 + train.read_bytes())
    splits = DataSet.read_splits('product', str(tmp_path))
    assert [label for _, label in splits.train] == [1, 1, 2, 2] and splits.notes == ()


@pytest.mark.parametrize('edit, message', [
    (lambda b: append(b / 'Ebay_test.txt', '4 11320 1 bicycle_final/11320_3.JPG'),
     r'Ebay_test.txt, line 6: image id 4 is listed again \(first on line 5\)'),
    (lambda b: append(b / 'Ebay_test.txt', *(b / 'Ebay_test.txt').read_text().splitlines()[1:]),
     r'Ebay_test.txt, line 6: image id 1 is listed again \(first on line 2\)'),
    (lambda b: append(b / 'Ebay_test.txt', '5 11320 1 bicycle_final/11320_3.JPG'),
     r'Ebay_test.txt, line 6: bicycle_final/11320_3.JPG is listed again \(first on line 4\)'),
    (lambda b: append(b / 'Ebay_train.txt', '5 11319 1 bicycle_final/11319_1.JPG'),
     'Ebay_test.txt, line 2: bicycle_final/11319_1.JPG is also in the training set'),
    (lambda b: append(b / 'Ebay_test.txt', '5 2 1 bicycle_final/2_9.JPG'),
     'Ebay_test.txt, line 6: class 2 is also a training class'),
    (lambda b: edit_line(b / 'Ebay_train.txt', 3, '2 0 1 bicycle_final/1_2.JPG'),
     "Ebay_train.txt, line 3: expected .* with the label a positive integer that fits in 64 "
     "bits, got '2 0 1 bicycle_final/1_2.JPG'"),
    (lambda b: edit_line(b / 'Ebay_train.txt', 3, '2 \u00b2 1 bicycle_final/1_2.JPG'),
     'Ebay_train.txt, line 3: expected'),
    (lambda b: edit_line(b / 'Ebay_train.txt', 3, '2 12345678901234567890 1 bicycle_final/1_2.JPG'),
     'Ebay_train.txt, line 3: expected'),
    (lambda b: (b / 'Ebay_test.txt').write_bytes(
        (b / 'Ebay_test.txt').read_text().replace('bicycle', 'v\u00e9lo').encode('latin-1')),
     'Ebay_test.txt, line 2: byte 0xe9 is not UTF-8'),
])
def test_sop_annotation_problems_are_refused(tmp_path, edit, message):
    edit(write_sop(tmp_path))
    assert re.search(message, refusal('product', tmp_path))


# ---- list files (train.txt / test.txt) ------------------------------------------------------

def test_list_files_refuse_an_image_in_both_and_odd_labels(tmp_path):
    base = write_cub(tmp_path)
    write_lines(base / 'train.txt', ['images/001.Bird_1/Bird_1_0000.jpg 0',
                                     'images/002.Bird_2/Bird_2_0000.jpg 1'])
    write_lines(base / 'test.txt', ['images/003.Bird_3/Bird_3_0000.jpg 2',
                                    'images/./001.Bird_1/Bird_1_0000.jpg 3'])
    assert refusal('cub', tmp_path) == (
        f'{base / "test.txt"}, line 2: images/./001.Bird_1/Bird_1_0000.jpg is also in the '
        f'training set ({base / "train.txt"}, line 1); expected each image in one set only')
    for label in ('-3', '\u00b2', '+1', '99999999999999999999'):
        write_lines(base / 'test.txt', [f'images/003.Bird_3/Bird_3_0000.jpg {label}'])
        assert refusal('cub', tmp_path) == (
            f'{base / "test.txt"}, line 1: expected "<path> <label>" or "<image_id> <class_id> '
            f'<super_class_id> <path>" with the label an integer from 0 up that fits in 64 '
            f"bits, got 'images/003.Bird_3/Bird_3_0000.jpg {label}'")
    write_lines(base / 'test.txt', ['images/003.Bird_3/Bird_3_0000.jpg 2'] * 2)
    assert 'test.txt, line 2: images/003.Bird_3/Bird_3_0000.jpg is listed again' in refusal(
        'cub', tmp_path)


# ---- In-Shop Clothes Retrieval ------------------------------------------------------------

def partition_of(base):
    return base / 'Eval' / 'list_eval_partition.txt'


def set_status(base, line, status):
    """Line `line` of the partition file given another evaluation status."""
    partition = partition_of(base)
    lines = partition.read_text().splitlines()
    fields = lines[line - 1].split()
    edit_line(partition, line, ' '.join(fields[:2] + [status]))


# make_inshop's partition: line 3-5 item 1 (train), 6-7 item 2 (train), 8 item 3 query,
# 9-10 item 3 gallery, 11-12 item 4 query, 13 item 4 gallery
@pytest.mark.parametrize('line, status, message', [
    (3, 'query', 'line 3: item id_00000001 is a query item here and a training item on line 4'),
    (6, 'gallery', 'line 6: item id_00000002 is a gallery item here and a training item on '
                   'line 7'),
    (13, 'query', 'line 11: query item id_00000004 has no gallery image; expected every query '
                  'item in the gallery too')])
def test_inshop_keeps_training_items_apart_and_answers_every_query(tmp_path, line, status,
                                                                  message):
    base, _ = make_inshop(tmp_path)
    DataSet.read_splits('shop', str(tmp_path))  # as written, accepted
    set_status(base, line, status)
    assert message in refusal('shop', tmp_path)


@pytest.mark.parametrize('item', ['id_00000000', 'id_\u00b2', 'id_123456789012345678901', 'id_',
                                  'id_+5'])
def test_inshop_odd_item_ids_are_refused(tmp_path, item):
    base, _ = make_inshop(tmp_path)
    fields = partition_of(base).read_text().splitlines()[5].split()
    edit_line(partition_of(base), 6, f'{fields[0]} {item} train')
    assert refusal('shop', tmp_path).startswith(
        f'{partition_of(base)}, line 6: expected "<image path> id_<number> train|query|gallery" '
        f'with the number a positive integer that fits in 64 bits')


def test_inshop_image_listed_twice_is_refused(tmp_path):
    base, _ = make_inshop(tmp_path)
    partition = partition_of(base)
    lines = partition.read_text().splitlines()
    write_lines(partition, ['12'] + lines[1:] + [lines[9].replace('gallery', 'query')])
    assert 'line 14: img/WOMEN/Blouses_Shirts/id_00000003/03_3_front.jpg is listed again ' \
           '(first on line 10)' in refusal('shop', tmp_path)


def test_inshop_list_files_need_a_gallery_image_for_every_query(tmp_path):
    base, _ = make_inshop(tmp_path)
    write_lines(base / 'train.txt', ['img/WOMEN/Dresses/id_00000001/01_1_front.jpg 0'])
    write_lines(base / 'gallery.txt', ['img/MEN/Tees_Tanks/id_00000004/03_3_front.jpg 7'])
    write_lines(base / 'query.txt', ['img/MEN/Tees_Tanks/id_00000004/01_1_front.jpg 7',
                                     'img/WOMEN/Blouses_Shirts/id_00000003/01_1_front.jpg 6'])
    assert refusal('shop', tmp_path) == (
        f'{base / "query.txt"}, line 2: query label 6 has no gallery image; expected every '
        f'query item in the gallery too (its queries could never be answered)')
    write_lines(base / 'query.txt', ['img/MEN/Tees_Tanks/id_00000004/03_3_front.jpg 7'])
    assert 'query.txt, line 1: img/MEN/Tees_Tanks/id_00000004/03_3_front.jpg is also in the ' \
           'gallery set' in refusal('shop', tmp_path)


# ---- what stands where an image should be ---------------------------------------------------

def test_a_directory_or_a_symlink_loop_is_named_as_such_not_missing(tmp_path):
    base = write_cub(tmp_path)
    image = base / 'images' / '002.Bird_2' / 'Bird_2_0001.jpg'
    image.unlink()
    image.mkdir()
    assert refusal('cub', tmp_path) == (f'1 image(s) listed in {base} are not image files (a '
                                        f'directory: 1), first: {image} (a directory)')
    image.rmdir()
    os.symlink(image, image)
    assert refusal('cub', tmp_path).endswith(f'first: {image} (a symbolic link loop)')
    image.unlink()
    os.symlink(tmp_path / 'elsewhere.jpg', image)
    os.remove(base / 'images' / '004.Bird_4' / 'Bird_4_0000.jpg')
    assert refusal('cub', tmp_path) == (
        f'2 image(s) listed in {base} are not image files (a broken symbolic link to '
        f'{tmp_path / "elsewhere.jpg"}: 1, missing: 1), first: {image} (a broken symbolic link '
        f'to {tmp_path / "elsewhere.jpg"})')
