"""Image files that tests write by hand (a helper module: test modules import it, never each
other)."""
import struct
import zlib


def huge_header_png(path, width=30000, height=30000):
    """A PNG at `path` whose valid header declares width x height RGB pixels, with a tiny pixel
    stream; returns the path as a string."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    path.write_bytes(b'\x89PNG\r\n\x1a\n'
                     + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(b'\x00' * 16)) + chunk(b'IEND', b''))
    return str(path)
