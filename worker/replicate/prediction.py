"""The prediction object of Replicate's HTTP API (``schemas_prediction_response``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.errors import InvalidInput

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
RUNNING_STATUSES = frozenset({"starting", "processing"})


def _urls(output: Any) -> list[str]:
    """Output file URLs from the shapes models use: a string, a list of strings, an
    object with ``url``, or a list of such objects."""
    items = output if isinstance(output, list) else [output]
    urls: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            item = item.get("url")
        if isinstance(item, str) and item.strip():
            urls.append(item.strip())
    return urls


@dataclass(frozen=True)
class Prediction:
    id: str
    status: str
    output: Any = None
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        """Parse a prediction body (API response or webhook delivery)."""
        if not isinstance(data, Mapping):
            raise InvalidInput("a prediction must be a JSON object")
        pid = data.get("id")
        status = data.get("status")
        if not isinstance(pid, str) or not pid or not isinstance(status, str):
            raise InvalidInput("not a prediction: id and status are required")
        error = data.get("error")
        return cls(
            id=pid,
            status=status,
            output=data.get("output"),
            error=None if error in (None, "") else str(error),
            raw=dict(data),
        )

    @property
    def output_urls(self) -> list[str]:
        return _urls(self.output)

    @property
    def terminal(self) -> bool:
        """succeeded, failed, canceled or aborted: the prediction will not change again."""
        return self.status in TERMINAL_STATUSES

    @property
    def settled(self) -> bool:
        """Terminal, or still ``starting``/``processing`` with its output files already
        present (file-output models in sync mode): nothing more to wait for."""
        return self.terminal or (self.status in RUNNING_STATUSES and bool(self.output_urls))

    @property
    def predict_time(self) -> float | None:
        metrics = self.raw.get("metrics")
        if isinstance(metrics, Mapping):
            value = metrics.get("predict_time")
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return None
