"""Small, valid-looking images whose headers declare any size (decompression-bomb shapes).

Each starts from a real Pillow image and rewrites only the header fields a decoder reads
first (PNG IHDR with its CRC, JPEG SOF, WebP VP8 / VP8L / VP8X, GIF screen), so the bytes
stay a few KiB while the declared pixel count is huge.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _pillow(fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (30, 120, 200)).save(out, format=fmt, **options)  # type: ignore[arg-type]
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, total: int | None = None) -> bytes:
    """A PNG declaring ``width`` x ``height`` (valid CRCs), padded with a tEXt chunk to
    ``total`` bytes when given."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\0" * 4096, 9))
    head = b"\x89PNG\r\n\x1a\n" + ihdr + idat
    end = _chunk(b"IEND", b"")
    if total is None:
        return head + end
    filler = total - len(head) - len(end) - 12 - len(b"Comment\0")
    assert filler >= 0, "total too small"
    return head + _chunk(b"tEXt", b"Comment\0" + b"x" * filler) + end


def jpeg(width: int, height: int) -> bytes:
    data = bytearray(_pillow("JPEG", quality=80))
    i = 2
    while data[i] == 0xFF and data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_vp8(width: int, height: int) -> bytes:
    data = bytearray(_pillow("WEBP", quality=80))
    assert data[12:16] == b"VP8 "
    data[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    return bytes(data)


def webp_vp8l(width: int, height: int) -> bytes:
    data = bytearray(_pillow("WEBP", lossless=True))
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = int.from_bytes(data[21:25], "little") & ~0x0FFFFFFF
    bits |= (width - 1) | ((height - 1) << 14)
    data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


def webp_vp8x(width: int, height: int) -> bytes:
    """An extended WebP: a VP8X canvas of ``width`` x ``height`` around a small VP8 frame."""
    inner = _pillow("WEBP", quality=80)[12:]  # the VP8 chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + inner
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif(width: int, height: int) -> bytes:
    data = bytearray(_pillow("GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def svg(width: int, height: int) -> bytes:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        "<rect/></svg>"
    ).encode()
