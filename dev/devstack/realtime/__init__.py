"""Supabase Realtime at ``/realtime/v1/websocket``: Phoenix channels and postgres_changes.

What the official clients need (WIRE.md section 4):

* Phoenix channels over one websocket, framed per the ``vsn`` query parameter: 1.0.0 objects
  for supabase-py, 2.0.0 arrays for supabase-js. The ``apikey`` query parameter must be a
  valid project key, otherwise the handshake is refused (HTTP 401).
* ``phx_join`` with ``config.postgres_changes``: the reply echoes the bindings with integer
  ids at once; the subscription itself exists only ``realtime_subscribe_delay`` seconds
  later, announced by the ``system`` "Subscribed to PostgreSQL" message (changes committed
  before it are not delivered); a binding on a table outside the ``supabase_realtime``
  publication gets the real server's system error instead, and no retry. The channel acts as its
  ``access_token`` (or the apikey when there is none): service_role sees every change,
  other roles only rows their RLS policies let them select (DELETEs are not RLS-checked).
* Changes come from the WAL of the real database (a temporary wal2json slot, as Supabase's
  replication poller does), only for tables in the ``supabase_realtime`` publication, in
  commit order, with ``to_jsonb``-typed records.

Also here: ``access_token`` updates, ``phx_leave``, heartbeats, broadcast relay (with
``self``), presence accepted and ignored, and ``POST /_stack/realtime/drop`` to drop every
socket (fault tests).

Modules:
    protocol    Phoenix framing, vsn 1.0.0 (objects) and 2.0.0 (arrays)
    bindings    postgres_changes bindings, ids and row filters
    subscription  when a join's subscription exists: publication check, system messages
    changes     the WAL poller: a temporary wal2json slot, polled in commit order
    rows        typed records, filter values and RLS checks, asked of Postgres
    dispatch    one batch of changes -> postgres_changes frames
    connection  one websocket: channels, client frames, bounded send queue
    hub         RealtimeHub: sockets, the poller, broadcast, fault injection
"""

from __future__ import annotations

from devstack.realtime.hub import RealtimeHub

__all__ = ["RealtimeHub"]
