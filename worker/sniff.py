"""Recognise image bytes by their content (magic numbers), never by what a server claims.

``sniff`` names the format (png, jpeg, webp, gif, svg), ``image_size`` reads the pixel size
from the header (PNG IHDR, JPEG SOF, WebP VP8/VP8L/VP8X, GIF screen; for SVG the intrinsic
size from width/height/viewBox), ``svg_problem`` refuses SVG documents that are not plain
vector art (worker.svg: a real XML parser; stored SVGs are served from the public bucket's
origin), and ``size_problem`` refuses declared dimensions past the caps (a few bytes of
PNG can declare 100000 x 100000 pixels, which any later decoder would try to allocate).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from worker import svg

FORMATS = ("png", "jpeg", "webp", "gif", "svg")
CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "png": "image/png",
        "jpeg": "image/jpeg",
        "webp": "image/webp",
        "gif": "image/gif",
        "svg": "image/svg+xml",
    }
)
# What a Content-Type (or data: media type) claims, as a format.
MEDIA_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "image/png": "png",
        "image/x-png": "png",
        "image/apng": "png",
        "image/jpeg": "jpeg",
        "image/jpg": "jpeg",
        "image/pjpeg": "jpeg",
        "image/webp": "webp",
        "image/gif": "gif",
        "image/svg+xml": "svg",
        "text/xml": "svg",
        "application/xml": "svg",
    }
)
# Claims that say nothing about the content: the bytes decide.
GENERIC_MEDIA_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})

_BOM = b"\xef\xbb\xbf"
_SVG_ROOT = re.compile(
    rb"\A\s*(?:<\?xml[^>]*\?>\s*)?"  # XML declaration
    # comments, processing instructions, a doctype (which svg_problem then refuses clearly)
    rb"(?:(?:<!--.*?-->|<!DOCTYPE\s+svg\b[^>\[]*(?:\[[^\]]*\]\s*)?>|<\?[^>]*\?>)\s*)*"
    rb"<svg[\s>/]",
    re.DOTALL,
)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def media_type(header: str | None) -> str:
    """``"Image/PNG; charset=x"`` -> ``"image/png"``."""
    return (header or "").split(";", 1)[0].strip().lower()


def sniff(data: bytes) -> str | None:
    """The image format of ``data`` from its leading bytes, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    if _SVG_ROOT.match(body):
        return "svg"
    return None


def svg_problem(data: bytes) -> str | None:
    """Why an SVG document must not be stored, or None when it is plain vector art."""
    return svg.inspect(data).problem


@dataclass(frozen=True)
class SizeLimits:
    """Caps on what an image header may declare (WORKER_MAX_IMAGE_SIDE / _PIXELS)."""

    max_side: int = 8192
    max_pixels: int = 40_000_000


def size_problem(fmt: str, size: tuple[float, float] | None, limits: SizeLimits) -> str | None:
    """Why declared dimensions must be refused, or None.

    A raster image whose header declares no size is refused (it cannot be checked); an SVG
    without an absolute size is vector art the renderer sizes, and passes.
    """
    if size is None:
        return None if fmt == "svg" else f"the {fmt} header declares no readable size"
    width, height = size
    shown = f"{_dimension(width)} x {_dimension(height)}"
    if not (width >= 1 and height >= 1):
        return f"the {fmt} image declares an empty size ({shown})"
    if max(width, height) > limits.max_side:
        return (
            f"the {fmt} image declares {shown} pixels: a side is over the "
            f"{limits.max_side}-pixel limit (WORKER_MAX_IMAGE_SIDE)"
        )
    if width * height > limits.max_pixels:
        return (
            f"the {fmt} image declares {shown} pixels, more than the "
            f"{limits.max_pixels}-pixel limit (WORKER_MAX_IMAGE_PIXELS)"
        )
    return None


def _dimension(value: float) -> str:
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:.6g}"


def inspect_image(
    data: bytes, fmt: str, limits: SizeLimits
) -> tuple[str | None, tuple[int, int] | None]:
    """(why ``data`` must not be stored or None, its pixel size when the header has one):
    SVG content rules and the dimension caps, from headers only (nothing is decoded)."""
    declared: tuple[float, float] | None
    if fmt == "svg":
        report = svg.inspect(data)
        if report.problem is not None:
            return report.problem, None
        declared = report.size
    else:
        declared = image_size(data, fmt)
    problem = size_problem(fmt, declared, limits)
    if problem is not None or declared is None:
        return problem, None
    return None, (math.ceil(declared[0]), math.ceil(declared[1]))


def image_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height from a raster image header (None for SVG or an unreadable header)."""
    try:
        if fmt == "png" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if fmt == "gif":
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if fmt == "webp":
            return _webp_size(data)
        if fmt == "jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + int(length)
    return None
