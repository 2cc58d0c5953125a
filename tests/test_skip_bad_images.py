"""--skip_bad_images end to end: an unreadable image leaves its set before the run starts, so
the metrics are those of the list without it; a training class left short is left out before
training; an image declaring too many pixels is one error line (or skipped); an error met while
the run reads its images also ends log.txt."""
import os
import re
import shutil
from pathlib import Path

import MMSI_train
from image_files import huge_header_png
from tiny_run import metrics, run_args

LIMIT_MESSAGE = 'declares 30000 x 30000 pixels, more than the limit of 100,000,000 ' \
                '(--max_image_pixels)'


def listing(glyphs_root):
    """[(image id, relative path, label)] of the Glyphs subset (the CUB layout)."""
    folder = os.path.join(glyphs_root, 'Glyphs')
    with open(os.path.join(folder, 'images.txt')) as f:
        paths = dict(line.split() for line in f)
    with open(os.path.join(folder, 'image_class_labels.txt')) as f:
        labels = dict(line.split() for line in f)
    return [(image_id, paths[image_id], int(labels[image_id])) for image_id in paths]


def write_copy(glyphs_root, root, rows):
    """A data root whose Glyphs folder lists `rows` and holds copies of their image files."""
    folder = root / 'Glyphs'
    for image_id, path, _ in rows:
        (folder / 'images' / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(glyphs_root, 'Glyphs', 'images', path),
                    folder / 'images' / path)
    (folder / 'images.txt').write_text(''.join(f'{i} {path}\n' for i, path, _ in rows))
    (folder / 'image_class_labels.txt').write_text(''.join(f'{i} {c}\n' for i, _, c in rows))
    return str(root)


def of_class(rows, label, count):
    return [row for row in rows if row[2] == label][:count]


def spoil(root, rows):
    """Make the image files of `rows` unreadable, in turn: garbage bytes, or cut short after a
    readable header (a header check passes it; decoding does not)."""
    for number, (_, path, _) in enumerate(rows):
        file = os.path.join(root, 'Glyphs', 'images', path)
        with open(file, 'rb') as f:
            data = f.read()
        with open(file, 'wb') as f:
            f.write(b'not an image' if number % 2 else data[:len(data) // 2])


def huge_header(root, row):
    """Replace the image of `row` by a PNG whose header declares 30000 x 30000 pixels."""
    return huge_header_png(Path(root) / 'Glyphs' / 'images' / row[1])


def data_line(save_dir):
    """The log's Data line without the folder it names."""
    line = next(line for line in (save_dir / 'log.txt').read_text().splitlines()
                if line.startswith('Data: '))
    return line.split(': ', 2)[2]


def without_times(rows):
    return [{key: value for key, value in row.items() if 'seconds' not in key} for row in rows]


def test_skipped_images_give_the_metrics_of_the_list_files_without_them(glyphs_root, tmp_path):
    rows = listing(glyphs_root)
    train_classes = sorted({label for *_, label in rows})[:6]
    test_classes = sorted({label for *_, label in rows})[6:]
    # two of the four images of three test classes, and one image of a training class
    # (3 left: --num_instances 3 keeps the class)
    bad = of_class(rows, train_classes[0], 1) + [
        row for label in test_classes[:3] for row in of_class(rows, label, 2)]
    skipping = write_copy(glyphs_root, tmp_path / 'skipping', rows)
    spoil(skipping, bad)
    removed = write_copy(glyphs_root, tmp_path / 'removed', [row for row in rows
                                                               if row not in bad])
    for root, name in ((skipping, 'skip'), (removed, 'listed')):
        assert MMSI_train.main(run_args(root, tmp_path / name, '--skip_bad_images', '1',
                                        epochs=1)) == 0
    # the same random network on the same images: the same numbers, R@K and NMI included
    assert without_times(metrics(tmp_path / 'skip')) == without_times(metrics(tmp_path / 'listed'))
    assert data_line(tmp_path / 'skip') == data_line(tmp_path / 'listed') == \
        '23 training images of 6 classes, 18 test images of 6 classes'
    evaluated = [row for row in metrics(tmp_path / 'skip') if 'R@1' in row]
    assert evaluated and all(row['test_images'] == 18 for row in evaluated)
    log = (tmp_path / 'skip' / 'log.txt').read_text()
    assert ('--skip_bad_images: 7 of the 48 listed images cannot be read and are left out, '
            'each with its label (images left out: training 1, test 6)') in log
    for _, path, _ in bad:
        assert len(re.findall(f'skipped: cannot decode image .*{re.escape(path)}', log)) == 1


def test_short_classes_and_huge_images_before_training(glyphs_root, tmp_path, capsys):
    rows = listing(glyphs_root)
    labels = sorted({label for *_, label in rows})
    root = write_copy(glyphs_root, tmp_path / 'data', rows)
    huge = huge_header(root, of_class(rows, labels[6], 1)[0])

    # a header declaring too many pixels: one line naming the file and the limit, nothing written
    assert MMSI_train.main(run_args(root, tmp_path / 'checked', epochs=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'error: 1 listed image(s) cannot be read (--check_images), first: '
                   f'image {huge} {LIMIT_MESSAGE}']
    assert not (tmp_path / 'checked').exists()
    # unchecked, it is met in a loader worker (the first evaluation): one line, which also ends
    # the log the run had opened
    assert MMSI_train.main(run_args(root, tmp_path / 'unchecked', '--check_images', '0',
                                    '--input_pipeline', 'tensor', '--nThreads', '1',
                                    epochs=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'error: image {huge} {LIMIT_MESSAGE}']
    assert (tmp_path / 'unchecked' / 'log.txt').read_text().splitlines()[-1] == err[0]

    # training classes left with 2 and 0 of their 4 images (--num_instances 3): left out, with a
    # note, before training; the huge image is skipped like any unreadable one
    spoil(root, of_class(rows, labels[1], 2) + of_class(rows, labels[2], 4))
    assert MMSI_train.main(run_args(root, tmp_path / 'skip', '--skip_bad_images', '1',
                                    '--check_images', '0', epochs=1)) == 0
    log = (tmp_path / 'skip' / 'log.txt').read_text()
    assert (f'2 training class(es) left with fewer than --num_instances 3 readable images are '
            f'left out of training (their batches would repeat images): class {labels[1]} '
            f'(2 of 4), class {labels[2]} (0 of 4)') in log
    assert f'skipped: image {huge} {LIMIT_MESSAGE}' in log
    assert data_line(tmp_path / 'skip') == \
        '16 training images of 4 classes, 23 test images of 6 classes'
    assert 'Training finished' in log
    # too few classes left for the batch: refused before anything is written
    capsys.readouterr()
    assert MMSI_train.main(run_args(root, tmp_path / 'refused', '--skip_bad_images', '1',
                                    '--batch_size', '15', epochs=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: --batch_size 15 asks for 5 classes of 3 images but the training set '
                   'has only 4 classes (--skip_bad_images left 2 training class(es) out: too '
                   'few readable images)']
    assert not (tmp_path / 'refused').exists()
