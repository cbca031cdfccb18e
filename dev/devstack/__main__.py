"""`python -m devstack serve --root DIR [--deno-function NAME=PATH ...]`: run the stack's HTTP
servers (and the Deno functions, if any) in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

import uvicorn

from devstack.app import create_app
from devstack.context import StackContext
from devstack.edge import EdgeRuntime
from devstack.fake_replicate.app import create_app as create_fake_replicate
from devstack.fake_replicate.config import FakeConfig
from devstack.keys import KeyRing
from devstack.stack import Stack


def _functions_app(state_env: dict[str, str]):  # type: ignore[no-untyped-def]
    try:
        from functions_compat.app import create_app as create_functions
    except ImportError:
        return None
    # The functions' own knobs (FUNCTIONS_*: limits, timeouts) may be set by whoever
    # starts the stack; the project's URL and keys always come from the stack's state.
    tuning = {k: v for k, v in os.environ.items() if k.startswith("FUNCTIONS_")}
    return create_functions({**tuning, **state_env})


def _edge_runtime(
    args: argparse.Namespace, root: Path, state_env: dict[str, str]
) -> EdgeRuntime | None:
    functions: dict[str, Path] = {}
    for item in args.deno_function or []:
        name, _, path = item.partition("=")
        functions[name] = Path(path)
    if not functions:
        return None
    hosted_env = {  # what the hosted edge runtime gives every function
        "SUPABASE_URL": state_env["SUPABASE_URL"],
        "SUPABASE_ANON_KEY": state_env["SUPABASE_ANON_KEY"],
        "SUPABASE_SERVICE_ROLE_KEY": state_env["SUPABASE_SERVICE_ROLE_KEY"],
        "SUPABASE_DB_URL": state_env["DATABASE_URL"],
    }
    return EdgeRuntime(
        functions,
        deno=EdgeRuntime.find_deno(args.deno),
        env=hosted_env,
        log_dir=root,
        deno_dir=Path(args.deno_dir) if args.deno_dir else root / "deno",
    )


async def serve(args: argparse.Namespace) -> None:
    root = args.root
    stack = Stack(root)
    st = stack.state()
    ctx = StackContext(
        keys=st.keys,
        pg_port=st.pg_port,
        public_url=st.url,
        storage_root=stack.storage_dir,
    )
    ctx.keyring = KeyRing(st.keys, on_change=stack.save_keys)
    ctx.functions_app = _functions_app(st.env())
    edge = _edge_runtime(args, stack.root, st.env())
    ctx.extras["edge"] = edge
    api = uvicorn.Server(
        uvicorn.Config(
            create_app(ctx),
            host="127.0.0.1",
            port=st.api_port,
            log_level="warning",
            ws="websockets",
            lifespan="on",
            timeout_graceful_shutdown=2,
            # Long URLs must reach the gateway, which answers Kong's 414 past url_limit.
            h11_max_incomplete_event_size=1024 * 1024,
        )
    )
    fake = uvicorn.Server(
        uvicorn.Config(
            create_fake_replicate(
                public_url=f"http://127.0.0.1:{st.replicate_port}",
                config=FakeConfig(webhook_secret=st.webhook_secret),  # = the stack's env
            ),
            host="127.0.0.1",
            port=st.replicate_port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    for server in (api, fake):
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()

    def _stop() -> None:
        api.should_exit = True
        fake.should_exit = True

    loop.add_signal_handler(signal.SIGTERM, _stop)
    loop.add_signal_handler(signal.SIGINT, _stop)
    if edge is not None:
        await edge.start()
    try:
        await asyncio.gather(api.serve(), fake.serve())
    finally:
        if edge is not None:
            await edge.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument(
        "--deno-function",
        action="append",
        metavar="NAME=PATH",
        help="serve this function module under Deno at /functions/v1/NAME (repeatable)",
    )
    p.add_argument("--deno", help="the deno binary (default: $DEVSTACK_DENO, then PATH)")
    p.add_argument("--deno-dir", help="DENO_DIR of the functions (default: <root>/deno)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
