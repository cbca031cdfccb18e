"""Webhook-mode settings of the worker: validated at start, the safety net's cadence."""

from __future__ import annotations

import os

import pytest

from worker import webhook_checks
from worker.errors import ConfigError
from worker.settings import Settings

BASE = {
    "SUPABASE_URL": "https://abc.supabase.co",
    "SUPABASE_SERVICE_ROLE_KEY": "service-key-distinctive-123456",
    "REPLICATE_API_TOKEN": "r8_distinctive_token_987654",
    "WORKER_WEBHOOK_URL": "https://fn.example.com/functions/v1/replicate-webhook",
}
SECRET = "whsec_c2lnbmluZy1rZXktb2YtdGhlLXRlc3Rz"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith(("SUPABASE_", "REPLICATE_", "WORKER_")):
            monkeypatch.delenv(key, raising=False)
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_webhook_mode_defaults(env: pytest.MonkeyPatch) -> None:
    env.setenv("REPLICATE_WEBHOOK_SECRET", SECRET)
    settings = Settings.load()
    assert settings.webhook_check_after == 120
    assert webhook_checks.interval(settings) == 30.0
    assert SECRET in settings.secrets()  # scrubbed from every log line


@pytest.mark.parametrize(("after", "interval"), [("1", 1.0), ("8", 2.0), ("86400", 30.0)])
def test_the_check_runs_at_a_quarter_of_the_delay_within_bounds(
    env: pytest.MonkeyPatch, after: str, interval: float
) -> None:
    env.setenv("REPLICATE_WEBHOOK_SECRET", SECRET)
    env.setenv("WORKER_WEBHOOK_CHECK_AFTER", after)
    assert webhook_checks.interval(Settings.load()) == interval


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("REPLICATE_WEBHOOK_SECRET", "whsec_!!not base64!!"),
        ("REPLICATE_WEBHOOK_SECRET", "whsec_"),
        ("WORKER_WEBHOOK_CHECK_AFTER", "0"),
        ("WORKER_WEBHOOK_CHECK_AFTER", "soon"),
    ],
)
def test_bad_values_name_their_variable(env: pytest.MonkeyPatch, var: str, value: str) -> None:
    env.setenv("REPLICATE_WEBHOOK_SECRET", SECRET)
    env.setenv(var, value)
    with pytest.raises(ConfigError, match=var) as info:
        Settings.load()
    assert "!!not base64!!" not in str(info.value)  # a secret is never echoed


def test_a_blank_secret_is_unset(env: pytest.MonkeyPatch) -> None:
    env.setenv("REPLICATE_WEBHOOK_SECRET", "  ")
    with pytest.raises(ConfigError, match="REPLICATE_WEBHOOK_SECRET: required"):
        Settings.load()
    env.delenv("WORKER_WEBHOOK_URL")
    assert Settings.load().webhook_secret is None
