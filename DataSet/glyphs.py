"""Glyphs: the embedded demo data set (README, "The demo"), rendered on this machine.

Each class is one character, drawn from the TrueType fonts that matplotlib installs with itself
(DejaVu Sans / Serif / Mono, STIX General, Computer Modern), each image in a randomly chosen font
of its class with random affine jitter, grey levels, blur and noise. The result is written in the
CUB-200-2011 on-disk layout, so `DataSet.readers.read_cub_layout` reads it unchanged:

    Glyphs/images.txt               <image id> <class folder>/<file>   (ids 1..N)
    Glyphs/image_class_labels.txt   <image id> <class id>              (ids 1..C)
    Glyphs/classes.txt              <class id> <class folder>
    Glyphs/images/001.latin_A/latin_A_0001.jpg ...

The same seed gives byte-identical files. `ensure_glyphs(root)` makes `root/Glyphs` on first use.
"""
import math
import os
import re
import shutil
import time
import unicodedata
from functools import lru_cache

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font
from PIL import Image, ImageFilter

# One class per character. The rule: no two classes may look alike in most fonts once size,
# position and a little rotation are random and the image may be mirrored (the training transform
# flips horizontally). So only one of each group of shapes is kept: Latin A / Greek Alpha /
# Cyrillic A; o O 0 and Greek omicron; l I 1 |; Greek Pi / Cyrillic Pe; Phi / Ef; Gamma / Ghe;
# every lowercase letter that is its capital made smaller (c s v w x z u k p ...); a glyph and its
# mirror image (< >, b d, arrows left / right); filled and outline forms only where the fill
# differs. Pairs that the shape distance of tests/DataSet/test_glyphs.py finds too close in most
# fonts (B D, E F, h b, 5 S, r Γ, M Ы ...) lost one member. Families are listed in this order;
# `class_order` interleaves them across the training and test halves.
GLYPH_CLASSES = tuple(
    'ACEHJKLMNOPQRSTUVWXYZ'                 # Latin capitals
    'abfgimnqty'                            # Latin small letters unlike their capitals
    '123467'                                # digits
    'ΓΞΣΦΨαβζλμπτω'                         # Greek
    'ДЖЛЦЧЩЪЮЉЊЂѢѦ'                         # Cyrillic
    'ÆÞŊŁɣ'                                 # Latin extended
    '$€£¥₹₽₺¤₫'                             # currency
    '+−=≠≡<≤±√∞∫∮∈∉⊂⊆¬∠⊥∥⊕⊢∴∵ℵ℘⊞⊠⊓⊲⋯'       # mathematics (the second is the minus sign)
    '←↑↓↔↕↖↘⇐↩↺↰↲⇧↞⇇⇈⇊⇤↜'                   # arrows
    '♠♥♦♤♡♢♧♪♫♩♮♔♖♘♙♞♟'                     # card suits, music, chess
    '#%&@§¶‡(;:¿™№«*※‽'                     # punctuation and signs
    '□■▼▽◀●★☆◐◒⌂⌘▣◉◢▰▱'                     # geometric shapes
    '✓☼☁☂☃☯⚓⚠⚡☎✂✉⚑⚐♀♂☽✿❦⚔✡⚖'                # miscellaneous symbols
)

FONT_DIR = os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf')
# Fallback, size-variant, private-use and TeX symbol fonts: their glyphs are not the characters
# their code points name (or, for LastResort, every code point shows a placeholder).
SKIPPED_FONT_PREFIXES = ('LastResortHE', 'DejaVuSansDisplay', 'DejaVuSerifDisplay', 'STIXSiz',
                         'STIXNonUni', 'cmex10', 'cmsy10')
GLYPH_SIZE = 96        # pre-rendered glyphs: longest side of the ink, in pixels
MIN_FONTS = 4          # a class needs at least this many fonts


def font_paths():
    """The usable font files, sorted by name."""
    names = sorted(n for n in os.listdir(FONT_DIR)
                   if n.endswith('.ttf') and not n.startswith(SKIPPED_FONT_PREFIXES))
    return [os.path.join(FONT_DIR, n) for n in names]


@lru_cache(maxsize=None)
def _face(path):
    return FT2Font(path)


def has_glyph(path, char):
    """Whether the font maps `char` to a real glyph. The Computer Modern files (BaKoMa) give the
    Unicode code point of ASCII letters and digits only: their other codes hold Greek capitals,
    ligatures and accents, so they are used for letters and digits alone."""
    if os.path.basename(path).startswith('cm') and not (char.isascii() and char.isalnum()):
        return False
    return _face(path).get_char_index(ord(char)) != 0


