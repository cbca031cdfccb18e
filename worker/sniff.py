"""Recognise image bytes by their content (magic numbers), never by what a server claims.

``sniff`` names the format (png, jpeg, webp, gif, svg), ``image_size`` reads the pixel size
from the header where the format has one, and ``svg_problem`` refuses SVG documents with
active content (scripts, event handlers, entity declarations), since stored SVGs are served
from the public bucket's origin.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from types import MappingProxyType

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
    rb"(?:(?:<!--.*?-->|<!DOCTYPE\s+svg\b[^>\[]*>|<\?[^>]*\?>)\s*)*"  # comments, plain doctype
    rb"<svg[\s>/]",
    re.DOTALL,
)
_SVG_ACTIVE = re.compile(
    rb"<\s*script|<\s*foreignobject|<!entity|javascript\s*:|<[^>]*?[\s\"'/]on[a-z]+\s*=",
    re.IGNORECASE,
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
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "the SVG is not valid UTF-8"
    found = _SVG_ACTIVE.search(data)
    if found:
        snippet = found.group(0)[-40:].decode(errors="replace").strip()
        return f"the SVG has active content ({snippet})"
    return None


def image_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height from the image header (None for SVG or a truncated header)."""
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
