"""The worker's configuration: the only place environment variables are read.

Every setting is an environment variable (names below); ``Settings.load()`` validates them
all at start and raises ``ConfigError`` with one line naming the bad variable. Secrets are
``SecretStr`` so they never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.errors import ConfigError
from worker.jobs import CLEANUP_STORAGE, DOWNLOAD_IMAGE, GENERATE_IMAGE, PROCESS_WEBHOOK
from worker.sniff import SizeLimits

JOB_TYPES = (GENERATE_IMAGE, DOWNLOAD_IMAGE, PROCESS_WEBHOOK, CLEANUP_STORAGE)
# img2img sources: Supabase Storage and Replicate's CDN (the functions add the project host)
DEFAULT_SOURCE_HOSTS = ("*.supabase.co", "replicate.delivery", "*.replicate.delivery")


# -- validators shared by every settings class (the daemon's, the operator commands', and
# -- the functions app's in functions_compat.config) ------
def split_csv(value: object) -> object:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; other values pass through."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as https://<ref>.supabase.co")
    return value.rstrip("/")


def not_blank(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be empty")
    return value


def blank_is_unset(value: object) -> object:
    """An empty or blank variable counts as not set."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return None if isinstance(value, str) and not value.strip() else value


def webhook_signing_secret(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        from worker.webhooks import WebhookSignatureError, sign

        try:
            sign(value.get_secret_value(), "check", 0, b"")
        except WebhookSignatureError:
            raise ValueError("must be the whsec_<base64> signing secret of Replicate") from None
    return value


CsvList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_csv)]
OptionalCsvList = Annotated[tuple[str, ...] | None, NoDecode, BeforeValidator(split_csv)]
HttpUrl = Annotated[str, AfterValidator(http_url)]
Secret = Annotated[SecretStr, AfterValidator(not_blank)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(blank_is_unset)]
OptionalText = Annotated[str | None, BeforeValidator(blank_is_unset)]
WebhookSecret = Annotated[
    SecretStr | None, BeforeValidator(blank_is_unset), AfterValidator(webhook_signing_secret)
]
SERVICE_KEY_ENV = AliasChoices("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SupabaseSettings(BaseSettings):
    """The project connection: all that the operator commands need."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True
    )

    supabase_url: HttpUrl = Field(validation_alias="SUPABASE_URL")
    supabase_service_role_key: Secret = Field(validation_alias=SERVICE_KEY_ENV)

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Read and validate the environment; ``ConfigError`` names the first bad variable."""
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(cls, exc)) from None
        settings.check()
        return settings

    def check(self) -> None:
        """Rules that span several variables (raise ConfigError)."""


