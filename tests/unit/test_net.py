"""SafeFetcher: SSRF rules, redirects, size cap, content sniffing, data: URIs.

Real sockets: a small HTTP server (and a TLS one) on 127.0.0.1, reachable only through
the ``dev_http_hosts`` escape hatch; names are answered by an injected resolver.
"""

from __future__ import annotations

import base64
import io
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.unit.local_http import LocalServer, Route, tls_context
from worker.errors import FetchRefused, RetryableError
from worker.net import Fetched, SafeFetcher

MAX = 64 * 1024
SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- made by a model -->\n'
       b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<rect width="10" height="10" fill="#f80"/></svg>')
HTML = b"<!doctype html><html><body><h1>Not an image</h1></body></html>"


def image(fmt: str, size: tuple[int, int] = (7, 5), **options: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 80, 20)).save(out, format=fmt, **options)  # type: ignore[arg-type]
    return out.getvalue()


PNG, JPEG, WEBP = image("PNG"), image("JPEG"), image("WEBP")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def other() -> Iterator[LocalServer]:
    srv = LocalServer()
    srv.routes["/secret"] = Route(200, PNG, {"Content-Type": "image/png"})
    yield srv
    srv.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as client:
        yield client


def fetcher(http: httpx.Client, *, dev: tuple[str, ...] = (), hosts: tuple[str, ...] = (),
            resolver: Callable[[str, int], list[str]] | None = None,
            max_bytes: int = MAX) -> SafeFetcher:
    def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError(f"unexpected DNS lookup of {host}")

    return SafeFetcher(http, allowed_hosts=hosts or ("replicate.delivery", "*.replicate.delivery"),
                       max_bytes=max_bytes, dev_http_hosts=dev, resolver=resolver or no_dns)


def serve(srv: LocalServer, path: str, body: bytes, ctype: str | None, **kw: object) -> str:
    headers = {} if ctype is None else {"Content-Type": ctype}
    srv.routes[path] = Route(200, body, headers, **kw)  # type: ignore[arg-type]
    return f"http://127.0.0.1:{srv.port}{path}"


def dev_of(srv: LocalServer) -> tuple[str, ...]:
    return (f"127.0.0.1:{srv.port}",)


