"""SVG documents checked with a real XML parser: plain vector art passes, anything else is refused.

Stored SVGs are served from the public bucket's origin as ``image/svg+xml``, where a
browser opening one runs its scripts and loads what it references. ``inspect`` parses the
bytes with defusedxml (expat; no DTD, no entity, no external resource is ever processed)
and walks every element and attribute. A document is **refused, never rewritten**, when it
has:

- a DOCTYPE (and so any entity declaration), or any processing instruction
  (``<?xml-stylesheet?>`` included), or is not well-formed, not UTF-8, or has a root other
  than ``<svg>`` in the SVG namespace;
- a script or an element that embeds active or foreign content, in any namespace and under
  any prefix (``script``, ``foreignObject``, ``handler``, ``iframe``, ``object``, ...), or
  any XHTML, XSLT or XInclude element;
- an event-handler attribute (``on*``, any namespace), or an ``xml:base``;
- a ``javascript:``, ``vbscript:`` or ``data:text/html``-like URL in any attribute, once the
  parser has decoded entities (``javascript&#58;``) and whitespace, control and invisible
  characters are removed and case is folded;
- an external reference: every ``href`` / ``src`` (``xlink:href`` included) must be an
  internal ``#id`` reference, except a base64 ``data:`` PNG, JPEG, WebP or GIF on
  ``<image>`` / ``<feImage>``; every CSS ``url(...)`` (style attributes, presentation
  attributes, ``<style>``) must be ``url(#id)``; ``@import``, ``image-set()`` and the like
  are refused, CSS escapes and comments decoded first;
- an animation (``<set>``, ``<animate>``...) of an ``href`` or an event attribute.

``inspect`` also reads the intrinsic size (``width`` / ``height`` in absolute units, else
the ``viewBox``), which the caller caps like any raster header.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import DefusedXMLParser

__all__ = ["SvgReport", "inspect"]

SVG_NS = "http://www.w3.org/2000/svg"
XML_NS = "http://www.w3.org/XML/1998/namespace"
FORBIDDEN_NAMESPACES = {
    "http://www.w3.org/1999/xhtml": "an XHTML element",
    "http://www.w3.org/1999/XSL/Transform": "an XSLT element",
    "http://www.w3.org/2001/XInclude": "an XInclude element",
    "http://www.w3.org/2001/xml-events": "an XML Events element",
}
FORBIDDEN_ELEMENTS = frozenset(
    {
        "script",
        "foreignobject",
        "handler",
        "listener",
        "iframe",
        "frame",
        "embed",
        "object",
        "applet",
        "base",
        "link",
        "meta",
        "form",
    }
)
ANIMATIONS = frozenset({"set", "animate", "animatemotion", "animatetransform", "animatecolor"})
IMAGE_ELEMENTS = frozenset({"image", "feimage"})
URL_ATTRIBUTES = frozenset({"href", "src"})
DANGEROUS_SCHEMES = ("javascript:", "vbscript:", "livescript:", "mocha:")
DANGEROUS_DATA = ("data:text/", "data:application/", "data:image/svg")
_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|jpg|webp|gif)(?:;[a-z0-9=._-]+)*;base64,", re.I)
_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\r\f]?|(\n)|(.))", re.S)
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.S)
_CSS_URL = re.compile(r"(?:url|src)\(\s*(['\"]?)(.*?)\1\s*\)", re.S)
_CSS_FORBIDDEN: tuple[str, ...] = ("@import", "image-set(", "image(", "cross-fade(", "element(")
_CSS_FORBIDDEN += ("expression(", "-moz-binding", "behavior:")
_LENGTH = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zA-Z%]*)\s*$")
_PX_PER_UNIT = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0}
_PX_PER_UNIT |= {"cm": 96 / 2.54, "mm": 96 / 25.4, "q": 96 / 101.6}
_ENCODING = re.compile(rb"""\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")
_MAX_SNIPPET = 60


@dataclass(frozen=True)
class SvgReport:
    problem: str | None  # why the document must not be stored; None for plain vector art
    size: tuple[float, float] | None = None  # intrinsic width, height in CSS pixels


class _Refused(Exception):
    pass


class _Builder(TreeBuilder):
    """A tree builder that remembers processing instructions, inside the root or not."""

    def __init__(self) -> None:
        super().__init__()
        self.instructions: list[str] = []

    def pi(self, target: str, text: str | None = None) -> Element:
        self.instructions.append(target)
        return Element("?pi")


def inspect(data: bytes) -> SvgReport:
    """Parse ``data`` and say whether it may be stored, with its intrinsic size."""
    try:
        root = _parse(data)
        for element in root.iter():
            _check_element(element)
    except _Refused as exc:
        return SvgReport(str(exc))
    return SvgReport(None, _size(root))


