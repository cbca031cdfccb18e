"""The development distribution's commands, registered into ``picture-worker`` through the
``picture_worker.commands`` entry point (dev/pyproject.toml):

    picture-worker stack up|env|down|reset     the local Supabase-compatible stack
    picture-worker demo [--quick]              the end-to-end demo on the local stack

The product never imports this package; a runtime install simply lacks these commands.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any


def _fail(message: str, code: int) -> int:
    print(f"picture-worker: {message}", file=sys.stderr)
    return code


def cmd_stack(args: argparse.Namespace) -> int:
    from devstack.stack import Stack

    stack = Stack(Path(args.root))
    try:
        if args.action == "up":
            state = stack.up(log=lambda m: print(m, file=sys.stderr, flush=True))
            _print_env(state.env(), args.format)
        elif args.action == "env":
            _print_env(stack.state().env(), args.format)
        elif args.action == "down":
            stack.down()
            print("stack stopped", file=sys.stderr)
        elif args.action == "reset":
            stack.reset()
            print(f"stack removed ({args.root})", file=sys.stderr)
    except RuntimeError as exc:
        return _fail(str(exc), 1)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from devstack import demo

    try:
        return demo.run(args.quick, Path(args.root), Path(args.out))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, never a trace: the stack log has the details
        return _fail(f"demo failed: {type(exc).__name__}: {exc}", 1)


def _print_env(env: dict[str, str], fmt: str) -> None:
    """``shell``: ``export K=V`` lines for eval/source; ``env-file``: ``K=V`` lines for
    ``docker|podman run --env-file`` (no quotes, no comments: env files keep them); ``json``."""
    if fmt == "json":
        print(json.dumps(env, indent=2))
        return
    prefix = "export " if fmt == "shell" else ""
    for key, value in env.items():
        print(f"{prefix}{key}={shlex.quote(value) if fmt == 'shell' else value}")


def register_stack(sub: Any) -> None:
    stack = sub.add_parser("stack", help="the local Supabase-compatible stack (development)")
    stack.add_argument("action", choices=["up", "env", "down", "reset"])
    stack.add_argument("--root", default=".stack", help="state folder (default: .stack)")
    stack.add_argument(
        "--format",
        choices=["shell", "env-file", "json"],
        default="shell",
        help="how up/env print the variables: shell `export` lines (default), an env file "
        "for `podman run --env-file`, or JSON",
    )
    stack.set_defaults(func=cmd_stack)


def register_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo on the local stack",
        description="Start the local stack and the daemon, submit a dozen "
        "generations, show progress and a timing table, stop everything.",
    )
    demo.add_argument("--quick", action="store_true", help="five generations, shorter latency")
    demo.add_argument(
        "--root", default=".stack/demo", help="stack state folder (default .stack/demo)"
    )
    demo.add_argument(
        "--out", default="demo-output", help="where images are saved (default demo-output)"
    )
    demo.set_defaults(func=cmd_demo)
