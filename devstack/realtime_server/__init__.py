"""Supabase Realtime for the local stack (see devstack.realtime).

    protocol    Phoenix framing, vsn 1.0.0 (objects) and 2.0.0 (arrays)
    bindings    postgres_changes bindings, ids and row filters
    changes     the WAL poller: a temporary wal2json slot, polled in commit order
    rows        typed records, filter values and RLS checks, asked of Postgres
    dispatch    one batch of changes -> postgres_changes frames
    connection  one websocket: channels, client frames, bounded send queue
    hub         RealtimeHub: sockets, the poller, broadcast, fault injection
"""
