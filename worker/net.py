"""Safe fetching of untrusted URLs (provider outputs, img2img sources).

Rules, each refusal a ``FetchRefused`` (permanent) with a clear message:

- ``https`` only; plain ``http`` only for the exact ``host:port`` entries of
  ``dev_http_hosts`` (the local fake Replicate; empty in production). ``data:`` URIs are
  decoded locally with the same size cap and content checks.
- The host must be on the allow-list (exact names or ``*.suffix``) or a dev host; no
  credentials in the URL.
- Every address the name resolves to must be public: loopback, private, shared (CGNAT),
  link-local (169.254.169.254 included), multicast, reserved and unspecified addresses are
  refused, as are IPv6 forms embedding one (IPv4-mapped, 6to4, Teredo, NAT64). Dev hosts
  may be loopback. The connection is then made **to the checked IP** (the request URL
  carries the IP; ``Host`` and TLS SNI/certificate checks use the name), so a second DNS
  answer cannot swap the target (DNS rebinding).
- Redirects are followed by hand (at most ``max_redirects``), each hop checked again.
- The body is streamed under ``max_bytes`` (a larger ``Content-Length`` is refused before
  reading) and within ``max_seconds``.
- The format is sniffed from the bytes; a body whose content is not an image, does not
  match the served Content-Type, or is not an expected format is refused (an HTML page
  served as image/png is refused). SVGs that are not plain vector art are refused
  (worker.svg), and so are images whose header declares a side or a pixel count past
  ``limits`` (WORKER_MAX_IMAGE_SIDE, WORKER_MAX_IMAGE_PIXELS) or no readable size.

Network failures, timeouts and HTTP 408/429/5xx raise ``RetryableError``. The request
carries no credentials: client-level ``Authorization`` and ``Cookie`` headers are removed.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import math
import socket
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx

from worker.errors import FetchRefused, RetryableError
from worker.ports import Fetched
from worker.sniff import (
    CONTENT_TYPES,
    FORMATS,
    GENERIC_MEDIA_TYPES,
    MEDIA_TYPES,
    SizeLimits,
    inspect_image,
    media_type,
    sniff,
)

__all__ = [
    "Fetched",
    "Resolver",
    "SafeFetcher",
    "UrlTarget",
    "check_url",
    "host_allowed",
    "system_resolver",
]

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ALIASES = {"jpg": "jpeg"}


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (socket.getaddrinfo), in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    return addresses


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` must not be contacted, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            problem = address_problem(embedded, allow_loopback=allow_loopback)
            return None if problem is None else f"{problem} (embedded in {ip})"
    if ip.is_loopback:
        return None if allow_loopback else f"loopback address {ip}"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("not globally routable", not ip.is_global),
    )
    for name, bad in checks:
        if bad:
            return f"{name} address {ip}"
    return None


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """``host`` matches an allow-list entry: an exact name, or ``*.suffix`` for any name
    below ``suffix`` (never ``suffix`` itself). Case and a trailing dot do not count."""
    host = host.lower().rstrip(".")
    for entry in patterns:
        pattern = entry.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


@dataclass(frozen=True)
class UrlTarget:
    url: httpx.URL  # as given
    host: str  # IDNA / ASCII name
    port: int
    dev: bool  # one of the dev_http_hosts (plain http and loopback allowed)


def check_url(
    raw: str, allowed_hosts: Iterable[str], dev_http_hosts: Collection[str] = ()
) -> UrlTarget:
    """The URL rules that need no network: ``https`` (plain ``http`` only for an exact
    ``host:port`` of ``dev_http_hosts``), no credentials, a host on ``allowed_hosts`` (or a
    dev host). ``FetchRefused`` says which rule failed. Used by the fetcher before it
    resolves the name, and by start-generation for ``source_image_url``."""
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise FetchRefused(f"not a valid URL: {exc}") from None
    scheme = url.scheme.lower()
    if scheme not in ("https", "http"):
        raise FetchRefused(f"scheme {scheme or '(none)'!r} is not allowed: use https")
    if url.userinfo:
        raise FetchRefused("URLs with credentials are not allowed")
    host = url.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise FetchRefused("the URL has no host")
    port = url.port or (443 if scheme == "https" else 80)
    dev = _host_port(host, port) in {h.strip().lower() for h in dev_http_hosts}
    if scheme == "http" and not dev:
        raise FetchRefused(f"plain http is not allowed ({host}): use https")
    if not dev and not host_allowed(host, allowed_hosts):
        raise FetchRefused(f"host {host} is not on the allowed list")
    return UrlTarget(url=url, host=host, port=port, dev=dev)


@dataclass(frozen=True)
class _Target:
    url: httpx.URL  # as given
    host: str  # IDNA / ASCII name
    address: str  # the checked IP the connection goes to


class SafeFetcher:
    """Download untrusted URLs under the rules in the module docstring.

    Give it its own ``httpx.Client`` (no auth headers, ``trust_env=False`` in production):
    it strips credentials from requests but cannot vouch for custom transports.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        allowed_hosts: Sequence[str],
        max_bytes: int,
        limits: SizeLimits | None = None,
        dev_http_hosts: Sequence[str] = (),
        resolver: Resolver = system_resolver,
        max_redirects: int = 3,
        timeout: httpx.Timeout | None = None,
        max_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._http = http
        self._allowed = tuple(_host_pattern(h) for h in allowed_hosts)
        self._dev = frozenset(h.strip().lower() for h in dev_http_hosts if h.strip())
        self._max_bytes = max_bytes
        self._limits = limits or SizeLimits()
        self._resolver = resolver
        self._max_redirects = max_redirects
        self._timeout = timeout or httpx.Timeout(30.0, connect=5.0)
        self._max_seconds = max_seconds
        self._clock = clock

    def fetch(self, url: str, *, expect: set[str] | None = None) -> Fetched:
        """Fetch ``url`` (https or data:) and return its checked image bytes."""
        wanted = _expected(expect)
        if url[:5].lower() == "data:":
            data, claimed = self._decode_data_uri(url)
            return _verify(data, claimed, wanted, self._limits)
        started = self._clock()
        current = url
        for _ in range(self._max_redirects + 1):
            target = self._check_url(current)
            location, data, claimed = self._get(target, started)
            if location is None:
                return _verify(data, claimed, wanted, self._limits)
            current = str(target.url.join(location))
            logger.debug("redirect to %s", _for_log(current), extra={"action": "fetch.redirect"})
        raise FetchRefused(f"more than {self._max_redirects} redirects")

    # -- URL and address checks -------------------------------------------------------------

    def host_allowed(self, host: str) -> bool:
        return host_allowed(host, self._allowed)

    def _check_url(self, raw: str) -> _Target:
        target = check_url(raw, self._allowed, self._dev)
        addresses = self._resolve(target.host, target.port)
        for address in addresses:
            problem = address_problem(ipaddress.ip_address(address), allow_loopback=target.dev)
            if problem is not None:
                raise FetchRefused(f"{target.host} resolves to a {problem}")
        return _Target(url=target.url, host=target.host, address=addresses[0])

    def _resolve(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        try:
            found = self._resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise RetryableError(f"cannot resolve {host}: {exc}") from exc
        addresses: list[str] = []
        for address in found:
            try:
                addresses.append(str(ipaddress.ip_address(address)))
            except ValueError:
                raise FetchRefused(f"{host} resolved to a non-address {address!r}") from None
        if not addresses:
            raise RetryableError(f"{host} resolved to no address")
        return addresses

    # -- transfer ---------------------------------------------------------------------------

    def _get(self, target: _Target, started: float) -> tuple[str | None, bytes, str]:
        request = self._http.build_request(
            "GET",
            target.url.copy_with(host=target.address),
            headers={
                "Host": target.url.netloc.decode("ascii"),
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            },
            extensions={"sni_hostname": target.host},
            timeout=self._timeout,
        )
        for name in ("authorization", "cookie", "proxy-authorization"):
            request.headers.pop(name, None)
        try:
            response = self._http.send(request, stream=True, follow_redirects=False)
        except httpx.TransportError as exc:
            raise RetryableError(
                f"fetching from {target.host} failed: {type(exc).__name__}",
                details={"error": type(exc).__name__},
            ) from exc
        try:
            return self._read(response, target, started)
        except httpx.DecodingError as exc:
            raise FetchRefused(f"{target.host} sent an undecodable body") from exc
        except httpx.TransportError as exc:
            raise RetryableError(
                f"download from {target.host} failed: {type(exc).__name__}",
                details={"error": type(exc).__name__},
            ) from exc
        finally:
            response.close()

    def _read(
        self, response: httpx.Response, target: _Target, started: float
    ) -> tuple[str | None, bytes, str]:
        code = response.status_code
        if code in _REDIRECTS:
            location = response.headers.get("location")
            if not location:
                raise FetchRefused(f"{target.host} redirected (HTTP {code}) without a Location")
            return location, b"", ""
        if code in (408, 429) or code >= 500:
            raise RetryableError(
                f"{target.host} answered HTTP {code}", details={"status_code": code}
            )
        if code != 200:
            raise FetchRefused(f"{target.host} answered HTTP {code}", details={"status_code": code})
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self._max_bytes:
            raise FetchRefused(
                f"the file is {int(declared)} bytes, more than the {self._max_bytes}-byte limit"
            )
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > self._max_bytes:
                raise FetchRefused(f"the file is larger than the {self._max_bytes}-byte limit")
            if self._clock() - started > self._max_seconds:
                raise RetryableError(
                    f"download from {target.host} took over {self._max_seconds:g} s"
                )
        return None, bytes(body), response.headers.get("content-type", "")

    def _decode_data_uri(self, uri: str) -> tuple[bytes, str]:
        header, comma, payload = uri[5:].partition(",")
        if not comma:
            raise FetchRefused("malformed data: URI (no comma)")
        params = [p.strip().lower() for p in header.split(";")]
        claimed = params[0] or "text/plain"
        if len(params) > 1 and params[-1] == "base64":
            compact = "".join(payload.split())
            if len(compact) > 4 * math.ceil(self._max_bytes / 3) + 4:
                raise FetchRefused(f"the data: URI is larger than the {self._max_bytes}-byte limit")
            try:
                data = base64.b64decode(compact, validate=True)
            except (binascii.Error, ValueError):
                raise FetchRefused("the data: URI is not valid base64") from None
        else:
            data = unquote_to_bytes(payload)
        if len(data) > self._max_bytes:
            raise FetchRefused(f"the data: URI is larger than the {self._max_bytes}-byte limit")
        return data, claimed


def _verify(
    data: bytes, claimed_header: str, wanted: frozenset[str], limits: SizeLimits
) -> Fetched:
    fmt = sniff(data)
    claimed = media_type(claimed_header)
    if fmt is None:
        served = f" (served as {claimed})" if claimed else ""
        raise FetchRefused(f"the content is not a png, jpeg, webp, gif or svg image{served}")
    if claimed not in GENERIC_MEDIA_TYPES and MEDIA_TYPES.get(claimed) != fmt:
        raise FetchRefused(f"served as {claimed} but the content is {fmt}")
    if fmt not in wanted:
        raise FetchRefused(f"expected {' or '.join(sorted(wanted))}, got {fmt}")
    problem, size = inspect_image(data, fmt, limits)
    if problem is not None:
        raise FetchRefused(problem)
    width, height = size if size is not None else (None, None)
    return Fetched(
        data=data, content_type=CONTENT_TYPES[fmt], format=fmt, width=width, height=height
    )


def _expected(expect: Iterable[str] | None) -> frozenset[str]:
    if expect is None:
        return frozenset(FORMATS)
    wanted = frozenset(_ALIASES.get(f.lower(), f.lower()) for f in expect)
    unknown = wanted - set(FORMATS)
    if unknown or not wanted:
        raise ValueError(f"unknown expected formats: {sorted(unknown) or '(none)'}")
    return wanted


def _host_pattern(pattern: str) -> str:
    value = pattern.strip().lower().rstrip(".")
    if not value or value in ("*", "*.") or ("*" in value and not value.startswith("*.")):
        raise ValueError(f"invalid allowed host pattern {pattern!r}")
    if "*" in value[2:]:
        raise ValueError(f"invalid allowed host pattern {pattern!r}")
    return value


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _for_log(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "..."
