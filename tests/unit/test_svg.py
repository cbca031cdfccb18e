"""worker.svg: SVG parsed with a real XML parser; active content and external references are
refused (never rewritten), plain vector art passes with its intrinsic size.

Every attack of issue 11 point 4 is a row below, with variants (encodings, prefixes, case,
whitespace inside schemes, CSS escapes); the legitimate documents include the fake
Replicate's recraft-v3-svg output and gradients referenced with ``url(#id)``.
"""

from __future__ import annotations

import base64

import pytest

from devstack.fake_replicate.images import render_svg
from worker.sniff import SizeLimits, inspect_image, sniff
from worker.svg import inspect

NS = 'xmlns="http://www.w3.org/2000/svg"'
XLINK = 'xmlns:xlink="http://www.w3.org/1999/xlink"'
PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a3ddf2f40000000049454e44ae426082"
    )
).decode()


def svg(body: str, attrs: str = "", prolog: str = "") -> bytes:
    return f'{prolog}<svg {NS} {XLINK} width="64" height="64"{attrs}>{body}</svg>'.encode()


# (name, document, a word the refusal must contain)
ATTACKS: list[tuple[str, bytes, str]] = [
    # -- the issue's own findings ------------------------------------------------------------
    ("gt in an attribute before onload", svg('<rect title="a>b" onload="alert(1)"/>'),
     "event handler"),
    ("prefixed XHTML script",
     svg('<h:script xmlns:h="http://www.w3.org/1999/xhtml">alert(1)</h:script>'), "XHTML"),
    ("entity-encoded javascript: scheme", svg('<a href="javascript&#58;alert(1)"><text>x</text></a>'),
     "javascript:"),
    ("external image href", svg('<image href="https://evil.example/x.png" width="9" height="9"/>'),
     "external reference"),
    ("external use", svg('<use href="https://evil.example/s.svg#a"/>'), "external reference"),
    ("@import in a stylesheet", svg("<style>@import url(https://evil.example/x.css);</style>"),
     "@import"),
    ("xml-stylesheet instruction",
     svg("<rect/>", prolog='<?xml-stylesheet type="text/css" href="https://evil.example/x.css"?>'),
     "processing instruction"),
    # -- scripts and embedded content, any prefix or case -------------------------------------
    ("plain script", svg("<script>alert(1)</script>"), "active"),
    ("svg-prefixed script",
     b'<s:svg xmlns:s="http://www.w3.org/2000/svg"><s:script>alert(1)</s:script></s:svg>',
     "active"),
    ("script in an unknown namespace", svg('<x:script xmlns:x="urn:x">alert(1)</x:script>'),
     "active"),
    ("upper-case script", svg("<SCRIPT>alert(1)</SCRIPT>"), "active"),
    ("foreignObject", svg('<foreignObject width="9" height="9"><div/></foreignObject>'),
     "foreignObject"),
    ("XHTML iframe", svg('<iframe xmlns="http://www.w3.org/1999/xhtml" src="https://e.x/"/>'),
     "XHTML"),
    ("SVG Tiny handler", svg('<handler type="text/ecmascript">alert(1)</handler>'), "active"),
    ("XInclude", svg('<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="#a"/>'),
     "XInclude"),
    # -- event handlers -----------------------------------------------------------------------
    ("onload on the root", svg("<rect/>", attrs=' onload="alert(1)"'), "event handler"),
    ("upper-case handler", svg('<rect ONCLICK="alert(1)"/>'), "event handler"),
    ("namespaced handler", svg('<rect xmlns:e="urn:e" e:onmouseover="alert(1)"/>'),
     "event handler"),
    ("handler after a quoted >", svg('<g data-x="&gt;" ><rect id="r" onfocus="alert(1)"/></g>'),
     "event handler"),
    # -- javascript: and friends in any encoding ----------------------------------------------
    ("mixed-case scheme", svg('<a href="JaVaScRiPt:alert(1)"><text>x</text></a>'), "javascript:"),
    ("hex entity", svg('<a href="&#x6A;avascript:alert(1)"><text>x</text></a>'), "javascript:"),
    ("tab inside the scheme", svg('<a href="java&#9;script:alert(1)"><text>x</text></a>'),
     "javascript:"),
    ("newline and leading space", svg('<a href=" &#10;java&#x0A;script&#x3A;alert(1)"/>'),
     "javascript:"),
    ("DEL and C1 controls inside", svg('<a href="java&#x7F;scr&#x85;ipt:alert(1)"/>'),
     "javascript:"),
    ("soft hyphen inside", svg('<a href="java&#xAD;script:alert(1)"/>'), "javascript:"),
    ("control character refused by the parser", svg('<a href="java&#x1F;script:alert(1)"/>'),
     "well-formed"),
    ("zero-width space inside", svg('<a href="java\u200bscript:alert(1)"/>'), "javascript:"),
    ("xlink:href javascript", svg('<a xlink:href="javascript:alert(1)"><text>x</text></a>'),
     "javascript:"),
    ("vbscript", svg('<a href="vbscript:msgbox(1)"/>'), "vbscript:"),
    ("javascript in an animation value",
     svg('<a><set attributeName="title" to="javascript:alert(1)"/></a>'), "javascript:"),
    ("data:text/html link", svg('<a href="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;"/>'),
     "data:"),
    ("nested SVG as data: image",
     svg('<image href="data:image/svg+xml;base64,PHN2Zy8+" width="9" height="9"/>'), "data:"),
    # -- external references ------------------------------------------------------------------
    ("xlink:href image", svg('<image xlink:href="http://evil.example/x.png"/>'),
     "external reference"),
    ("feImage", svg('<filter id="f"><feImage href="https://evil.example/x.png"/></filter>'),
     "external reference"),
    ("link to another site", svg('<a href="https://evil.example/"><text>x</text></a>'),
     "external reference"),
    ("protocol-relative use", svg('<use href="//evil.example/s.svg#a"/>'), "external reference"),
    ("relative use", svg('<use href="other.svg#a"/>'), "external reference"),
    ("file use", svg('<use href="file:///etc/passwd"/>'), "external reference"),
    ("url() in a style attribute", svg('<rect style="fill:url(https://evil.example/p.svg#g)"/>'),
     "external reference"),
    ("quoted url() in style", svg("<rect style=\"fill: url( 'http://evil.example/p#g' )\"/>"),
     "external reference"),
    ("url() in a presentation attribute", svg('<rect fill="url(//evil.example/p.svg#g)"/>'),
     "external reference"),
    ("url() in a style element", svg("<style>rect { fill: url(https://evil.example/g) }</style>"),
     "external reference"),
    ("CSS-escaped url", svg("<style>rect { fill: \\75 rl(https://evil.example/g) }</style>"),
     "external reference"),
    ("CSS-escaped @import", svg('<style>@\\69mport "https://evil.example/x.css";</style>'),
     "@import"),
    ("@import split by a comment", svg('<style>@im/**/port "https://evil.example/x.css";</style>'),
     "@import"),
    ("@import in CDATA", svg('<style><![CDATA[@import "https://evil.example/x.css";]]></style>'),
     "@import"),
    ("image-set", svg('<style>rect { fill: image-set("https://evil.example/x.png" 1x) }</style>'),
     "image-set"),
    ("font from elsewhere",
     svg("<style>@font-face { font-family: f; src: url(https://evil.example/f.woff) }</style>"),
     "external reference"),
    ("cursor url", svg('<rect style="cursor: url(https://evil.example/c.cur), auto"/>'),
     "external reference"),
    ("xml:base", svg('<use href="#a"/>', attrs=' xml:base="https://evil.example/"'), "xml:base"),
    ("animated href", svg('<a href="#x"><set attributeName="href" to="https://evil.example/"/></a>'),
     "animates"),
    ("animated xlink:href",
     svg('<a><animate attributeName="xlink:href" values="#a;https://evil.example/"/></a>'),
     "animates"),
    # -- DOCTYPE, entities, instructions, malformed --------------------------------------------
    ("billion laughs",
     b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
     b'<svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>', "DOCTYPE"),
    ("external entity (XXE)",
     b'<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
     b'<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>', "DOCTYPE"),
    ("public DOCTYPE",
     b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
     b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg xmlns="http://www.w3.org/2000/svg"/>',
     "DOCTYPE"),
    ("instruction inside the root", svg("<?php echo 1; ?><rect/>"), "processing instruction"),
    ("unbound prefix", svg("<h:script>alert(1)</h:script>"), "well-formed"),
    ("not well-formed", b'<svg xmlns="http://www.w3.org/2000/svg"><rect></svg>', "well-formed"),
    ("two roots", svg("") + b"<svg/>", "well-formed"),
    ("root not in the SVG namespace", b'<svg xmlns="urn:not-svg"><rect/></svg>', "root"),
    ("XHTML root", b'<html xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></html>',
     "root"),
    ("not UTF-8", b'<svg xmlns="http://www.w3.org/2000/svg"><text>\xff\xfe</text></svg>',
     "UTF-8"),
    ("declared UTF-7",
     b'<?xml version="1.0" encoding="UTF-7"?><svg xmlns="http://www.w3.org/2000/svg"/>',
     "encoding"),
]

