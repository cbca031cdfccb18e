"""Build the supabase-py clients the worker uses (one fixed identity: service_role)."""

from __future__ import annotations

from supabase import Client, ClientOptions, create_client

from worker.settings import Settings


def service_client(settings: Settings) -> Client:
    options = ClientOptions(
        auto_refresh_token=False,
        persist_session=False,
        postgrest_client_timeout=30,
        storage_client_timeout=120,
    )
    return create_client(
        settings.supabase_url, settings.supabase_service_role_key.get_secret_value(), options
    )
