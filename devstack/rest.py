"""``/rest/v1``: the PostgREST-compatible part of the local stack.

The implementation lives in the ``devstack.postgrest`` package; this module keeps the
``create_app(ctx)`` entry point the stack composes.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from devstack.context import StackContext
from devstack.postgrest import RestApp


def create_app(ctx: StackContext) -> Starlette:
    return Starlette(routes=[Mount("", app=RestApp(ctx))])