def fonts_for(char):
    """The fonts that have `char`."""
    return [path for path in font_paths() if has_glyph(path, char)]


def _draw(face, char, pixels):
    face.set_size(pixels, 72)  # 72 dpi: the size in points is the size in pixels
    face.set_text(char)
    face.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(face.get_image())
    rows, cols = np.nonzero(image)
    if rows.size == 0:
        raise ValueError(f'{char!r} renders empty in {face.fname}')
    return image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def render_glyph(path, char, size=GLYPH_SIZE):
    """`char` in font `path` as a uint8 array (255 = ink) cropped to its ink, longest side `size`
    pixels (give or take one)."""
    face = _face(path)
    first = _draw(face, char, size)  # measures the glyph; the second pass sets its size
    return _draw(face, char, size * size / max(first.shape))


def class_name(char):
    """ASCII folder name: 'latin_A', 'greek_lamda', 'cyrillic_Zhe', 'leftwards_arrow'."""
    name = unicodedata.name(char)
    letter = re.fullmatch(r'(LATIN|GREEK|CYRILLIC) (CAPITAL|SMALL) LETTER (.+)', name)
    if letter:
        script, case, words = letter.groups()
        words = words.lower()
        if case == 'CAPITAL':
            words = words[0].upper() + words[1:]
        name = f'{script.lower()}_{words}'
    else:
        name = name.lower()
    return re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')


def class_order(classes=GLYPH_CLASSES):
    """The classes in class-id order: the even positions of the list (ids 1..C/2, the training
    half) and then the odd positions (ids C/2+1..C, the test half), so each family is split
    between training and test."""
    return tuple(classes[0::2]) + tuple(classes[1::2])


def _affine(glyph_shape, size, rng):
    """PIL AFFINE coefficients (output pixel -> glyph pixel) for a random rotation (±15°), shear,
    scale (longest side 55-80% of the image, aspect ±10%) and a shift of a few pixels that keeps
    the glyph inside the image."""
    height, width = glyph_shape
    angle = math.radians(rng.uniform(-15, 15))
    shear = rng.uniform(-0.2, 0.2)
    scale = rng.uniform(0.55, 0.8) * size / max(height, width)
    aspect = math.exp(rng.uniform(-0.1, 0.1))
    cos, sin = math.cos(angle), math.sin(angle)
    # forward map (glyph centre -> image centre) = rotation @ shear @ diag(scale_x, scale_y)
    scale_x, scale_y = scale * aspect, scale / aspect
    a, b = cos * scale_x, (cos * shear - sin) * scale_y
    c, d = sin * scale_x, (sin * shear + cos) * scale_y
    extent_x = abs(a) * width + abs(b) * height  # size of the transformed glyph box
    extent_y = abs(c) * width + abs(d) * height
    shift_x, shift_y = (rng.uniform(-1, 1) * min(max(0, (size - extent) / 2 - 1), 0.06 * size)
                        for extent in (extent_x, extent_y))
    # inverse map: glyph point = inverse(forward) @ (image point - image centre - shift) + centre
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    x0, y0 = size / 2 + shift_x, size / 2 + shift_y
    return (ia, ib, width / 2 - ia * x0 - ib * y0, ic, id_, height / 2 - ic * x0 - id_ * y0)


