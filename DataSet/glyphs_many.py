"""GlyphsMany: an embedded many-class data set in Stanford Online Products' regime (thousands
of classes of a few images each, half of the classes for training and half for test),
rendered on this machine from the fonts matplotlib installs (our extension: `--data
glyphs_many`).

Each class is one character from several scripts (Latin, IPA, Greek, Cyrillic, Armenian,
Georgian, Hebrew, Arabic, Tifinagh, Canadian syllabics, letterlike and mathematical symbols,
arrows, shapes, dingbats) that matplotlib's DejaVu Sans has; each of its 4-8 images is drawn in
one of the fonts that have the character (DataSet/glyphs.py's list) with the affine jitter,
grey levels, blur and noise of DataSet/glyphs.py.

No two classes look alike: every candidate is rendered in the reference font (DejaVu Sans),
cropped to its ink and shrunk to a GRID x GRID thumbnail twice (aspect kept, and stretched
to the square, since the images' jitter changes size and aspect); a candidate whose thumbnail
(or its mirror image: training flips images) lies within MIN_DISTANCE (root-mean-square grey
difference, 0..1) of one kept before it (in code point order) is dropped, and so is one that
renders empty or as the font's missing-glyph box. Latin A / Greek Alpha / Cyrillic A, o / O /
0, hyphen / minus / dash, K / Kelvin sign ... keep one class each.

Written in the Stanford Online Products layout, so `DataSet.readers.read_sop_layout` reads it:

    GlyphsMany/Ebay_train.txt   image_id class_id super_class_id path   (header), one line per
    GlyphsMany/Ebay_test.txt    image (path relative to the folder; super class: the script)
    GlyphsMany/images/<class id>/<class id>_<k>.jpg

The same seed gives byte-identical files. `ensure_glyphs_many(root)` makes `root/GlyphsMany`
on first use.
"""
import os
import unicodedata
import warnings
from functools import lru_cache

import numpy as np
from PIL import Image

from DataSet.glyphs import (FONT_DIR, _face, font_paths, generate_once, has_glyph, jitter_image,
                            render_glyph, write_atomically)

FOLDER = 'GlyphsMany'
REFERENCE_FONT = 'DejaVuSans.ttf'
# (first, last) code points of each block searched, with its super class id (the script).
BLOCKS = (
    (0x0021, 0x007E, 1), (0x00A1, 0x024F, 1), (0x0250, 0x02AF, 1), (0x1E00, 0x1EFF, 1),
    (0x2C60, 0x2C7F, 1), (0xA720, 0xA7FF, 1),                       # Latin and IPA
    (0x0370, 0x03FF, 2), (0x1F00, 0x1FFF, 2),                       # Greek
    (0x0400, 0x052F, 3), (0xA640, 0xA69F, 3),                       # Cyrillic
    (0x0531, 0x058F, 4), (0x10A0, 0x10FF, 4),                       # Armenian, Georgian
    (0x05D0, 0x05EA, 5), (0x0621, 0x064A, 5),                       # Hebrew, Arabic
    (0x2D30, 0x2D7F, 6), (0x1400, 0x167F, 6),                       # Tifinagh, syllabics
    (0x2100, 0x23FF, 7), (0x27C0, 0x27FF, 7), (0x2900, 0x2BFF, 7),  # symbols, math, arrows
    (0x25A0, 0x27BF, 8),                                            # shapes, dingbats
)
MIN_FONTS = 3          # a class is drawn in at least this many fonts
GRID = 16              # thumbnail side of the look-alike test
THUMB_PIXELS = 32      # size the reference font renders the thumbnails at
MIN_DISTANCE = 0.15    # thumbnails closer than this (RMS grey difference) look alike
IMAGES_PER_CLASS = (4, 8)  # inclusive bounds, drawn per class
IMAGE_SIZE = 64
HEADER = 'image_id class_id super_class_id path\n'


def reference_font():
    return os.path.join(FONT_DIR, REFERENCE_FONT)


def _ink(char, font):
    """`char` in `font` at THUMB_PIXELS as a uint8 array cropped to its ink; None when it
    renders empty."""
    face = _face(font)
    face.set_size(THUMB_PIXELS, 72)
    face.set_text(char)
    face.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(face.get_image())
    rows, cols = np.nonzero(image)
    if rows.size == 0:
        return None
    return image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def thumbnails(char, font=None):
    """(aspect-kept, stretched) GRID x GRID float thumbnails of `char` in the reference font,
    in [0, 1]; None when it renders empty."""
    ink = _ink(char, font or reference_font())
    if ink is None:
        return None
    height, width = ink.shape
    scale = GRID / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    kept = np.zeros((GRID, GRID), np.float32)
    small = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.BOX), np.float32)
    top, left = (GRID - size[1]) // 2, (GRID - size[0]) // 2
    kept[top:top + size[1], left:left + size[0]] = small / 255
    stretched = np.asarray(Image.fromarray(ink).resize((GRID, GRID), Image.Resampling.BOX),
                           np.float32) / 255
    return kept, stretched


def look_alike_distances(thumbs):
    """[n, n] distance between the thumbnails `thumbs` ([n] pairs from `thumbnails`): the
    smallest RMS difference over both thumbnail kinds, each also against the other's mirror
    image (the diagonal is inf)."""
    result = None
    for kind in (0, 1):
        plain = np.stack([pair[kind] for pair in thumbs])
        mirrored = plain[:, :, ::-1].reshape(len(plain), -1)
        plain = plain.reshape(len(plain), -1)
        for other in (plain, mirrored):
            squared = ((plain * plain).sum(1)[:, None] + (other * other).sum(1)[None]
                       - 2 * plain @ other.T)
            distance = np.sqrt(np.maximum(squared, 0) / plain.shape[1])
            result = distance if result is None else np.minimum(result, distance)
    np.fill_diagonal(result, np.inf)
    return result


