"""Runtime knobs of the fake Replicate (``/v1/_fake/config``), its counters and prompt directives.

Knobs are a pydantic model with ``extra="forbid"``: a typo in a test's config patch is a 400,
not a silently ignored setting.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Rate = Field(default=0.0, ge=0.0, le=1.0)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class FakeConfig(BaseModel):
    """Everything a test may change. Defaults make a fast, well-behaved Replicate."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Lifecycle timing: `starting` for queue_seconds, then `processing` for latency_seconds
    # (+- latency_jitter, uniformly), then the output appears; finalize_seconds later the
    # status turns `succeeded` (> 0 reproduces sync-mode "output present, still processing").
    # The jitter has a generator of its own, seeded by random_seed: with the same seed the
    # n-th prediction created gets the same latency in every run, whatever else draws.
    latency_seconds: float = Field(default=0.5, ge=0.0, le=3600.0)
    latency_jitter: float = Field(default=0.0, ge=0.0, le=3600.0)
    queue_seconds: float = Field(default=0.05, ge=0.0, le=3600.0)
    finalize_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    # Model failures (status `failed`, HTTP stays 201/200).
    fail_rate: float = Rate
    fail_error: str = "NSFW content detected. Try running it again, or try a different prompt."
    # Injected HTTP errors on the Replicate endpoints (not on /_fake, not on /files).
    http_429_rate: float = Rate
    http_5xx_rate: float = Rate
    http_429_next: int = Field(default=0, ge=0)
    http_5xx_next: int = Field(default=0, ge=0)
    http_5xx_status: int = Field(default=503, ge=500, le=599)
    retry_after_seconds: int | None = Field(default=None, ge=0)
    fault_methods: list[Literal["GET", "POST"]] = Field(
        default_factory=lambda: ["GET", "POST"]  # type: ignore[arg-type]
    )
    # Cancel-After: Replicate's minimum is 5 s; tests may lower it to keep runs short.
    cancel_after_min_seconds: float = Field(default=5.0, ge=0.0, le=3600.0)
    # Auth: tokens look like r8_...; extra_tokens are accepted too; broke ones get 402.
    extra_tokens: list[str] = Field(default_factory=list)
    broke_tokens: list[str] = Field(default_factory=list)
    # Outputs.
    output_mode: Literal["url", "data"] = "url"
    file_ttl_seconds: float = Field(default=3600.0, gt=0.0)
    prediction_ttl_seconds: float = Field(default=6 * 3600.0, gt=0.0)
    max_predictions: int = Field(default=20000, ge=10)
    max_render_side: int = Field(default=1024, ge=16, le=4096)
    files_require_auth: bool = False
    # Webhooks.
    webhook_secret: str = Field(
        default_factory=new_webhook_secret, pattern=r"^whsec_[A-Za-z0-9+/=]+$"
    )
    webhook_delay_seconds: float = Field(default=0.0, ge=0.0, le=600.0)
    webhook_duplicate_rate: float = Rate
    webhook_drop_rate: float = Rate
    webhook_max_attempts: int = Field(default=4, ge=1, le=20)
    webhook_retry_base_seconds: float = Field(default=0.5, ge=0.0, le=60.0)
    # Deliveries go to loopback hosts only unless this is set (keeps test traffic local).
    webhook_allow_any_host: bool = False
    webhook_timeout_seconds: float = Field(default=5.0, gt=0.0, le=120.0)
    random_seed: int | None = None


@dataclass
class Stats:
    """Counters shown by ``GET /v1/_fake/stats``."""

    requests: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    predictions_created: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    cancels: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    webhooks: Counter[str] = field(default_factory=Counter)
    ignored_inputs: Counter[str] = field(default_factory=Counter)

    def request(self, endpoint: str, status: int) -> None:
        self.requests[endpoint][str(status)] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": {k: dict(v) for k, v in sorted(self.requests.items())},
            "predictions_created": dict(self.predictions_created),
            "outcomes": dict(self.outcomes),
            "cancels": self.cancels,
            "injected": dict(self.injected),
            "ignored_inputs": dict(self.ignored_inputs),
            "webhooks": {
                key: self.webhooks[key]
                for key in (
                    "attempted",
                    "sent",
                    "failed",
                    "gave_up",
                    "dropped",
                    "duplicated",
                    "refused",
                )
            },
        }


_SLOW = re.compile(r"\[slow:(\d+(?:\.\d+)?)\]")


@dataclass(frozen=True)
class Directives:
    """Deterministic behaviours requested by a prompt: ``[fail] [nsfw] [abort] [slow:N] [422]``."""

    fail: bool = False
    nsfw: bool = False
    abort: bool = False
    reject: bool = False
    slow: float | None = None

    @classmethod
    def parse(cls, prompt: Any) -> Directives:
        if not isinstance(prompt, str) or "[" not in prompt:
            return cls()
        text = prompt.lower()
        match = _SLOW.search(text)
        return cls(
            fail="[fail]" in text,
            nsfw="[nsfw]" in text,
            abort="[abort]" in text,
            reject="[422]" in text,
            slow=min(float(match.group(1)), 3600.0) if match else None,
        )
