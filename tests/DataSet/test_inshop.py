"""In-Shop Clothes Retrieval (`--data shop`): the data set's own layout, the official code's list
files, `.query` / `.gallery`, and query-against-gallery metrics against a brute force."""
import os

import pytest
import torch
import torch.nn.functional as F

import DataSet
import evaluations
from DataSet.specs import SPECS
from common.errors import InputError

from tiny_inshop import make_inshop


def test_spec():
    spec = SPECS['shop']
    assert spec.recall_ks == (1, 10, 20, 30, 40, 50)
    assert spec.folders[0] == 'In_shop_clothes' and spec.has_query
    assert spec.pooling == 'max'
    assert evaluations.recall_ks_for('shop') == (1, 10, 20, 30, 40, 50)


@pytest.mark.parametrize('partition_in_eval, under_img', [(True, False), (False, True)])
def test_partition_file_gives_train_query_gallery(tmp_path, partition_in_eval, under_img):
    _, image_root = make_inshop(tmp_path, partition_in_eval=partition_in_eval,
                                under_img=under_img)
    data = DataSet.create('shop', root=str(tmp_path), width=16, origin_width=20)
    assert data.train.labels == [1, 1, 1, 2, 2]
    assert data.query.labels == [3, 4, 4]
    assert data.gallery.labels == [3, 3, 4]
    assert data.query.images[0] == os.path.join(
        str(image_root), 'img/WOMEN/Blouses_Shirts/id_00000003/01_1_front.jpg')
    image, label = data.query[1]
    assert label == 4 and image.shape == (3, 16, 16)
    assert data.train.Index == {1: [0, 1, 2], 2: [3, 4]}


def test_other_data_sets_have_no_query_set(tmp_path):
    from test_datasets import make_cub
    make_cub(tmp_path)
    assert DataSet.create('cub', root=str(tmp_path)).query is None


def test_official_list_files_take_precedence(tmp_path):
    base, _ = make_inshop(tmp_path, folder='InShopClothes')  # the official class-name folder
    (base / 'train.txt').write_text('img/WOMEN/Dresses/id_00000001/01_1_front.jpg\t0\n'
                                    'img/MEN/Denim/id_00000002/01_1_front.jpg\t1\n')
    (base / 'gallery.txt').write_text('img/MEN/Tees_Tanks/id_00000004/03_3_front.jpg 7\n')
    (base / 'query.txt').write_text('img/MEN/Tees_Tanks/id_00000004/01_1_front.jpg 7\n')
    data = DataSet.create('shop', root=str(tmp_path))
    assert data.train.labels == [0, 1] and data.gallery.labels == data.query.labels == [7]
    assert 'query.txt' in data.source


def test_missing_partition_file_names_both_places(tmp_path):
    base, _ = make_inshop(tmp_path)
    os.remove(base / 'Eval' / 'list_eval_partition.txt')
    with pytest.raises(InputError, match='list_eval_partition.txt or .*Eval.*query.txt'):
        DataSet.create('shop', root=str(tmp_path))
    with pytest.raises(InputError, match='In_shop_clothes or .*InShopClothes'):
        DataSet.create('shop', root=str(tmp_path / 'elsewhere'))


@pytest.mark.parametrize('edit, message', [
    (lambda lines: ['99'] + lines[1:], 'line 1 announces 99 images, 11 are listed'),
    (lambda lines: lines[:4] + [lines[4].replace('train', 'val')] + lines[5:], 'line 5'),
    (lambda lines: lines[1:], 'number of images on line 1'),
])
def test_malformed_partition_file(tmp_path, edit, message):
    base, _ = make_inshop(tmp_path)
    partition = base / 'Eval' / 'list_eval_partition.txt'
    lines = partition.read_text().splitlines()
    partition.write_text('\n'.join(edit(lines)) + '\n')
    with pytest.raises(InputError, match=message):
        DataSet.create('shop', root=str(tmp_path))


def test_missing_listed_image(tmp_path):
    base, _ = make_inshop(tmp_path)
    os.remove(base / 'img/MEN/Tees_Tanks/id_00000004/02_2_front.jpg')
    with pytest.raises(InputError, match='missing, first: .*id_00000004/02_2_front.jpg'):
        DataSet.create('shop', root=str(tmp_path))


# ---- query against gallery -------------------------------------------------------------------

def brute_force(query, query_labels, gallery, gallery_labels, ks):
    """Recall@K and MAP@R query by query, by sorting the whole gallery (no ties: random data)."""
    recalls = {k: 0 for k in ks}
    average_precisions = []
    for q, label in zip(query, query_labels.tolist()):
        order = torch.argsort(gallery @ q, descending=True)
        relevant = (gallery_labels[order] == label).tolist()
        for k in ks:
            recalls[k] += any(relevant[:k])
        r = sum(relevant)
        if r:
            hits, precision_sum = 0, 0.0
            for i, is_relevant in enumerate(relevant[:r], 1):
                hits += is_relevant
                precision_sum += hits / i if is_relevant else 0.0
            average_precisions.append(precision_sum / r)
    metrics = {f'R@{k}': recalls[k] / len(query) for k in ks}
    metrics['MAP@R'] = sum(average_precisions) / len(average_precisions)
    return metrics


def test_query_gallery_metrics_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    gallery = F.normalize(torch.randn(60, 8, generator=generator), dim=1)
    gallery_labels = torch.randint(0, 12, (60,), generator=generator)
    query = F.normalize(torch.randn(25, 8, generator=generator), dim=1)
    query_labels = torch.randint(0, 14, (25,), generator=generator)  # some without a positive
    ks = SPECS['shop'].recall_ks
    got = evaluations.split_metrics(gallery, gallery_labels, ks, query=query,
                                    query_labels=query_labels, nmi=True, chunk_size=7)
    expected = brute_force(query, query_labels, gallery, gallery_labels, ks)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    # nothing is excluded: a query identical to a gallery image finds it at rank 1
    same = evaluations.split_metrics(gallery, gallery_labels, (1,), query=gallery[:5],
                                     query_labels=gallery_labels[:5])
    assert same['R@1'] == 1.0
    # NMI over query and gallery together
    assert got['NMI'] == evaluations.nmi(torch.cat([gallery, query]),
                                         torch.cat([gallery_labels, query_labels]))


def test_without_query_set_the_gallery_queries_itself():
    generator = torch.Generator().manual_seed(1)
    gallery = F.normalize(torch.randn(40, 8, generator=generator), dim=1)
    labels = torch.randint(0, 6, (40,), generator=generator)
    got = evaluations.split_metrics(gallery, labels, (1, 2, 4))
    assert got == evaluations.retrieval_metrics(gallery, labels, ks=(1, 2, 4))
    assert 'NMI' not in got
    with pytest.raises(ValueError, match='query and query_labels go together'):
        evaluations.split_metrics(gallery, labels, (1,), query=gallery)
