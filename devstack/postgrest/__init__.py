"""A PostgREST 12 subset for the local stack's ``/rest/v1`` (see devstack.postgrest.app)."""

from devstack.postgrest.app import RestApp

__all__ = ["RestApp"]
