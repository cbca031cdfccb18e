"""Aspect-ratio and size arithmetic shared by the input builders (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

N = TypeVar("N", int, float)

# Preset ratio / size lists of the models' input schemas. The first entry wins ties, so
# the square format leads every list.
FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
IMAGEN_RATIOS = ("1:1", "9:16", "16:9", "3:4", "4:3")
IDEOGRAM_RATIOS = (
    "1:1",
    "16:9",
    "9:16",
    "4:3",
    "3:4",
    "3:2",
    "2:3",
    "16:10",
    "10:16",
    "4:5",
    "5:4",
    "2:1",
    "1:2",
    "3:1",
    "1:3",
)
QWEN_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
SEEDREAM4_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9")
RECRAFT_SIZES = (
    "1024x1024",
    "1365x1024",
    "1024x1365",
    "1536x1024",
    "1024x1536",
    "1820x1024",
    "1024x1820",
    "1024x2048",
    "2048x1024",
    "1434x1024",
    "1024x1434",
    "1024x1280",
    "1280x1024",
    "1024x1707",
    "1707x1024",
)

_TIE = 1e-9


def clamp(value: N, lo: N, hi: N) -> N:
    return max(lo, min(hi, value))


def aspect_ratio(width: int, height: int) -> str:
    """``width:height`` reduced by their gcd, e.g. 1920x1080 -> ``16:9``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    g = math.gcd(width, height)
    return f"{width // g}:{height // g}"


def parse_ratio(ratio: str) -> tuple[int, int] | None:
    """``"16:9"`` -> (16, 9); None for entries such as ``custom`` or ``match_input_image``."""
    left, sep, right = ratio.partition(":")
    if not sep or not left.isdigit() or not right.isdigit() or int(left) == 0 or int(right) == 0:
        return None
    return int(left), int(right)


def parse_size(size: str) -> tuple[int, int]:
    """``"1365x1024"`` -> (1365, 1024)."""
    left, sep, right = size.lower().partition("x")
    if not sep or not left.isdigit() or not right.isdigit():
        raise ValueError(f"not a WxH size: {size!r}")
    return int(left), int(right)


def _log_ratio(width: float, height: float) -> float:
    return math.log(width / height)


def closest_ratio(width: int, height: int, choices: Sequence[str]) -> str:
    """The choice nearest to width:height by distance of log ratios (first wins ties)."""
    target = _log_ratio(width, height)
    best: str | None = None
    best_distance = math.inf
    for choice in choices:
        parsed = parse_ratio(choice)
        if parsed is None:
            continue
        distance = abs(_log_ratio(*parsed) - target)
        if distance < best_distance - _TIE:
            best, best_distance = choice, distance
    if best is None:
        raise ValueError(f"no numeric ratio among {list(choices)}")
    return best


def closest_size(width: int, height: int, sizes: Sequence[str]) -> str:
    """The ``WxH`` choice nearest in ratio, then in area (first wins ties)."""
    target_ratio = _log_ratio(width, height)
    target_area = math.log(width * height)

    def key(size: str) -> tuple[float, float]:
        w, h = parse_size(size)
        return (
            round(abs(_log_ratio(w, h) - target_ratio), 9),
            round(abs(math.log(w * h) - target_area), 9),
        )

    return min(sizes, key=key)


def size_for_ratio(ratio: str, *, short_side: int = 1024) -> tuple[int, int]:
    """``short_side`` on the short side at ``ratio``: 16:9 -> (1820, 1024)."""
    parsed = parse_ratio(ratio)
    if parsed is None:
        return short_side, short_side
    a, b = parsed
    if a >= b:
        return round(short_side * a / b), short_side
    return short_side, round(short_side * b / a)


def fit_box(width: int, height: int, lo: int, hi: int, *, multiple: int) -> tuple[int, int]:
    """Scale width x height (keeping the ratio) so both sides lie in [lo, hi], then snap
    each side to a multiple of ``multiple``. Extreme ratios that cannot fit are clamped."""
    scale = 1.0
    if max(width, height) > hi:
        scale = hi / max(width, height)
    if min(width, height) * scale < lo:
        scale = lo / min(width, height)
    lo_m = math.ceil(lo / multiple) * multiple
    hi_m = math.floor(hi / multiple) * multiple

    def snap(side: int) -> int:
        return clamp(round(side * scale / multiple) * multiple, lo_m, hi_m)

    return snap(width), snap(height)


def seedream4_size(width: int, height: int) -> str:
    """Seedream 4 preset: ``1K`` when both sides <= 1024, ``4K`` when a side >= 4096,
    else ``2K``."""
    if max(width, height) >= 4096:
        return "4K"
    if max(width, height) <= 1024:
        return "1K"
    return "2K"