class _NoNetwork(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request may be sent, got {request.url}")


# --- scheme, host and address rules (nothing is sent) -------------------------------------


@pytest.mark.parametrize(("url", "hosts", "reason"), [
    ("http://replicate.delivery/out.png", (), "plain http"),
    ("ftp://replicate.delivery/out.png", (), "scheme"),
    ("file:///etc/passwd", (), "scheme"),
    ("https://user:pw@replicate.delivery/out.png", (), "credentials"),
    ("https://evil.example/out.png", (), "not on the allowed list"),
    ("https://evilreplicate.delivery/out.png", (), "not on the allowed list"),
    ("https://127.0.0.1/out.png", ("127.0.0.1",), "loopback"),
    ("https://169.254.169.254/latest/meta-data/", ("169.254.169.254",), "link-local"),
    ("https://[::1]/out.png", ("::1",), "loopback"),
    ("https://10.20.30.40/out.png", ("10.20.30.40",), "private"),
    ("https://[::ffff:169.254.169.254]/", ("::ffff:169.254.169.254",), "link-local"),
    ("https://0.0.0.0/", ("0.0.0.0",), "unspecified"),
    ("http://169.254.169.254/latest/meta-data/", ("169.254.169.254",), "plain http"),
])
def test_refused_before_any_connection(url: str, hosts: tuple[str, ...], reason: str) -> None:
    with httpx.Client(transport=_NoNetwork()) as client, \
            pytest.raises(FetchRefused, match=reason):
        fetcher(client, hosts=hosts or ("replicate.delivery",)).fetch(url)


@pytest.mark.parametrize(("answers", "reason"), [
    (["10.1.2.3"], "private"),
    (["8.8.8.8", "192.168.1.5"], "private"),  # every address must be public
    (["::ffff:127.0.0.1"], "loopback"),
    (["169.254.169.254"], "link-local"),
    (["100.64.0.7"], "not globally routable"),
    (["fd00::1"], "private"),
])
def test_allowed_name_resolving_to_a_private_address_is_refused(
    answers: list[str], reason: str
) -> None:
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return answers

    with httpx.Client(transport=_NoNetwork()) as client:
        f = fetcher(client, resolver=resolver)
        with pytest.raises(FetchRefused, match=reason):
            f.fetch("https://pbxt.replicate.delivery/abc/out-0.webp")
    assert asked == [("pbxt.replicate.delivery", 443)]


def test_wildcards_match_subdomains_only() -> None:
    f = SafeFetcher(httpx.Client(transport=_NoNetwork()),
                    allowed_hosts=["*.replicate.delivery", "cdn.example.com"], max_bytes=10)
    assert f.host_allowed("pbxt.replicate.delivery")
    assert f.host_allowed("a.b.replicate.delivery")
    assert f.host_allowed("CDN.example.com.")
    assert not f.host_allowed("replicate.delivery")
    assert not f.host_allowed("evilreplicate.delivery")
    assert not f.host_allowed("x.cdn.example.com")
    with pytest.raises(ValueError):
        SafeFetcher(httpx.Client(), allowed_hosts=["*"], max_bytes=10)


# --- redirects -------------------------------------------------------------------------------


def test_redirect_to_metadata_endpoint_is_refused(http: httpx.Client, server: LocalServer) -> None:
    server.routes["/to-metadata"] = Route(302, b"", {
        "Location": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"})
    with pytest.raises(FetchRefused, match="plain http"):
        fetcher(http, dev=dev_of(server)).fetch(f"http://127.0.0.1:{server.port}/to-metadata")
    https_target = Route(302, b"", {"Location": "https://169.254.169.254/latest/meta-data/"})
    server.routes["/to-metadata-https"] = https_target
    with pytest.raises(FetchRefused, match="link-local"):
        fetcher(http, dev=dev_of(server), hosts=("169.254.169.254",)).fetch(
            f"http://127.0.0.1:{server.port}/to-metadata-https")


def test_redirect_to_loopback_on_another_port_is_refused(
    http: httpx.Client, server: LocalServer, other: LocalServer
) -> None:
    server.routes["/to-other"] = Route(307, b"", {
        "Location": f"http://127.0.0.1:{other.port}/secret"})
    server.routes["/to-other-https"] = Route(307, b"", {
        "Location": f"https://127.0.0.1:{other.port}/secret"})
    f = fetcher(http, dev=dev_of(server), hosts=("127.0.0.1",))
    with pytest.raises(FetchRefused, match="plain http"):
        f.fetch(f"http://127.0.0.1:{server.port}/to-other")
    with pytest.raises(FetchRefused, match="loopback"):
        f.fetch(f"http://127.0.0.1:{server.port}/to-other-https")
    assert other.seen == []


def test_relative_redirects_are_followed_up_to_three(
    http: httpx.Client, server: LocalServer
) -> None:
    serve(server, "/final.png", PNG, "image/png")
    for i, target in enumerate(["/hop2", "/hop3", "/final.png"], start=1):
        server.routes[f"/hop{i}"] = Route(301, b"", {"Location": target})
    got = fetcher(http, dev=dev_of(server)).fetch(f"http://127.0.0.1:{server.port}/hop1")
    assert got.data == PNG
    server.routes["/hop0"] = Route(302, b"", {"Location": "/hop1"})
    with pytest.raises(FetchRefused, match="more than 3 redirects"):
        fetcher(http, dev=dev_of(server)).fetch(f"http://127.0.0.1:{server.port}/hop0")


# --- size cap ----------------------------------------------------------------------------------


def test_oversized_body_with_content_length(http: httpx.Client, server: LocalServer) -> None:
    url = serve(server, "/big-cl.png", PNG + b"\0" * MAX, "image/png")
    with pytest.raises(FetchRefused, match="more than the 65536-byte limit"):
        fetcher(http, dev=dev_of(server)).fetch(url)


def test_oversized_body_without_content_length(http: httpx.Client, server: LocalServer) -> None:
    url = serve(server, "/big-stream.png", PNG + b"\0" * (4 * MAX), "image/png",
                content_length=False)
    with pytest.raises(FetchRefused, match="larger than the 65536-byte limit"):
        fetcher(http, dev=dev_of(server)).fetch(url)
    exact = serve(server, "/exact.png", PNG, "image/png", content_length=False)
    assert fetcher(http, dev=dev_of(server), max_bytes=len(PNG)).fetch(exact).data == PNG


# --- content -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "body", "ctype", "fmt", "size"), [
    ("png", PNG, "image/png", "png", (7, 5)),
    ("jpeg", JPEG, "image/jpeg", "jpeg", (7, 5)),
    ("webp", WEBP, "image/webp", "webp", (7, 5)),
    ("webp-lossless", image("WEBP", (9, 3), lossless=True), "image/webp", "webp", (9, 3)),
    ("gif", image("GIF", (4, 6)), "image/gif", "gif", (4, 6)),
    ("svg", SVG, "image/svg+xml", "svg", (10, 10)),
    ("octet", PNG, "application/octet-stream", "png", (7, 5)),
    ("untyped", JPEG, None, "jpeg", (7, 5)),
])
def test_good_images_are_accepted(http: httpx.Client, server: LocalServer, name: str, body: bytes,
                                  ctype: str | None, fmt: str, size: tuple[int, int] | None
                                  ) -> None:
    got = fetcher(http, dev=dev_of(server)).fetch(serve(server, f"/ok-{name}", body, ctype))
    assert (got.data, got.format) == (body, fmt)
    assert got.content_type == {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp",
                                "gif": "image/gif", "svg": "image/svg+xml"}[fmt]
    assert (None if got.width is None else (got.width, got.height)) == size


@pytest.mark.parametrize(("body", "ctype", "expect", "reason"), [
    (HTML, "image/png", None, "not a png, jpeg, webp, gif or svg"),
    (HTML, "text/html", None, "not a png"),
    (PNG, "text/html", None, "served as text/html"),
    (PNG, "image/jpeg", None, "served as image/jpeg but the content is png"),
    (PNG, "image/png", {"jpeg", "webp"}, "expected jpeg or webp, got png"),
    (SVG, "image/svg+xml", {"png"}, "expected png, got svg"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
     "image/svg+xml", None, "active or foreign content"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml", None,
     "event handler"),
    (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x "y">]><svg/>', "image/svg+xml", None,
     "DOCTYPE"),
    (b"<html><svg/></html>", "image/svg+xml", None, "not a png"),
])
def test_content_that_is_not_what_it_claims_is_refused(
    http: httpx.Client, server: LocalServer, body: bytes, ctype: str, expect: set[str] | None,
    reason: str,
) -> None:
    url = serve(server, f"/bad-{abs(hash((body, ctype)))}", body, ctype)
    with pytest.raises(FetchRefused, match=reason):
        fetcher(http, dev=dev_of(server)).fetch(url, expect=expect)


