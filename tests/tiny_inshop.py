"""A tiny In-Shop Clothes Retrieval folder in the distribution's exact format (a helper module:
tests/DataSet/test_inshop.py and the end-to-end tests build it)."""
from PIL import Image

# (item number, folder, status per image): items 1-2 train, 3-4 test with query and gallery
ITEMS = [(1, 'WOMEN/Dresses', ['train', 'train', 'train']),
         (2, 'MEN/Denim', ['train', 'train']),
         (3, 'WOMEN/Blouses_Shirts', ['query', 'gallery', 'gallery']),
         (4, 'MEN/Tees_Tanks', ['query', 'query', 'gallery'])]


def make_inshop(root, folder='In_shop_clothes', partition_in_eval=True, under_img=False):
    """A tiny In-Shop in the distribution's format: Eval/list_eval_partition.txt (count,
    header, rows) and img/<gender>/<category>/id_XXXXXXXX/NN_N_view.jpg (under Img/ when
    `under_img`, where the distribution's Img/img.zip unpacks)."""
    base = root / folder
    image_root = base / 'Img' if under_img else base
    rows = []
    for item, category, statuses in ITEMS:
        for k, status in enumerate(statuses):
            rel = f'img/{category}/id_{item:08d}/{k + 1:02d}_{k + 1}_front.jpg'
            (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new('RGB', (30, 40), (40 * item, 20 * k, 90)).save(image_root / rel)
            rows.append(f'{rel} id_{item:08d} {status}')
    partition = base / 'Eval' / 'list_eval_partition.txt' if partition_in_eval \
        else base / 'list_eval_partition.txt'
    partition.parent.mkdir(parents=True, exist_ok=True)
    # the real file aligns its columns with runs of spaces
    partition.write_text(f'{len(rows)}\nimage_name item_id evaluation_status\n'
                         + ''.join(f'{row.replace(" ", "   ")}\n' for row in rows))
    return base, image_root
