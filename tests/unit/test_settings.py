"""Settings: validated at start, one clear line naming the variable, secrets never shown."""

from __future__ import annotations

import pytest

from worker.errors import ConfigError
from worker.settings import Settings

BASE = {
    "SUPABASE_URL": "https://abc.supabase.co",
    "SUPABASE_SERVICE_ROLE_KEY": "service-key-distinctive-123456",
    "REPLICATE_API_TOKEN": "r8_distinctive_token_987654",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(__import__("os").environ):
        if key.startswith(("SUPABASE_", "REPLICATE_", "WORKER_")):
            monkeypatch.delenv(key, raising=False)
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_defaults(env: pytest.MonkeyPatch) -> None:
    s = Settings.load()
    assert s.concurrency == 3
    assert s.job_timeout == 600
    assert s.storage_bucket == "generated-images"
    assert s.job_types == ("generate-image", "download-image", "process-webhook", "cleanup-storage")
    assert s.replicate_api_base_url == "https://api.replicate.com/v1"
    assert s.allowed_download_hosts == ("replicate.delivery", "*.replicate.delivery")
    assert s.log_format == "auto"  # text on a terminal, JSON otherwise
    assert s.webhook_url is None


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("SUPABASE_URL", None, "SUPABASE_URL: required but not set"),
        ("SUPABASE_URL", "abc.supabase.co", "SUPABASE_URL: must be an http(s) URL"),
        ("SUPABASE_SERVICE_ROLE_KEY", None, "SUPABASE_SERVICE_ROLE_KEY: required but not set"),
        ("REPLICATE_API_TOKEN", None, "REPLICATE_API_TOKEN: required but not set"),
        ("REPLICATE_API_TOKEN", "   ", "REPLICATE_API_TOKEN: must not be empty"),
        (
            "WORKER_CONCURRENCY",
            "0",
            "WORKER_CONCURRENCY: Input should be greater than or equal to 1",
        ),
        ("WORKER_CONCURRENCY", "three", "WORKER_CONCURRENCY: Input should be a valid integer"),
        ("WORKER_JOB_TYPES", "generate-image,paint", "WORKER_JOB_TYPES: unknown job type(s) paint"),
        ("WORKER_LOG_FORMAT", "xml", "WORKER_LOG_FORMAT: Input should be 'auto', 'json' or 'text'"),
        ("WORKER_POLL_INTERVAL", "-1", "WORKER_POLL_INTERVAL: Input should be greater than 0"),
    ],
)
def test_bad_setting_names_the_variable(
    env: pytest.MonkeyPatch, var: str, value: str | None, expected: str
) -> None:
    if value is None:
        env.delenv(var, raising=False)
    else:
        env.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        Settings.load()
    message = info.value.message
    assert message.startswith(expected), message
    assert "\n" not in message
    for secret in BASE.values():
        if "distinctive" in secret:
            assert secret not in message


def test_alternative_names(env: pytest.MonkeyPatch) -> None:
    env.delenv("SUPABASE_SERVICE_ROLE_KEY")
    env.delenv("REPLICATE_API_TOKEN")
    env.setenv("SUPABASE_SECRET_KEY", "sb_secret_abcdef")
    env.setenv("REPLICATE_API_KEY", "r8_other")
    s = Settings.load()
    assert s.supabase_service_role_key.get_secret_value() == "sb_secret_abcdef"
    assert s.replicate_api_token.get_secret_value() == "r8_other"


def test_csv_lists_and_webhook_requires_secret(env: pytest.MonkeyPatch) -> None:
    env.setenv("WORKER_JOB_TYPES", " download-image , generate-image ")
    env.setenv("WORKER_DEV_HTTP_HOSTS", "127.0.0.1:5000")
    s = Settings.load()
    assert s.job_types == ("download-image", "generate-image")
    assert s.dev_http_hosts == ("127.0.0.1:5000",)
    env.setenv("WORKER_WEBHOOK_URL", "https://abc.supabase.co/functions/v1/replicate-webhook")
    with pytest.raises(ConfigError, match="REPLICATE_WEBHOOK_SECRET"):
        Settings.load()


def test_heartbeat_must_be_shorter_than_lease(env: pytest.MonkeyPatch) -> None:
    env.setenv("WORKER_LEASE_SECONDS", "10")
    env.setenv("WORKER_HEARTBEAT_INTERVAL", "10")
    with pytest.raises(ConfigError, match="WORKER_HEARTBEAT_INTERVAL"):
        Settings.load()


def test_secrets_are_redacted_in_repr(env: pytest.MonkeyPatch) -> None:
    s = Settings.load()
    text = repr(s) + str(s) + str(s.model_dump())
    for secret in BASE.values():
        if "distinctive" in secret:
            assert secret not in text
    assert set(s.secrets()) >= {BASE["SUPABASE_SERVICE_ROLE_KEY"], BASE["REPLICATE_API_TOKEN"]}