def test_http_errors(http: httpx.Client, server: LocalServer) -> None:
    f = fetcher(http, dev=dev_of(server))
    with pytest.raises(FetchRefused, match="HTTP 404"):
        f.fetch(f"http://127.0.0.1:{server.port}/missing")
    server.routes["/busy"] = Route(503, b"busy")
    with pytest.raises(RetryableError, match="HTTP 503"):
        f.fetch(f"http://127.0.0.1:{server.port}/busy")


def test_connection_failure_is_retryable(http: httpx.Client) -> None:
    closed = LocalServer()
    port = closed.port
    closed.stop()
    with pytest.raises(RetryableError):
        fetcher(http, dev=(f"127.0.0.1:{port}",)).fetch(f"http://127.0.0.1:{port}/x.png")


def test_credentials_of_the_client_are_not_sent(server: LocalServer) -> None:
    url = serve(server, "/creds.png", PNG, "image/png")
    with httpx.Client(headers={"Authorization": "Bearer r8_secret"},
                      cookies={"session": "s"}) as client:
        fetcher(client, dev=dev_of(server)).fetch(url)
    path, headers = server.seen[-1]
    lowered = {k.lower() for k in headers}
    assert path == "/creds.png" and "authorization" not in lowered and "cookie" not in lowered


# --- DNS pinning -------------------------------------------------------------------------------


