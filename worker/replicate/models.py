"""The Replicate model families, as data.

A model is assigned to a family by substring of its ``model_id`` (``owner/name``); the
first row whose ``match`` substrings hit wins, so the order of ``FAMILIES`` matters and is
the original system's (SPEC section 6). Each row says how to build the input (the builder
registered for ``name`` in :mod:`worker.replicate.inputs`), which file format the output
has, how to report the image size, and whether image-to-image is supported.

To support a new model of an existing family, add its substring to ``match`` (or rely on
the substring already there) and add a test row. For a new family: add a ``Family``
member, a row here, and a builder in ``inputs.py`` (the import fails until every family
has one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Family(StrEnum):
    FLUX_SCHNELL = "flux-schnell"
    FLUX_DEV = "flux-dev"
    IDEOGRAM = "ideogram"
    IMAGEN = "imagen"
    SDXL_LIGHTNING = "sdxl-lightning"
    SDXL = "sdxl"
    SEEDREAM_4 = "seedream-4"
    SEEDREAM_3 = "seedream-3"
    FLUX_PRO = "flux-1.1-pro"
    RECRAFT_SVG = "recraft-v3-svg"
    RECRAFT = "recraft-v3"
    SD35 = "stable-diffusion-3.5"
    QWEN = "qwen-image"
    GENERIC = "generic"


class OutputRule(StrEnum):
    """How the stored file format is decided (SPEC 6, "Output format")."""

    SVG = "svg"  # always SVG
    PNG = "png"  # always PNG (the builder asks the model for png)
    FROM_URL = "from-url"  # by the output URL's extension, else webp


class SizeRule(StrEnum):
    """How the width and height written to the ``images`` row are computed."""

    REQUESTED = "requested"  # the request's width/height
    SENT_WIDTH_HEIGHT = "sent-width-height"  # the width/height the builder sent
    SENT_SIZE = "sent-size"  # the "WxH" ``size`` the builder sent
    RATIO_SHORT_SIDE_1024 = "ratio-short-side-1024"  # 1024 on the short side at the sent ratio


@dataclass(frozen=True)
class ModelFamily:
    name: Family
    match: tuple[str, ...]
    output: OutputRule
    size: SizeRule
    img2img: bool
    needs_version: bool = False
    examples: tuple[str, ...] = ()  # model ids that must land in this family (tested)

    def matches(self, model_id: str) -> bool:
        lowered = model_id.lower()
        return any(m in lowered for m in self.match)


FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        Family.FLUX_SCHNELL,
        ("flux-schnell",),
        OutputRule.FROM_URL,
        SizeRule.RATIO_SHORT_SIDE_1024,
        img2img=False,
        examples=("black-forest-labs/flux-schnell",),
    ),
    ModelFamily(
        Family.FLUX_DEV,
        ("flux-krea-dev", "flux-dev"),
        OutputRule.FROM_URL,
        SizeRule.RATIO_SHORT_SIDE_1024,
        img2img=True,
        examples=("black-forest-labs/flux-dev", "black-forest-labs/flux-krea-dev"),
    ),
    ModelFamily(
        Family.IDEOGRAM,
        ("ideogram",),
        OutputRule.FROM_URL,
        SizeRule.RATIO_SHORT_SIDE_1024,
        img2img=False,
        examples=("ideogram-ai/ideogram-v3-turbo",),
    ),
    ModelFamily(
        Family.IMAGEN,
        ("imagen",),
        OutputRule.PNG,
        SizeRule.RATIO_SHORT_SIDE_1024,
        img2img=False,
        examples=("google/imagen-4-fast",),
    ),
    ModelFamily(
        Family.SDXL_LIGHTNING,
        ("sdxl-lightning",),
        OutputRule.FROM_URL,
        SizeRule.SENT_WIDTH_HEIGHT,
        img2img=False,
        needs_version=True,
        examples=("bytedance/sdxl-lightning-4step",),
    ),
    ModelFamily(
        Family.SDXL,
        ("sdxl",),
        OutputRule.FROM_URL,
        SizeRule.SENT_WIDTH_HEIGHT,
        img2img=True,
        needs_version=True,
        examples=("stability-ai/sdxl",),
    ),
    ModelFamily(
        Family.SEEDREAM_4,
        ("seedream-4",),
        OutputRule.FROM_URL,
        SizeRule.REQUESTED,
        img2img=True,
        examples=("bytedance/seedream-4",),
    ),
    ModelFamily(
        Family.SEEDREAM_3,
        ("seedream",),
        OutputRule.FROM_URL,
        SizeRule.SENT_WIDTH_HEIGHT,
        img2img=False,
        examples=("bytedance/seedream-3",),
    ),
    ModelFamily(
        Family.FLUX_PRO,
        ("flux-1.1-pro",),
        OutputRule.FROM_URL,
        SizeRule.SENT_WIDTH_HEIGHT,
        img2img=False,
        examples=("black-forest-labs/flux-1.1-pro",),
    ),
    ModelFamily(
        Family.RECRAFT_SVG,
        ("recraft-v3-svg",),
        OutputRule.SVG,
        SizeRule.SENT_SIZE,
        img2img=False,
        examples=("recraft-ai/recraft-v3-svg",),
    ),
    ModelFamily(
        Family.RECRAFT,
        ("recraft",),
        OutputRule.FROM_URL,
        SizeRule.SENT_SIZE,
        img2img=False,
        examples=("recraft-ai/recraft-v3",),
    ),
    ModelFamily(
        Family.SD35,
        ("stable-diffusion-3.5", "sd-3-5"),
        OutputRule.FROM_URL,
        SizeRule.RATIO_SHORT_SIDE_1024,
        img2img=False,
        examples=("stability-ai/stable-diffusion-3.5-large",),
    ),
    ModelFamily(
        Family.QWEN,
        ("qwen",),
        OutputRule.FROM_URL,
        SizeRule.RATIO_SHORT_SIDE_1024,
        img2img=False,
        examples=("qwen/qwen-image",),
    ),
)

GENERIC = ModelFamily(Family.GENERIC, (), OutputRule.FROM_URL, SizeRule.REQUESTED, img2img=False)

# Version hashes of the community models the catalogue ships (supabase/migrations seed).
# Used only when a payload names exactly this model and carries no version.
KNOWN_VERSIONS: Mapping[str, str] = MappingProxyType(
    {
        "bytedance/sdxl-lightning-4step": "6f7a773af6fc3e8de9d5a3c00be77c17308914bf67772726aff83496ba1e3bbe",  # noqa: E501
        "stability-ai/sdxl": "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc",
    }
)


def match_family(model_id: str) -> ModelFamily:
    """The first family whose substrings occur in ``model_id``; ``GENERIC`` otherwise."""
    for family in FAMILIES:
        if family.matches(model_id):
            return family
    return GENERIC