LEGIT: list[tuple[str, bytes, tuple[float, float] | None]] = [
    ("recraft-v3-svg output of the fake", render_svg("a fox & <the> moon", 1024, 768, seed="s"),
     (1024, 768)),
    ("gradient by url(#id)",
     svg('<defs><linearGradient id="g"><stop offset="0" stop-color="#f80"/>'
         '<stop offset="1" stop-color="#08f"/></linearGradient></defs>'
         '<rect width="64" height="64" fill="url(#g)"/>'
         "<circle r=\"9\" style=\"fill: url('#g'); stroke: url( &quot;#g&quot; )\"/>"),
     (64, 64)),
    ("internal references",
     svg('<defs><path id="p" d="M0 0L9 9"/><clipPath id="c"><rect width="9" height="9"/>'
         '</clipPath><mask id="m"/><filter id="f"><feGaussianBlur stdDeviation="2"/></filter>'
         '<marker id="mk"/></defs><use href="#p"/><use xlink:href="#p" clip-path="url(#c)" '
         'mask="url(#m)" filter="url(#f)" marker-end="url(#mk)"/><a href="#p"><text>top</text></a>'
         '<a href=""><text>self</text></a>'),
     (64, 64)),
    ("style element with internal url and plain rules",
     svg('<style>.a { fill: #fff; stroke: url(#g) } /* a comment */ @media (min-width: 9px) '
         '{ .b { opacity: .5 } }</style><rect class="a"/>'),
     (64, 64)),
    ("embedded PNG as data: on <image>",
     svg(f'<image href="data:image/png;base64,{PNG_1PX}" width="1" height="1"/>'), (64, 64)),
    ("javascript as plain text content",
     svg("<text>javascript: is just a word here, onload too</text><title>on display</title>"),
     (64, 64)),
    ("editor metadata",
     b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<!-- Created with Inkscape -->\n'
     b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
     b' xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"'
     b' xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"'
     b' width="210mm" height="297mm" viewBox="0 0 210 297">'
     b'<sodipodi:namedview id="nv" inkscape:zoom="1"/><metadata><rdf:RDF/></metadata>'
     b'<g inkscape:label="Layer 1"><rect width="9" height="9"/></g></svg>',
     (210 * 96 / 25.4, 297 * 96 / 25.4)),
    ("viewBox only", b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 300 150"/>', (300, 150)),
    ("width and viewBox ratio",
     b'<svg xmlns="http://www.w3.org/2000/svg" width="600" viewBox="0,0,300,150"/>', (600, 300)),
    ("relative size", b'<svg xmlns="http://www.w3.org/2000/svg" width="100%" height="100%"/>', None),
    ("points", b'<svg xmlns="http://www.w3.org/2000/svg" width="72pt" height="36pt"/>', (96, 48)),
]


@pytest.mark.parametrize(("name", "document", "reason"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attacks_are_refused(name: str, document: bytes, reason: str) -> None:
    report = inspect(document)
    assert report.problem is not None, f"{name} was accepted"
    assert reason.lower() in report.problem.lower(), report.problem
    assert "Traceback" not in report.problem and len(report.problem) < 200


@pytest.mark.parametrize(("name", "document", "size"), LEGIT, ids=[c[0] for c in LEGIT])
def test_plain_vector_art_passes(
    name: str, document: bytes, size: tuple[float, float] | None
) -> None:
    report = inspect(document)
    assert report.problem is None, report.problem
    if size is None:
        assert report.size is None
    else:
        assert report.size == pytest.approx(size)


def test_every_attack_that_looks_like_svg_is_refused_by_the_fetch_path_too() -> None:
    """What the fetcher sees: sniffed as SVG, then refused by inspect_image."""
    for name, document, _reason in ATTACKS:
        if sniff(document) != "svg":
            continue  # refused earlier, as "not an image"
        problem, _size = inspect_image(document, "svg", SizeLimits())
        assert problem is not None, name


def test_doctypes_are_recognised_as_svg_and_refused_with_a_clear_message() -> None:
    doc = ATTACKS[[a[0] for a in ATTACKS].index("billion laughs")][1]
    assert sniff(doc) == "svg"
    problem, _ = inspect_image(doc, "svg", SizeLimits())
    assert problem == "the SVG has a DOCTYPE or entity declarations (not allowed)"


@pytest.mark.parametrize(("attrs", "reason"), [
    ('width="100000" height="100000"', "WORKER_MAX_IMAGE_SIDE"),
    ('width="8000" height="8000"', "WORKER_MAX_IMAGE_PIXELS"),
    ('viewBox="0 0 100000 10"', "WORKER_MAX_IMAGE_SIDE"),
    ('width="200in" height="1in"', "WORKER_MAX_IMAGE_SIDE"),  # 19200 px
    ('width="1e400" height="10"', "WORKER_MAX_IMAGE_SIDE"),
])
def test_svg_dimensions_are_capped(attrs: str, reason: str) -> None:
    doc = f'<svg xmlns="http://www.w3.org/2000/svg" {attrs}><rect/></svg>'.encode()
    problem, size = inspect_image(doc, "svg", SizeLimits(max_side=8192, max_pixels=40_000_000))
    assert problem is not None and reason in problem, problem
    assert size is None
