"""Reading annotation files strictly: their text lines, their integers and their labels, and the
checks every reader shares (an image listed twice, an image in two sets). Each problem is one
InputError naming the file, the line and what was expected (docs/reliability.md, "Annotations").
"""
import codecs
import os

from common.errors import InputError

# Labels become int64 tensors: a class id must fit in 64 bits.
INT64_MAX = 2 ** 63 - 1


def text_lines(path):
    """The non-blank lines of the UTF-8 text file `path`, stripped, as (line number, text); a
    UTF-8 byte-order mark is dropped. InputError for a file that cannot be read or is not UTF-8
    (Latin-1, UTF-16, binary), naming the encoding expected."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as err:
        raise InputError(f'{path}: cannot read it ({err.strerror})') from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b'\x00' in raw:
        # UTF-16 (with or without its byte-order mark) holds a zero byte in every ASCII letter
        raise InputError(f'{path}: UTF-16 text or binary data; expected a UTF-8 text file '
                         f'(convert it, e.g. iconv -f UTF-16 -t UTF-8)')
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError as err:
        line = raw.count(b'\n', 0, err.start) + 1
        raise InputError(f'{path}, line {line}: byte 0x{raw[err.start]:02x} is not UTF-8; '
                         f'expected a UTF-8 text file (a Latin-1 file converts with iconv -f '
                         f'LATIN1 -t UTF-8)') from None
    # split('\n'), not splitlines(): the line numbers an editor shows
    return [(number, line.strip()) for number, line in enumerate(text.split('\n'), 1)
            if line.strip()]


def integer(text):
    """`text` as an int when it is written with the digits 0-9 alone (no sign; leading zeros
    are allowed, as in the class folders' 001) and fits in int64; None otherwise. Strict on
    purpose: int() also takes '+5', ' 5', '٥' and '5_0', str.isdigit also '²'."""
    if not (text.isascii() and text.isdigit()) or len(text.lstrip('0')) > 19:
        return None
    value = int(text)
    return value if value <= INT64_MAX else None


def label(text, where, lowest, highest=INT64_MAX):
    """The class id `text` (integer() strict form) when it lies in lowest..highest; else
    InputError `where: expected ...`."""
    value = integer(text)
    if value is None or not lowest <= value <= highest:
        raise InputError(f'{where}: expected a class id, {label_range(lowest, highest)}, '
                         f'got {text!r}')
    return value


def label_range(lowest, highest=INT64_MAX):
    if highest == INT64_MAX:
        return ('a positive integer' if lowest == 1 else f'an integer from {lowest} up') + \
            ' that fits in 64 bits'
    return f'an integer from {lowest} to {highest}'


def refuse_repeated(file, rows, describe, expected):
    """InputError at the first row of `file` whose key repeats an earlier row's. `rows`: (key,
    position) pairs, the position as "line 7" or "annotation 7"; `describe(key)`: what is
    repeated, e.g. "image id 7"."""
    first = {}
    for key, position in rows:
        if key in first:
            raise InputError(f'{file}, {position}: {describe(key)} is listed again (first on '
                             f'{first[key]}); expected {expected}')
        first[key] = position


def refuse_images_in_two_sets(sets):
    """InputError for an image listed in two sets. `sets`: (set name, file, [(image path,
    position), ...]) per set; paths are compared normalised (a/./b is a/b)."""
    owner = {}
    for name, file, rows in sets:
        for path, position in rows:
            key = os.path.normpath(path)
            if key in owner and owner[key][0] != name:
                other, other_file, other_position = owner[key]
                raise InputError(f'{file}, {position}: {path} is also in the {other} set '
                                 f'({other_file}, {other_position}); expected each image in '
                                 f'one set only')
            owner.setdefault(key, (name, file, position))
