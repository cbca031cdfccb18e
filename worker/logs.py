"""Logging setup: JSON lines or text, secrets redacted. Only the CLI calls configure().

``WORKER_LOG_FORMAT=auto`` (the default) writes text to a terminal and JSON lines anywhere
else (a container, a file, a pipe); the image presets ``json``.

Libraries that log on their own (the Realtime client logs ERROR "Connection failed" on
every reconnect, httpx logs every request at INFO) are folded in: their records are
demoted to DEBUG, so they show only with WORKER_LOG_LEVEL=DEBUG, and the daemon reports the
same events in its own lines (``realtime.error``, ``realtime.retry``, ``claim.failed``...).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
FIELD_ORDER = ("action", "worker_id", "job_id", "job_type", "attempt", "generation_id", "duration")


class Redactor(logging.Filter):
    """Replaces every known secret value in the rendered message and extra fields."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
            for key, value in list(vars(record).items()):
                if key not in _STANDARD and isinstance(value, str):
                    setattr(record, key, self.scrub(value))
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


# Extra fields that are presentation for another formatter (uvicorn's ANSI-coloured copy of
# its message), never data.
_HIDDEN = {"color_message"}
# Client libraries whose own records the worker reports better itself (their failures
# reach our code as exceptions). uvicorn and asyncio are not among them: their errors are
# real ones.
LIBRARIES = ("httpx", "httpcore", "hpack", "websockets", "realtime", "postgrest", "storage3",
             "supabase")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v
        for k, v in vars(record).items()
        if k not in _STANDARD and k not in _HIDDEN and not k.startswith("_")
    }


class DemoteLibraries(logging.Filter):
    """Records of the libraries' own loggers become DEBUG (kept only at DEBUG level)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] not in LIBRARIES:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self._level <= logging.DEBUG


def resolve_format(fmt: str, stream: Any = None) -> str:
    """``auto``: text on a terminal, JSON lines otherwise."""
    if fmt != "auto":
        return fmt
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if callable(isatty) and isatty() else "json"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extras = _extras(record)
        for key in FIELD_ORDER:
            if extras.get(key) is not None:
                doc[key] = extras.pop(key)
        doc.update({k: v for k, v in extras.items() if v is not None})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = _extras(record)
        fields = " ".join(f"{k}={extras[k]}" for k in FIELD_ORDER if extras.get(k) is not None)
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        line = f"{ts} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line += f"  [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


def configure(level: str = "INFO", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = resolve_format(fmt, sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    numeric = logging.getLevelName(level)
    handler.addFilter(DemoteLibraries(numeric if isinstance(numeric, int) else logging.INFO))
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries log request URLs and payloads at INFO/DEBUG: do not even build those records
    # unless asked for DEBUG.
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