def _notdef_thumbnails():
    """The reference font's missing-glyph box (a private-use code point it lacks)."""
    if has_glyph(reference_font(), '\ue000'):
        return None
    with warnings.catch_warnings():  # matplotlib warns that the glyph is missing: we know
        warnings.simplefilter('ignore')
        return thumbnails('\ue000')


@lru_cache(maxsize=None)
def glyph_classes():
    """((character, super class id), ...) of every class, in code point order: the candidates
    of BLOCKS that are letters, numbers, punctuation or symbols, that the reference font and at
    least MIN_FONTS fonts have, that render neither empty nor as the missing-glyph box, and
    that look like no class kept before them."""
    reference, fonts = reference_font(), font_paths()
    candidates, thumbs = [], []
    notdef = _notdef_thumbnails()
    for first, last, script in BLOCKS:
        for code in range(first, last + 1):
            char = chr(code)
            if unicodedata.category(char)[0] not in 'LNPS' or not has_glyph(reference, char):
                continue
            if sum(has_glyph(font, char) for font in fonts) < MIN_FONTS:
                continue
            pair = thumbnails(char)
            if pair is None or (notdef is not None and all(
                    np.array_equal(a, b) for a, b in zip(pair, notdef))):
                continue
            candidates.append((char, script))
            thumbs.append(pair)
    distance = look_alike_distances(thumbs)
    kept = np.zeros(len(candidates), bool)
    for index in range(len(candidates)):
        if not (distance[index, kept] < MIN_DISTANCE).any():
            kept[index] = True
    return tuple(candidate for candidate, keep in zip(candidates, kept) if keep)


def class_order(classes, num_classes=None):
    """The classes used, in class-id order: all of them, or `num_classes` spread evenly over
    the list (tests); the even positions train (ids 1..C/2) and the odd ones test, so that each
    script is in both halves."""
    if num_classes is not None:
        classes = [classes[i] for i in np.linspace(0, len(classes) - 1, num_classes).round()
                   .astype(int)]
    return tuple(classes[0::2]) + tuple(classes[1::2])


def _write_class(folder, class_id, char, seed, image_size):
    """Render one class into `folder`; returns the file names written."""
    fonts = [font for font in font_paths() if has_glyph(font, char)]
    # Sub-seed keyed by the character: a class's images do not depend on its place in the list.
    rng = np.random.Generator(np.random.PCG64([seed, ord(char)]))
    count = int(rng.integers(IMAGES_PER_CLASS[0], IMAGES_PER_CLASS[1] + 1))
    font_ids = rng.permutation(len(fonts))[:count]
    font_ids = np.resize(font_ids, count)  # fewer fonts than images: fonts repeat evenly
    glyphs = {}
    files = []
    for k, font_id in enumerate(font_ids.tolist(), 1):
        if font_id not in glyphs:
            glyphs[font_id] = render_glyph(fonts[font_id], char, size=image_size)
        files.append(f'{class_id}_{k}.jpg')
        jitter_image(glyphs[font_id], image_size, rng).save(os.path.join(folder, files[-1]),
                                                            quality=90)
    return files


def _write_dataset(folder, seed, num_classes, image_size):
    ordered = class_order(glyph_classes(), num_classes)
    lines = {'Ebay_train.txt': [HEADER], 'Ebay_test.txt': [HEADER]}
    image_id = 0
    for class_id, (char, script) in enumerate(ordered, 1):
        class_folder = os.path.join('images', f'{class_id:05d}')
        os.makedirs(os.path.join(folder, class_folder))
        split = 'Ebay_train.txt' if class_id <= len(ordered) // 2 else 'Ebay_test.txt'
        for file in _write_class(os.path.join(folder, class_folder), class_id, char, seed,
                                 image_size):
            image_id += 1
            lines[split].append(f'{image_id} {class_id} {script} {class_folder}/{file}\n')
    with open(os.path.join(folder, 'classes.txt'), 'w', encoding='utf-8') as f:
        f.writelines(f'{class_id} U+{ord(char):04X} {unicodedata.name(char, "")}\n'
                     for class_id, (char, _) in enumerate(ordered, 1))
    for name, text in lines.items():
        with open(os.path.join(folder, name), 'w', encoding='ascii') as f:
            f.writelines(text)


def generate_glyphs_many(folder, seed=0, num_classes=None, image_size=IMAGE_SIZE):
    """Write GlyphsMany into `folder` (which must not exist) and return its path: every class
    of `glyph_classes()`, or `num_classes` of them (a small set for tests). Written into
    `<folder>.tmp-<pid>` and renamed into place, as DataSet/glyphs.py does."""
    if os.path.exists(folder):
        raise FileExistsError(f'{folder} already exists; generate_glyphs_many writes a new '
                              f'folder (delete it to make the data set again)')
    return write_atomically(folder, lambda temporary: _write_dataset(
        temporary, seed, num_classes, image_size), complete_marker='Ebay_test.txt')


def ensure_glyphs_many(root, seed=0, **kwargs):
    """`root/GlyphsMany`, generated first when it has no Ebay_test.txt."""
    folder = os.path.join(root, FOLDER)
    seconds = generate_once(folder, 'Ebay_test.txt',
                            lambda: generate_glyphs_many(folder, seed=seed, **kwargs),
                            f'the GlyphsMany data set in {folder} (seed {seed})')
    if seconds is not None:
        print(f'GlyphsMany written in {seconds:.1f} s', flush=True)
    return folder
