"""Output files of the fake: real PNG/JPEG/WEBP (Pillow) and SVG bytes showing the prompt.

``output_size`` derives the pixel size a model would produce from its (defaulted) input, the
way each model family does it (aspect-ratio tables at about 1 MP, ``WxH`` sizes, custom
width/height). ``render`` draws the prompt on a coloured background, scaled down so the long
side stays under a cap (the file is a stand-in; rendering 4K images would only cost time).
"""

from __future__ import annotations

import hashlib
import io
import math
import textwrap
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw, ImageFont

from devstack.fake_replicate.schemas import ModelSchema

CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "svg": "image/svg+xml",
}
_PIL_FORMAT = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}

# black-forest-labs' aspect-ratio table at 1 megapixel (cog-flux).
FLUX_SIZES = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}


@dataclass(frozen=True)
class OutputSpec:
    """What the model would produce: how many files, their format and pixel size."""

    count: int
    fmt: str
    width: int
    height: int


def _ratio(text: Any) -> tuple[int, int] | None:
    if not isinstance(text, str) or ":" not in text:
        return None
    a, _, b = text.partition(":")
    if a.isdigit() and b.isdigit() and int(a) > 0 and int(b) > 0:
        return int(a), int(b)
    return None


def _wxh(text: Any) -> tuple[int, int] | None:
    if not isinstance(text, str) or "x" not in text:
        return None
    a, _, b = text.partition("x")
    if a.isdigit() and b.isdigit() and int(a) > 0 and int(b) > 0:
        return int(a), int(b)
    return None


def ratio_size(ratio: str | None, megapixels: float = 1.0, multiple: int = 16) -> tuple[int, int]:
    """Width and height of about ``megapixels`` MP at ``ratio`` (1:1 when unparsable)."""
    a, b = _ratio(ratio) or (1, 1)
    area = megapixels * 1024 * 1024
    h = math.sqrt(area * b / a)
    w = h * a / b
    return (
        max(multiple, round(w / multiple) * multiple),
        max(multiple, round(h / multiple) * multiple),
    )


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _size_seedream3(i: dict[str, Any]) -> tuple[int, int]:
    if i.get("aspect_ratio") == "custom":
        return _int(i.get("width"), 2048), _int(i.get("height"), 2048)
    w, h = ratio_size(i.get("aspect_ratio"))
    if i.get("size") == "big":
        scale = 2048 / max(w, h)
    elif i.get("size") == "small":
        scale = 512 / min(w, h)
    else:
        scale = 1.0
    return round(w * scale), round(h * scale)


def _size_seedream4(i: dict[str, Any]) -> tuple[int, int]:
    if i.get("size") == "custom":
        return _int(i.get("width"), 2048), _int(i.get("height"), 2048)
    mp = {"1K": 1.0, "2K": 4.0, "4K": 16.0}.get(str(i.get("size")), 4.0)
    return ratio_size(i.get("aspect_ratio"), mp)


def output_size(schema: ModelSchema, i: dict[str, Any]) -> tuple[int, int]:
    """The size the model would produce for the defaulted input ``i``."""
    kind = schema.sizing
    ratio = i.get("aspect_ratio")
    if kind == "flux":
        w, h = FLUX_SIZES.get(str(ratio), (1024, 1024))
        if i.get("megapixels") == "0.25":
            w, h = w // 2, h // 2
        return w, h
    if kind == "flux_pro":
        if ratio == "custom":
            return (_int(i.get("width"), 1024) // 32 * 32, _int(i.get("height"), 1024) // 32 * 32)
        return ratio_size(ratio, multiple=32)
    if kind == "width_height":
        return _int(i.get("width"), 1024), _int(i.get("height"), 1024)
    if kind == "ideogram":
        return _wxh(i.get("resolution")) or ratio_size(ratio)
    if kind == "seedream3":
        return _size_seedream3(i)
    if kind == "seedream4":
        return _size_seedream4(i)
    if kind == "recraft":
        if _ratio(ratio):
            return ratio_size(ratio)
        return _wxh(i.get("size")) or (1024, 1024)
    return ratio_size(ratio)


def output_spec(schema: ModelSchema, given: dict[str, Any]) -> OutputSpec:
    """Count, format and size of the outputs for a validated ``given`` input."""
    i = schema.with_defaults(given)
    count = 1
    if schema.output_is_list:
        if "num_outputs" in schema.properties:
            count = _int(i.get("num_outputs"), 1)
        elif i.get("sequential_image_generation") == "auto":
            count = _int(i.get("max_images"), 1)
    fmt = str(i.get("output_format") or schema.native_format)
    if fmt not in CONTENT_TYPES:
        fmt = schema.native_format
    width, height = output_size(schema, i)
    return OutputSpec(max(1, count), fmt, max(1, width), max(1, height))


def colour(seed: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(seed.encode()).digest()
    # Mid-tone colours so black or white text stays readable.
    return tuple(60 + b % 140 for b in digest[:3])  # type: ignore[return-value]


def capped(width: int, height: int, cap: int) -> tuple[int, int]:
    scale = min(1.0, cap / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _lines(prompt: str, chars: int) -> list[str]:
    wrapped = textwrap.wrap(prompt, width=max(8, chars)) or [""]
    return wrapped[:40]


def render_raster(prompt: str, fmt: str, width: int, height: int, *, seed: str) -> bytes:
    """PNG/JPEG/WEBP bytes of ``width`` x ``height`` showing ``prompt`` wrapped."""
    bg = colour(seed)
    img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    font_size = max(10, min(width, height) // 18)
    font = ImageFont.load_default(size=font_size)
    lines = _lines(prompt, int(width * 0.9 / (font_size * 0.55)))
    line_h = int(font_size * 1.3)
    y = max(4, (height - line_h * len(lines)) // 2)
    fg = (255, 255, 255) if sum(bg) < 380 else (0, 0, 0)
    for line in lines:
        draw.text((width // 20, y), line, fill=fg, font=font)
        y += line_h
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"quality": 80} if fmt in ("jpg", "webp") else {}
    img.save(buf, format=_PIL_FORMAT[fmt], **kwargs)
    return buf.getvalue()


def render_svg(prompt: str, width: int, height: int, *, seed: str) -> bytes:
    """A valid SVG document with the prompt as <text> elements."""
    r, g, b = colour(seed)
    font_size = max(10, min(width, height) // 18)
    lines = _lines(prompt, int(width * 0.9 / (font_size * 0.55)))
    line_h = int(font_size * 1.3)
    y0 = max(font_size, (height - line_h * len(lines)) // 2 + font_size)
    texts = "\n".join(
        f'  <text x="{width // 20}" y="{y0 + n * line_h}" font-family="sans-serif" '
        f'font-size="{font_size}" fill="#ffffff">{escape(line)}</text>'
        for n, line in enumerate(lines)
    )
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">\n'
        f'  <rect x="0" y="0" width="{width}" height="{height}" fill="rgb({r},{g},{b})"/>\n'
        f'  <circle cx="{width // 2}" cy="{height // 5}" r="{min(width, height) // 10}" '
        'fill="#ffffff" fill-opacity="0.4"/>\n'
        f"{texts}\n</svg>\n"
    )
    return doc.encode()


def render(prompt: str, fmt: str, width: int, height: int, *, seed: str, cap: int) -> bytes:
    """The bytes of one output file (size capped so the long side is at most ``cap``)."""
    w, h = capped(width, height, cap)
    if fmt == "svg":
        return render_svg(prompt, w, h, seed=seed)
    return render_raster(prompt, fmt, w, h, seed=seed)
