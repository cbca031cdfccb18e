"""Structured logs carry the job fields and never a secret; metrics render valid text."""

from __future__ import annotations

import io
import json
import logging

from worker.logs import DemoteLibraries, JsonFormatter, Redactor, TextFormatter, resolve_format
from worker.metrics import worker_metrics

SECRET = "r8_secret_value_that_must_never_leak"


def _logger(fmt: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(fmt)
    handler.addFilter(Redactor([SECRET]))
    logger = logging.getLogger(f"test.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_with_job_fields_and_redaction() -> None:
    logger, stream = _logger(JsonFormatter())
    logger.info(
        "calling with token %s",
        SECRET,
        extra={
            "action": "job.started",
            "job_id": "j1",
            "job_type": "generate-image",
            "attempt": 2,
            "generation_id": "g1",
            "worker_id": "w1",
            "note": f"Bearer {SECRET}",
        },
    )
    try:
        raise ValueError(f"boom {SECRET}")
    except ValueError:
        logger.exception("failed", extra={"action": "job.error"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["action"] == "job.started"
    assert lines[0]["job_id"] == "j1" and lines[0]["attempt"] == 2 and lines[0]["worker_id"] == "w1"
    assert "[REDACTED]" in lines[0]["msg"]
    assert SECRET not in stream.getvalue()
    assert "ValueError" in lines[1]["exc"]


def test_text_format() -> None:
    logger, stream = _logger(TextFormatter())
    logger.info("hello %s", "world", extra={"action": "x.y", "job_id": "j9"})
    out = stream.getvalue()
    assert "hello world" in out and "action=x.y" in out and "job_id=j9" in out


def test_metrics_render() -> None:
    m = worker_metrics()
    m.inc("picture_worker_jobs_total", job_type="generate-image", outcome="completed")
    m.inc("picture_worker_jobs_total", job_type="generate-image", outcome="completed")
    m.observe(
        "picture_worker_job_duration_seconds", 0.3, job_type="generate-image", outcome="completed"
    )
    m.set("picture_worker_jobs_in_flight", 2)
    text = m.render()
    assert 'picture_worker_jobs_total{job_type="generate-image",outcome="completed"} 2' in text
    assert "# TYPE picture_worker_job_duration_seconds histogram" in text
    assert (
        'picture_worker_job_duration_seconds_bucket{job_type="generate-image",outcome="completed",le="0.5"} 1'
        in text
    )
    assert 'le="0.25"' in text and "picture_worker_job_duration_seconds_count" in text
    assert "picture_worker_jobs_in_flight 2" in text
    assert m.value("picture_worker_jobs_total", job_type="generate-image", outcome="completed") == 2


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_auto_format_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert resolve_format("auto", _Stream(tty=True)) == "text"
    assert resolve_format("auto", _Stream(tty=False)) == "json"
    assert resolve_format("json", _Stream(tty=True)) == "json"
    assert resolve_format("text", _Stream(tty=False)) == "text"


def test_library_records_are_demoted_unless_debugging_and_ours_are_kept() -> None:
    def passes(name: str, level: int, configured: int) -> tuple[bool, str]:
        record = logging.LogRecord(name, level, __file__, 1, "Connection failed", None, None)
        kept = DemoteLibraries(configured).filter(record)
        return kept, record.levelname

    assert passes("realtime._async.client", logging.ERROR, logging.INFO) == (False, "DEBUG")
    assert passes("realtime._async.client", logging.ERROR, logging.DEBUG) == (True, "DEBUG")
    assert passes("httpx", logging.INFO, logging.INFO) == (False, "DEBUG")
    assert passes("worker.realtime", logging.ERROR, logging.INFO) == (True, "ERROR")
    assert passes("uvicorn.error", logging.ERROR, logging.INFO) == (True, "ERROR")


def test_uvicorns_coloured_copy_of_its_message_is_not_logged() -> None:
    logger, stream = _logger(JsonFormatter())
    logger.info("Started server process [%d]", 7,
                extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
    line = json.loads(stream.getvalue())
    assert "color_message" not in line and "\x1b" not in stream.getvalue()
