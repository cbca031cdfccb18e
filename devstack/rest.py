"""Placeholder: replaced by the real implementation."""

from __future__ import annotations

from starlette.applications import Starlette

from devstack.context import StackContext


def create_app(ctx: StackContext) -> Starlette:
    return Starlette(routes=[])