def test_connection_goes_to_the_checked_address(http: httpx.Client, server: LocalServer) -> None:
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])  # a rebinding resolver
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    serve(server, "/pinned.png", PNG, "image/png")
    f = SafeFetcher(http, allowed_hosts=(), max_bytes=MAX, resolver=resolver,
                    dev_http_hosts=(f"rebind.test:{server.port}",))
    got = f.fetch(f"http://rebind.test:{server.port}/pinned.png")
    assert got.format == "png" and calls == ["rebind.test"]
    assert server.seen[-1][1]["Host"] == f"rebind.test:{server.port}"


def test_tls_is_verified_against_the_name_while_connecting_to_the_ip(tmp_path: Path) -> None:
    server_ctx, ca_pem = tls_context(tmp_path, "images.test")
    srv = LocalServer(tls=server_ctx)
    try:
        serve(srv, "/tls.webp", WEBP, "image/webp")
        client_ctx = ssl.create_default_context(cadata=ca_pem)
        with httpx.Client(verify=client_ctx, trust_env=False) as client:
            f = SafeFetcher(client, allowed_hosts=(), max_bytes=MAX,
                            dev_http_hosts=(f"images.test:{srv.port}",),
                            resolver=lambda host, port: ["127.0.0.1"])
            got = f.fetch(f"https://images.test:{srv.port}/tls.webp")
            assert got.format == "webp"
            # The certificate names images.test, not the address or another name.
            wrong = SafeFetcher(client, allowed_hosts=(), max_bytes=MAX,
                                dev_http_hosts=(f"other.test:{srv.port}",),
                                resolver=lambda host, port: ["127.0.0.1"])
            with pytest.raises(RetryableError):
                wrong.fetch(f"https://other.test:{srv.port}/tls.webp")
    finally:
        srv.stop()


# --- data: URIs --------------------------------------------------------------------------------


def test_data_uris() -> None:
    f = fetcher(httpx.Client(transport=_NoNetwork()))
    png = f.fetch("data:image/png;base64," + base64.b64encode(PNG).decode())
    assert (png.data, png.format, png.width) == (PNG, "png", 7)
    svg = f.fetch("data:image/svg+xml," + SVG.decode().replace("#", "%23"))
    assert svg.format == "svg" and svg.data == SVG
    assert f.fetch(Fetched(JPEG, "image/jpeg", "jpeg").data_uri()).data == JPEG
    with pytest.raises(FetchRefused, match="larger than"):
        f.fetch("data:image/png;base64," + base64.b64encode(PNG + b"\0" * MAX).decode())
    with pytest.raises(FetchRefused, match="not valid base64"):
        f.fetch("data:image/png;base64,iVBORw0K!!!")
    with pytest.raises(FetchRefused, match="not a png"):
        f.fetch("data:image/png;base64," + base64.b64encode(HTML).decode())
    with pytest.raises(FetchRefused, match="served as text/html"):
        f.fetch("data:text/html;base64," + base64.b64encode(PNG).decode())
    with pytest.raises(FetchRefused, match="no comma"):
        f.fetch("data:image/png;base64")


def test_to_data_uri_round_trip() -> None:
    uri = Fetched(WEBP, "image/webp", "webp").data_uri()
    assert uri.startswith("data:image/webp;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == WEBP
