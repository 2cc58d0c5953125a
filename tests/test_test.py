"""test.py on a checkpoint of a tiny run trained on a CUB-200-2011 subset made here, in the
official layout, beside a Stanford Online Products folder holding the same test images."""
import os

import numpy as np
import pytest
from PIL import Image

import MMSI_train
import test as evaluate_script
from tiny_run import metrics, run_args

TRAIN_CLASSES, TEST_CLASSES, IMAGES_PER_CLASS = (1, 2), (3, 4, 5), 4
SHARED_KEYS = ('R@1', 'MAP@R', 'R-Precision', 'NMI')  # the Ks of Recall@K differ by data set


def make_cub_and_sop(root):
    """`root/CUB_200_2011` (images.txt, image_class_labels.txt, images/) and `root/Products`
    (Ebay_train.txt, Ebay_test.txt): the same images, labels and order in both."""
    rng = np.random.default_rng(0)
    cub, sop = root / 'CUB_200_2011', root / 'Products'
    items = []  # (image id, class, path under the folder)
    for label in TRAIN_CLASSES + TEST_CLASSES:
        colour = rng.integers(0, 256, 3)
        for n in range(IMAGES_PER_CLASS):
            path = f'{label:03d}.class/{n}.png'
            pixels = np.clip(colour + rng.normal(0, 40, (72, 72, 3)), 0, 255).astype(np.uint8)
            for folder in (cub / 'images', sop):
                os.makedirs(folder / os.path.dirname(path), exist_ok=True)
                Image.fromarray(pixels).save(folder / path)
            items.append((len(items) + 1, label, path))
    (cub / 'images.txt').write_text(''.join(f'{i} {path}\n' for i, _, path in items))
    (cub / 'image_class_labels.txt').write_text(''.join(f'{i} {c}\n' for i, c, _ in items))
    for name, classes in (('Ebay_train.txt', TRAIN_CLASSES), ('Ebay_test.txt', TEST_CLASSES)):
        (sop / name).write_text('image_id class_id super_class_id path\n' + ''.join(
            f'{i} {c} 1 {path}\n' for i, c, path in items if c in classes))


@pytest.fixture(scope='module')
def cub_run(tmp_path_factory):
    """(data root, run folder) of a finished one-epoch run on the CUB subset (seed 5,
    --dim 32)."""
    root = tmp_path_factory.mktemp('cub_and_sop')
    make_cub_and_sop(root)
    save_dir = root / 'run'
    args = run_args(str(root), save_dir, '--seed', '5', '--dim', '32', '--eval_first', '0',
                    epochs=1)
    args[args.index('--data') + 1] = 'cub'
    assert MMSI_train.main(args) == 0
    return root, save_dir


def evaluated(cub_run, *flags):
    root, save_dir = cub_run
    return evaluate_script.evaluate_checkpoint(
        ['--resume', str(save_dir / 'last.pth.tar'), '--data_root', str(root), *flags])


def test_a_checkpoint_evaluates_to_the_numbers_its_training_recorded(cub_run, capsys):
    scores = evaluated(cub_run)
    last = metrics(cub_run[1])[-1]
    assert set(scores) == {f'R@{k}' for k in (1, 2, 4, 8, 16, 32)} | {
        'MAP@R', 'R-Precision', 'NMI', 'test_images'}
    for key, value in scores.items():  # NMI included: k-means seeded with the run's seed
        assert value == pytest.approx(last[key], abs=1e-6), key
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f'{cub_run[1] / "last.pth.tar"} (epoch 1) on ')
    assert f'R@1 {last["R@1"]:.4f}' in out[0]


def test_another_data_set_is_evaluated_with_the_network_as_trained(cub_run, capsys):
    on_cub = evaluated(cub_run)
    capsys.readouterr()
    on_sop = evaluated(cub_run, '--data', 'product')
    out = capsys.readouterr().out.splitlines()
    assert out[0] == 'Note: evaluating on product with the network as trained on cub (max pooling)'
    assert len(out) == 2 and 'Products' in out[1]
    # the same images through the same network (max pooling, not SOP's max + average)
    assert {f'R@{k}' for k in (1, 10, 100, 1000)} <= set(on_sop)
    assert {key: on_sop[key] for key in SHARED_KEYS} == pytest.approx(
        {key: on_cub[key] for key in SHARED_KEYS}, abs=1e-6)


@pytest.mark.parametrize('flag, value, trained', [('--dim', '64', '32'),
                                                  ('--net', 'ResNet50', 'BN_Inception')])
def test_a_network_other_than_the_checkpoints_is_refused(cub_run, capsys, flag, value,
                                                         trained):
    root, save_dir = cub_run
    resume = save_dir / 'last.pth.tar'
    assert evaluate_script.main(['--resume', str(resume), '--data_root', str(root),
                                 flag, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    assert captured.err.splitlines() == [
        f'error: {flag} {value}: {resume} was trained with {flag} {trained}; test.py '
        f'evaluates the network as trained (leave {flag} out)']
