"""The local edge runtime: functions in the Supabase CLI layout run under real Deno.

Hosted Supabase runs ``supabase/functions/<name>/index.ts`` in its edge runtime behind a
gateway that checks the caller's JWT; ``supabase functions serve`` needs Docker, which is
not available here. The stack can instead run chosen functions itself:

    DEVSTACK_DENO_FUNCTIONS="start-generation"  picture-worker stack up
    DEVSTACK_DENO_FUNCTIONS="start-generation,original=tests/deno/original_start_generation.ts"

(or ``Stack(..., deno_functions={name: path})``). Each named function runs as one
``deno run`` process on a 127.0.0.1 port (``runtime``), with the hosted runtime's
environment, and is served at ``/functions/v1/<name>`` behind the gateway's verify_jwt
check (``gateway``); every other name keeps going to functions_compat. The ``deno``
binary is ``DEVSTACK_DENO`` or the one on PATH (the tests use the pinned npm package in
tests/js); ``DENO_DIR`` is ``DEVSTACK_DENO_DIR`` or ``<stack>/deno``.
"""

from devstack.edge.gateway import EdgeGateway
from devstack.edge.runtime import EdgeBootError, EdgeRuntime, parse_functions

__all__ = ["EdgeBootError", "EdgeGateway", "EdgeRuntime", "parse_functions"]
