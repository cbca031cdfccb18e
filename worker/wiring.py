"""The composition root: the one place that builds concrete classes and puts them together.

- ``supabase_client``: every supabase-py client of the product (the daemon's adapters, the
  operator commands, the functions app) is built here. One instance per credential and
  use, never shared across credentials: supabase-py rewrites a client's Authorization
  header on auth events, so a client belongs to one identity (here always service_role).
- ``build_services``: the daemon's ``Services`` (queue, generations, storage, Replicate,
  the two safe fetchers), also used by the functions' process-jobs and process-generation.
- ``realtime_wakeups``: the daemon's Realtime subscription.

The CLI, the operator commands and ``functions_compat`` get their clients, ports and
services from here; nothing else in the product imports an adapter's class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
from supabase import Client, ClientOptions, create_client

from worker.adapters import _http
from worker.adapters.realtime import RealtimeWakeups
from worker.adapters.rest import SupabaseGenerations, SupabaseQueue
from worker.adapters.storage import SupabaseImageStore
from worker.daemon import Wakeups
from worker.net import SafeFetcher
from worker.ports import Generations
from worker.replicate.client import ReplicateClient
from worker.replicate.polling import PollPlanner, RequestBudget
from worker.services import Services
from worker.settings import Settings, SupabaseSettings

DB_TIMEOUT = 30.0
STORAGE_TIMEOUT = 120.0


def supabase_client(
    url: str, key: str, *, timeout: float = DB_TIMEOUT, storage_timeout: float = STORAGE_TIMEOUT
) -> Client:
    """A new server-side supabase-py client for ``key`` (no session, no token refresh).

    Its REST, Storage and Auth clients share one httpx client whose hooks record each
    answer's HTTP status (``worker.adapters._http``): supabase-py's errors drop it, and a
    gateway's 502 must not read like a permanent refusal."""
    options = ClientOptions(
        auto_refresh_token=False,
        persist_session=False,
        httpx_client=_http.http_client(timeout, write_timeout=storage_timeout),
    )
    return create_client(url, key, options)


def service_client(settings: SupabaseSettings, *, timeout: float = DB_TIMEOUT) -> Client:
    """The service_role client of ``settings``."""
    key = settings.supabase_service_role_key.get_secret_value()
    return supabase_client(settings.supabase_url, key, timeout=timeout)


def generations(client: Client) -> Generations:
    """Generations and images over ``client`` (the functions read them through the port)."""
    return SupabaseGenerations(client)


def build_services(settings: Settings) -> Services:
    client = service_client(settings)
    limits = httpx.Limits(max_connections=max(10, settings.concurrency * 4))
    replicate_http = httpx.Client(
        timeout=httpx.Timeout(
            connect=10.0, read=settings.replicate_sync_wait + 30.0, write=30.0, pool=30.0
        ),
        limits=limits,
        follow_redirects=False,
    )
    fetch_http = httpx.Client(
        timeout=httpx.Timeout(connect=10.0, read=60.0, write=30.0, pool=30.0),
        limits=limits,
        follow_redirects=False,
        trust_env=False,
    )

    def fetcher(allowed_hosts: tuple[str, ...]) -> SafeFetcher:
        return SafeFetcher(
            fetch_http,
            allowed_hosts=allowed_hosts,
            max_bytes=settings.max_image_bytes,
            limits=settings.image_limits,
            dev_http_hosts=settings.dev_http_hosts,
        )

    budget = RequestBudget(settings.replicate_request_budget)
    return Services(
        settings=settings,
        queue=SupabaseQueue(client),
        generations=SupabaseGenerations(client),
        store=SupabaseImageStore(client, settings.storage_bucket),
        model=ReplicateClient(
            replicate_http,
            settings.replicate_api_token.get_secret_value(),
            settings.replicate_api_base_url,
            wait_seconds=settings.replicate_sync_wait,
            budget=budget,
        ),
        fetch_outputs=fetcher(settings.allowed_download_hosts),
        fetch_sources=fetcher(settings.allowed_source_hosts),
        polling=PollPlanner(budget, uniform=settings.replicate_poll_interval),
    )


OnEvent = Callable[[Mapping[str, Any] | None], None]
WakeupsFactory = Callable[[OnEvent, Callable[[bool], None]], Wakeups]


def realtime_wakeups(settings: SupabaseSettings) -> WakeupsFactory:
    """The daemon's wake-ups: INSERTs of pending jobs on job_queue over Realtime (each
    event hands the daemon the row), with the service key."""
    key = settings.supabase_service_role_key.get_secret_value()

    def build(on_event: OnEvent, on_state: Callable[[bool], None]) -> Wakeups:
        return RealtimeWakeups(settings.supabase_url, key, on_event, on_state)

    return build