def _parse(data: bytes) -> Element:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused("the SVG is not valid UTF-8") from None
    declared = _ENCODING.match(data)
    if declared and declared.group(1).decode("ascii", "replace").lower() not in (
        "utf-8",
        "utf8",
        "us-ascii",
    ):
        raise _Refused("the SVG declares an encoding other than UTF-8")
    builder = _Builder()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True)
    try:
        parser.feed(data)
        root: Element = parser.close()
    except (DTDForbidden, EntitiesForbidden):
        raise _Refused("the SVG has a DOCTYPE or entity declarations (not allowed)") from None
    except DefusedXmlException:
        raise _Refused("the SVG references external entities (not allowed)") from None
    except ParseError as exc:
        raise _Refused(f"the SVG is not well-formed XML ({exc})") from None
    if builder.instructions:
        raise _Refused(
            f"the SVG has a processing instruction (<?{builder.instructions[0][:40]}?>)"
        )
    if root.tag != f"{{{SVG_NS}}}svg":
        raise _Refused("the root element is not <svg> in the SVG namespace")
    return root


def _split(name: str) -> tuple[str, str]:
    """``{ns}local`` -> (ns, local)."""
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        return ns, local
    return "", name


def _check_element(element: Element) -> None:
    ns, local = _split(element.tag)
    name = local.lower()
    if ns in FORBIDDEN_NAMESPACES:
        raise _Refused(f"the SVG has {FORBIDDEN_NAMESPACES[ns]} (<{local}>)")
    if name in FORBIDDEN_ELEMENTS:
        raise _Refused(f"the SVG has active or foreign content (<{local}>)")
    for key, value in element.attrib.items():
        _check_attribute(name, key, value)
    if name in ANIMATIONS:
        target = _split(element.attrib.get("attributeName", "").strip())[1].lower()
        target = target.rpartition(":")[2]
        if target in URL_ATTRIBUTES or target.startswith("on"):
            raise _Refused(f"the SVG animates the {target} attribute of an element")
    if name == "style":
        _check_css("".join(element.itertext()), "<style>")


def _check_attribute(element: str, key: str, value: str) -> None:
    ns, local = _split(key)
    attr = local.lower()
    if attr.startswith("on"):
        raise _Refused(f"the SVG has an event handler ({local}=...)")
    if ns == XML_NS and attr == "base":
        raise _Refused("the SVG sets xml:base")
    if attr in URL_ATTRIBUTES:
        compact = _compact(value)
        _check_scheme(compact, local)
        _check_reference(element, local, compact)
    elif ":" in value:  # every scheme needs its colon (entities are decoded by now)
        _check_scheme(_compact(value), local)
    _check_css(value, f"{local}=...")


def _compact(value: str) -> str:
    """``value`` without whitespace, control or invisible characters, in lower case."""
    kept = (
        ch
        for ch in value
        if not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf", "Zs", "Zl", "Zp")
    )
    return "".join(kept).lower()


def _check_scheme(compact: str, where: str) -> None:
    for scheme in DANGEROUS_SCHEMES:
        if scheme in compact:
            raise _Refused(f"the SVG has a {scheme} URL ({where}=...)")
    for prefix in DANGEROUS_DATA:
        if prefix in compact:
            raise _Refused(f"the SVG embeds a document as a data: URL ({where}=...)")


def _check_reference(element: str, attr: str, compact: str) -> None:
    if compact == "" or compact.startswith("#"):
        return
    if element in IMAGE_ELEMENTS and _DATA_IMAGE.match(compact):
        return
    raise _Refused(f"the SVG has an external reference ({attr}={_snippet(compact)})")


def _check_css(text: str, where: str) -> None:
    if not any(c in text for c in "(@:\\"):
        return  # a number, a colour, a name: nothing CSS could load or run
    css = _CSS_COMMENT.sub("", _unescape_css(text)).lower()
    compact = _compact(css)
    _check_scheme(compact, where)
    for marker in _CSS_FORBIDDEN:
        if marker in compact:
            raise _Refused(f"the SVG stylesheet uses {marker.rstrip('(:')} ({where})")
    for match in _CSS_URL.finditer(css):
        target = _compact(match.group(2))
        if target and not target.startswith("#"):
            shown = _snippet(target)
            raise _Refused(f"the SVG has an external reference (url({shown}) in {where})")


def _unescape_css(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        hex_digits, newline, char = match.groups()
        if hex_digits:
            code = int(hex_digits, 16)
            return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
        if newline:
            return ""
        return str(char)

    return _CSS_ESCAPE.sub(replace, text)


def _snippet(text: str) -> str:
    return text if len(text) <= _MAX_SNIPPET else text[:_MAX_SNIPPET] + "..."


def _size(root: Element) -> tuple[float, float] | None:
    width = _length(root.attrib.get("width"))
    height = _length(root.attrib.get("height"))
    box = _view_box(root.attrib.get("viewBox"))
    if width is None and box is not None:
        width = box[0] if height is None else height * box[0] / box[1]
    if height is None and box is not None:
        height = box[1] if width is None else width * box[1] / box[0]
    if width is None or height is None:
        return None
    return width, height


def _length(value: str | None) -> float | None:
    """An absolute length in CSS pixels; None for a missing, relative (%, em) or bad one."""
    if value is None:
        return None
    match = _LENGTH.match(value)
    if match is None:
        return None
    factor = _PX_PER_UNIT.get(match.group(2).lower())
    number = float(match.group(1))
    if factor is None or not number > 0:
        return None
    return number * factor


def _view_box(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    parts = value.replace(",", " ").split()
    if len(parts) != 4:
        return None
    try:
        width, height = float(parts[2]), float(parts[3])
    except ValueError:
        return None
    if not (width > 0 and height > 0):
        return None
    return width, height
