"""Operator and development subcommands (registered onto the CLI parser)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    """Add the operations commands to ``sub`` (argparse subparsers)."""
    _add_functions(sub)


# -- functions ------
def _add_functions(sub: Any) -> None:
    functions = sub.add_parser(
        "functions",
        help="serve the edge-function HTTP contracts (functions_compat)",
        description=(
            "Serve start-generation, process-jobs, process-generation and generate-image "
            "at /<name> and /functions/v1/<name>. Configured by environment variables "
            "(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_JWT_SECRET, FUNCTIONS_*, "
            "and the worker's REPLICATE_*/WORKER_* for process-jobs and process-generation)."
        ),
    )
    functions.add_argument("--host", default="0.0.0.0", help="interface (default 0.0.0.0)")
    functions.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    functions.set_defaults(func=_cmd_functions)


def _cmd_functions(args: argparse.Namespace) -> int:
    import os

    import uvicorn
    from functions_compat.app import create_app
    from functions_compat.config import FunctionsConfig

    from worker import logs
    from worker.errors import ConfigError

    try:
        config = FunctionsConfig.from_env(os.environ)
        app = create_app(os.environ)
    except ConfigError as exc:
        print(f"picture-worker: configuration error: {exc.message}", file=sys.stderr)
        return 2
    settings = config.worker_settings
    logs.configure(
        settings.log_level if settings else "INFO",
        settings.log_format if settings else "json",
        config.secrets(),
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,  # keep the worker's logging (JSON, secrets redacted)
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0
