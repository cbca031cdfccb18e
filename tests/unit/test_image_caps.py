"""Declared image dimensions are capped before anything is stored (issue 11 point 5).

The SafeFetcher (outputs over HTTP, img2img sources as data: URIs alike) reads the size
from the header of PNG, JPEG, WebP (VP8, VP8L, VP8X), GIF and SVG and refuses, as a
permanent error, a side over WORKER_MAX_IMAGE_SIDE or a pixel count over
WORKER_MAX_IMAGE_PIXELS; the settings are validated at start.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests import declared_sizes as make
from tests.unit.local_http import LocalServer, Route
from worker.errors import ConfigError, FetchRefused, PermanentError
from worker.net import SafeFetcher
from worker.settings import Settings
from worker.sniff import SizeLimits, image_size, sniff

LIMITS = SizeLimits(max_side=8192, max_pixels=40_000_000)
MAX_BYTES = 1024 * 1024

Maker = Callable[[int, int], bytes]
FORMATS: list[tuple[str, Maker, str]] = [
    ("png", make.png, "image/png"),
    ("jpeg", make.jpeg, "image/jpeg"),
    ("webp-vp8", make.webp_vp8, "image/webp"),
    ("webp-vp8l", make.webp_vp8l, "image/webp"),
    ("webp-vp8x", make.webp_vp8x, "image/webp"),
    ("gif", make.gif, "image/gif"),
    ("svg", make.svg, "image/svg+xml"),
]
IDS = [f[0] for f in FORMATS]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.stop()


def fetcher(srv: LocalServer, limits: SizeLimits = LIMITS) -> SafeFetcher:
    return SafeFetcher(
        httpx.Client(trust_env=False),
        allowed_hosts=("replicate.delivery",),
        max_bytes=MAX_BYTES,
        limits=limits,
        dev_http_hosts=(f"127.0.0.1:{srv.port}",),
    )


def test_the_issues_png_is_refused_with_a_clear_permanent_error(server: LocalServer) -> None:
    bomb = make.png(100_000, 100_000, total=4937)
    assert len(bomb) == 4937 and sniff(bomb) == "png"
    assert image_size(bomb, "png") == (100_000, 100_000)
    server.routes["/bomb.png"] = Route(200, bomb, {"Content-Type": "image/png"})
    with pytest.raises(FetchRefused) as caught:
        fetcher(server).fetch(f"http://127.0.0.1:{server.port}/bomb.png")
    assert isinstance(caught.value, PermanentError)
    assert caught.value.message == (
        "the png image declares 100000 x 100000 pixels: a side is over the "
        "8192-pixel limit (WORKER_MAX_IMAGE_SIDE)"
    )


@pytest.mark.parametrize(("name", "maker", "ctype"), FORMATS, ids=IDS)
def test_sizes_are_read_from_every_header(name: str, maker: Maker, ctype: str) -> None:
    data = maker(1000, 700)
    fmt = sniff(data)
    assert fmt is not None
    if fmt != "svg":
        assert image_size(data, fmt) == (1000, 700)


@pytest.mark.parametrize(("name", "maker", "ctype"), FORMATS, ids=IDS)
@pytest.mark.parametrize(("size", "reason"), [
    ((16000, 16), "WORKER_MAX_IMAGE_SIDE"),
    ((16, 16000), "WORKER_MAX_IMAGE_SIDE"),
    ((8000, 8000), "WORKER_MAX_IMAGE_PIXELS"),
])
def test_outputs_over_a_cap_are_refused(
    server: LocalServer, name: str, maker: Maker, ctype: str, size: tuple[int, int], reason: str
) -> None:
    path = f"/{name}-{size[0]}x{size[1]}"
    server.routes[path] = Route(200, maker(*size), {"Content-Type": ctype})
    with pytest.raises(FetchRefused, match=reason) as caught:
        fetcher(server).fetch(f"http://127.0.0.1:{server.port}{path}")
    assert f"{size[0]} x {size[1]}" in caught.value.message


@pytest.mark.parametrize(("name", "maker", "ctype"), FORMATS, ids=IDS)
def test_img2img_sources_over_a_cap_are_refused(
    server: LocalServer, name: str, maker: Maker, ctype: str
) -> None:
    uri = f"data:{ctype};base64," + base64.b64encode(maker(9000, 9000)).decode()
    with pytest.raises(FetchRefused, match="9000 x 9000"):
        fetcher(server).fetch(uri)


@pytest.mark.parametrize(("name", "maker", "ctype"), FORMATS, ids=IDS)
def test_images_within_the_caps_pass_with_their_size(
    server: LocalServer, name: str, maker: Maker, ctype: str
) -> None:
    path = f"/{name}-ok"
    server.routes[path] = Route(200, maker(6000, 4000), {"Content-Type": ctype})
    got = fetcher(server).fetch(f"http://127.0.0.1:{server.port}{path}")
    assert (got.width, got.height) == (6000, 4000)


def test_lower_caps_apply(server: LocalServer) -> None:
    server.routes["/small.png"] = Route(200, make.png(1024, 1024), {"Content-Type": "image/png"})
    url = f"http://127.0.0.1:{server.port}/small.png"
    assert fetcher(server).fetch(url).width == 1024
    with pytest.raises(FetchRefused, match="512-pixel limit"):
        fetcher(server, SizeLimits(max_side=512, max_pixels=10**9)).fetch(url)
    with pytest.raises(FetchRefused, match="WORKER_MAX_IMAGE_PIXELS"):
        fetcher(server, SizeLimits(max_side=4096, max_pixels=1_000_000)).fetch(url)


def test_a_raster_image_without_a_readable_size_is_refused(server: LocalServer) -> None:
    truncated = make.png(64, 64)[:20]  # the IHDR cut short
    server.routes["/cut.png"] = Route(200, truncated, {"Content-Type": "image/png"})
    with pytest.raises(FetchRefused, match="no readable size"):
        fetcher(server).fetch(f"http://127.0.0.1:{server.port}/cut.png")
    with pytest.raises(FetchRefused, match="empty size"):
        fetcher(server).fetch("data:image/gif;base64," + base64.b64encode(make.gif(0, 10)).decode())


def _env(**extra: str) -> dict[str, str]:
    return {
        "SUPABASE_URL": "https://example.supabase.co",
        "SUPABASE_SERVICE_ROLE_KEY": "service-key",
        "REPLICATE_API_TOKEN": "r8_token",
        **extra,
    }


def test_the_caps_are_settings_with_sane_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(_env()):
        monkeypatch.delenv(key, raising=False)
    settings = Settings.load(**_env())
    assert settings.image_limits == SizeLimits(max_side=8192, max_pixels=40_000_000)
    custom = Settings.load(**_env(WORKER_MAX_IMAGE_SIDE="4096", WORKER_MAX_IMAGE_PIXELS="9000000"))
    assert custom.image_limits == SizeLimits(max_side=4096, max_pixels=9_000_000)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("WORKER_MAX_IMAGE_SIDE", "0", "WORKER_MAX_IMAGE_SIDE: Input should be greater than or equal to 64"),
    ("WORKER_MAX_IMAGE_SIDE", "big", "WORKER_MAX_IMAGE_SIDE: Input should be a valid integer"),
    ("WORKER_MAX_IMAGE_PIXELS", "-5", "WORKER_MAX_IMAGE_PIXELS: Input should be greater than or equal to 4096"),
])
def test_bad_caps_fail_at_start_with_one_line(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(**_env(**{name: value}))
    assert caught.value.message.startswith(message)
    assert "\n" not in caught.value.message