class ClientSettings(BaseSettings):
    """What a client app ships with (``picture-worker generate``): the project URL and its
    public key. Never a service key."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True
    )

    supabase_url: HttpUrl = Field(validation_alias="SUPABASE_URL")
    client_key: Secret = Field(
        validation_alias=AliasChoices("SUPABASE_PUBLISHABLE_KEY", "SUPABASE_ANON_KEY")
    )

    @classmethod
    def load(cls) -> Self:
        try:
            return cls()  # type: ignore[call-arg]  # read from the environment
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(cls, exc)) from None


class Settings(SupabaseSettings):
    """Environment variables of ``picture-worker run`` (see the README's configuration table)."""

    storage_bucket: str = Field("generated-images", validation_alias="WORKER_STORAGE_BUCKET")

    # -- Replicate ------
    replicate_api_token: Secret = Field(
        validation_alias=AliasChoices("REPLICATE_API_TOKEN", "REPLICATE_API_KEY")
    )
    replicate_api_base_url: HttpUrl = Field(
        "https://api.replicate.com/v1", validation_alias="REPLICATE_API_BASE_URL"
    )
    replicate_sync_wait: int = Field(1, ge=1, le=60, validation_alias="WORKER_REPLICATE_WAIT")
    # Unset: adaptive polling (worker.replicate.polling); a number: one uniform interval.
    replicate_poll_interval: float | None = Field(
        None, gt=0, le=60, validation_alias="WORKER_REPLICATE_POLL_INTERVAL"
    )
    # Non-create requests a minute for the whole Replicate account (its limit is about
    # 3,000), shared by the live workers.
    replicate_request_budget: float = Field(
        2400.0, ge=60, le=100_000, validation_alias="WORKER_REPLICATE_REQUEST_BUDGET"
    )
    credit_pause_seconds: float = Field(300.0, ge=1, validation_alias="WORKER_CREDIT_PAUSE_SECONDS")

    # -- the loop ------
    worker_id: str = Field(default_factory=default_worker_id, validation_alias="WORKER_ID")
    concurrency: int = Field(3, ge=1, le=64, validation_alias="WORKER_CONCURRENCY")
    poll_interval: float = Field(5.0, gt=0, le=3600, validation_alias="WORKER_POLL_INTERVAL")
    poll_interval_degraded: float = Field(
        1.0, gt=0, le=3600, validation_alias="WORKER_POLL_INTERVAL_DEGRADED"
    )
    realtime: bool = Field(True, validation_alias="WORKER_REALTIME")
    lease_seconds: int = Field(60, ge=5, le=86400, validation_alias="WORKER_LEASE_SECONDS")
    heartbeat_interval: float = Field(15.0, gt=0, validation_alias="WORKER_HEARTBEAT_INTERVAL")
    job_timeout: float = Field(600.0, gt=0, validation_alias="WORKER_JOB_TIMEOUT")
    shutdown_grace: float = Field(30.0, ge=0, validation_alias="WORKER_SHUTDOWN_GRACE")
    job_types: CsvList = Field(JOB_TYPES, validation_alias="WORKER_JOB_TYPES")
    requeue_interval: float = Field(60.0, gt=0, validation_alias="WORKER_REQUEUE_INTERVAL")

    # -- fetching ------
    allowed_download_hosts: CsvList = Field(
        ("replicate.delivery", "*.replicate.delivery"),
        validation_alias="WORKER_ALLOWED_DOWNLOAD_HOSTS",
    )
    allowed_source_hosts: CsvList = Field(
        DEFAULT_SOURCE_HOSTS, validation_alias="WORKER_ALLOWED_SOURCE_HOSTS"
    )
    dev_http_hosts: CsvList = Field((), validation_alias="WORKER_DEV_HTTP_HOSTS")
    max_image_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, validation_alias="WORKER_MAX_IMAGE_BYTES"
    )
    # Caps on what an image header declares (outputs and img2img sources), checked before
    # anything is stored: a few bytes of PNG can declare 100000 x 100000 pixels.
    max_image_side: int = Field(
        SizeLimits.max_side, ge=64, le=1_000_000, validation_alias="WORKER_MAX_IMAGE_SIDE"
    )
    max_image_pixels: int = Field(
        SizeLimits.max_pixels,
        ge=64 * 64,
        le=10**12,
        validation_alias="WORKER_MAX_IMAGE_PIXELS",
    )

    # -- webhook mode ------
    webhook_url: OptionalText = Field(None, validation_alias="WORKER_WEBHOOK_URL")
    webhook_secret: WebhookSecret = Field(None, validation_alias="REPLICATE_WEBHOOK_SECRET")
    # Safety net: a generation still `processing` this long after its last change, with no
    # delivery, gets its prediction fetched (and re-checked this often while it runs).
    webhook_check_after: int = Field(
        120, ge=1, le=86400, validation_alias="WORKER_WEBHOOK_CHECK_AFTER"
    )

    # -- observability ------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="WORKER_LOG_LEVEL"
    )
    # auto: text on a terminal, JSON lines otherwise (the image presets json)
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", validation_alias="WORKER_LOG_FORMAT"
    )
    health_host: str = Field("0.0.0.0", validation_alias="WORKER_HEALTH_HOST")
    health_port: int = Field(8080, ge=0, le=65535, validation_alias="WORKER_HEALTH_PORT")

    # -- validators ------
    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlsplit(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError("must be the public https URL of the replicate-webhook function")
        return value

    @field_validator("job_types")
    @classmethod
    def _job_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in JOB_TYPES]
        if unknown:
            raise ValueError(
                f"unknown job type(s) {', '.join(unknown)}; known: {', '.join(JOB_TYPES)}"
            )
        if not value:
            raise ValueError("at least one job type")
        return value

    # -- loading ------
    def check(self) -> None:
        settings = self
        if settings.webhook_url and settings.webhook_secret is None:
            raise ConfigError("REPLICATE_WEBHOOK_SECRET: required when WORKER_WEBHOOK_URL is set")
        if settings.heartbeat_interval >= settings.lease_seconds:
            raise ConfigError(
                "WORKER_HEARTBEAT_INTERVAL: must be shorter than WORKER_LEASE_SECONDS"
            )

    @property
    def image_limits(self) -> SizeLimits:
        return SizeLimits(max_side=self.max_image_side, max_pixels=self.max_image_pixels)

    def secrets(self) -> list[str]:
        """Secret values, for the log redaction filter."""
        values = [self.supabase_service_role_key, self.replicate_api_token, self.webhook_secret]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]


def env_name(model: type[BaseSettings], field: str) -> str:
    info = model.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return first if isinstance(first, str) else field.upper()
    if isinstance(alias, str):
        return alias
    return field.upper()


def describe_validation_error(model: type[BaseSettings], exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = err.get("loc") or ("?",)
    field = str(loc[0])
    name = field if field.isupper() else env_name(model, field)
    if err.get("type") == "missing":
        return f"{name}: required but not set"
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{name}: {message}"
