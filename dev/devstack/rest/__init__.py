"""``/rest/v1``: the PostgREST-compatible part of the local stack.

A PostgREST subset: ``app.RestApp`` answers requests; the modules beside it parse queries
and filters, build SQL, keep the schema cache and map errors the way PostgREST does.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from devstack.rest.app import RestApp

__all__ = ["RestApp", "create_app"]


def create_app(api: RestApp) -> Starlette:
    """The ASGI app of ``api``; its lifespan (``api.start()``/``stop()``) is the caller's."""
    return Starlette(routes=[Mount("", app=api)])