def jitter_image(glyph, size, rng):
    """One RGB image of `glyph` (uint8 ink array): affine jitter, grey ink on a grey background
    with at least 40% contrast (dark on light three times in four), sometimes a mild blur,
    a little noise."""
    ink = Image.fromarray(glyph).transform((size, size), Image.Transform.AFFINE,
                                           _affine(glyph.shape, size, rng),
                                           resample=Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        ink = ink.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    contrast = rng.uniform(0.4, 0.9) * 255
    low = rng.uniform(0, 255 - contrast)
    dark_on_light = rng.random() < 0.75
    background, foreground = (low + contrast, low) if dark_on_light else (low, low + contrast)
    alpha = np.asarray(ink, dtype=np.float32) / 255
    noise = rng.standard_normal((size, size), dtype=np.float32) * rng.uniform(0, 6)
    grey = background + (foreground - background) * alpha + noise
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert('RGB')


def _write_class(folder, char, seed, images_per_class, image_size):
    """Render one class into `folder`; returns the file names written."""
    fonts = fonts_for(char)
    if len(fonts) < MIN_FONTS:
        raise ValueError(f'{char!r} ({class_name(char)}) is in {len(fonts)} fonts of {FONT_DIR}; '
                         f'each Glyphs class needs at least {MIN_FONTS}')
    glyphs = [render_glyph(path, char) for path in fonts]
    # Sub-seed keyed by the character, so a class's images do not depend on its place in the list.
    rng = np.random.Generator(np.random.PCG64([seed, ord(char)]))
    font_ids = np.resize(rng.permutation(len(glyphs)), images_per_class)  # fonts used evenly
    name = class_name(char)
    files = []
    for k, font_id in enumerate(font_ids, 1):
        files.append(f'{name}_{k:04d}.jpg')
        image = jitter_image(glyphs[font_id], image_size, rng)
        image.save(os.path.join(folder, files[-1]), quality=90)
    return files


def _write_dataset(folder, seed, images_per_class, image_size):
    image_lines, label_lines, class_lines = [], [], []
    for class_id, char in enumerate(class_order(), 1):
        class_folder = f'{class_id:03d}.{class_name(char)}'
        os.makedirs(os.path.join(folder, 'images', class_folder))
        files = _write_class(os.path.join(folder, 'images', class_folder), char, seed,
                             images_per_class, image_size)
        class_lines.append(f'{class_id} {class_folder}\n')
        for file in files:
            image_id = len(image_lines) + 1
            image_lines.append(f'{image_id} {class_folder}/{file}\n')
            label_lines.append(f'{image_id} {class_id}\n')
    for name, lines in (('classes.txt', class_lines), ('image_class_labels.txt', label_lines),
                        ('images.txt', image_lines)):
        with open(os.path.join(folder, name), 'w', encoding='ascii') as f:
            f.writelines(lines)


def generate_glyphs(folder, seed=0, images_per_class=40, image_size=80):
    """Write the Glyphs data set into `folder` (which must not exist) and return its path.

    The files are written into `<folder>.tmp-<pid>` and renamed into place at the end, so an
    interrupted run never leaves a half-written data set. If another process renamed its copy
    into place first, ours is deleted and theirs is used."""
    if os.path.exists(folder):
        raise FileExistsError(f'{folder} already exists; generate_glyphs writes a new folder '
                              f'(delete it to make the data set again)')
    return write_atomically(folder, lambda temporary: _write_dataset(
        temporary, seed, images_per_class, image_size), complete_marker='images.txt')


def write_atomically(folder, write, complete_marker):
    """Generate a data set into `folder` through a temporary folder renamed at the end
    (`write(temporary)` fills it): an interrupted generation leaves no half data set behind,
    and when another process finished the same folder first (it holds `complete_marker`),
    its copy is kept."""
    temporary = f'{folder}.tmp-{os.getpid()}'
    shutil.rmtree(temporary, ignore_errors=True)  # left by an interrupted run with our pid
    os.makedirs(temporary)
    try:
        write(temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    try:
        os.rename(temporary, folder)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        if not os.path.isfile(os.path.join(folder, complete_marker)):
            raise
    return folder


def generate_once(folder, marker, generate, what):
    """Run `generate()` (which writes `folder` whole, through a temporary folder) unless
    `folder/marker` exists, announcing it as `what`; the seconds it took, or None when the
    data set was there. Another process finishing it first (FileExistsError) is not an error."""
    if os.path.isfile(os.path.join(folder, marker)):
        return None
    print(f'Generating {what} ...', flush=True)
    start = time.time()
    try:
        generate()
    except FileExistsError:  # another process may have finished it since we looked
        if not os.path.isfile(os.path.join(folder, marker)):
            raise
    return time.time() - start


def ensure_glyphs(root, seed=0, **kwargs):
    """`root/Glyphs`, generated first (see `generate_glyphs` for kwargs) when it has no
    images.txt."""
    folder = os.path.join(root, 'Glyphs')
    seconds = generate_once(folder, 'images.txt',
                            lambda: generate_glyphs(folder, seed=seed, **kwargs),
                            f'the Glyphs demo data set in {folder} (seed {seed})')
    if seconds is not None:
        with open(os.path.join(folder, 'images.txt'), encoding='ascii') as f:
            num_images = sum(1 for _ in f)
        print(f'Glyphs: {num_images} images of {len(GLYPH_CLASSES)} classes written in '
              f'{seconds:.1f} s', flush=True)
    return folder
