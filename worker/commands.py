"""Operator and development subcommands (registered onto the CLI parser)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the operations commands to ``sub`` (argparse subparsers)."""
    _ = sub, argparse
