"""Configuration of the functions app, read from one environment mapping.

    SUPABASE_URL                     the project URL (also where the JWKS is fetched)
    SUPABASE_SERVICE_ROLE_KEY        service key (``SUPABASE_SECRET_KEY`` accepted); when both
                                     are set (the legacy JWT and the sb_secret_ key), a
                                     caller may send either
    SUPABASE_JWT_SECRET              legacy HS256 secret; optional when only asymmetric keys
                                     (ES256/RS256 from the JWKS) sign user tokens
    SUPABASE_ANON_KEY                optional; the project's public key (also read as
                                     ``SUPABASE_PUBLISHABLE_KEY``), sent as ``apikey`` beside a
                                     user's JWT when start-generation calls the database as that
                                     user (else the service key is); accepted verbatim by
                                     process-jobs when it is a non-JWT key
    FUNCTIONS_MAX_PROMPT_CHARS       prompt / negative_prompt length limit (default 2000)
    FUNCTIONS_ALLOWED_SOURCE_HOSTS   img2img source hosts, comma separated, ``*.`` wildcards
                                     (default: the SUPABASE_URL host, *.supabase.co,
                                     replicate.delivery, *.replicate.delivery)
    FUNCTIONS_GENERATE_TIMEOUT       seconds the legacy generate-image waits (default 120)
    FUNCTIONS_JWT_ISSUER             optional; when set, user tokens must carry this ``iss``
    WORKER_DEV_HTTP_HOSTS            host:port pairs where plain http is allowed (local stack)
    REPLICATE_WEBHOOK_SECRET         the ``whsec_...`` key of ``GET /v1/webhooks/default/secret``;
                                     replicate-webhook answers 500 without it
    FUNCTIONS_WEBHOOK_TOLERANCE      seconds a delivery's webhook-timestamp may be off (default 300)
    WORKER_MAX_IMAGE_BYTES           the worker's image size cap (default 25 MiB); a webhook
                                     body may be up to 4/3 of it (a base64 data URI echoed
                                     in the prediction's input) + 64 KiB
    REPLICATE_* / WORKER_*           the worker's settings, used by process-jobs and
                                     process-generation (validated here when a Replicate
                                     token is set, so a bad variable fails at start)

The per-user in-flight limit is no longer a variable: it is the database's
``public.picture_settings.max_in_flight_per_user``, which every door meets
(``FUNCTIONS_MAX_IN_FLIGHT`` is ignored, with a warning).

``FunctionsConfig.from_env`` raises ``ConfigError`` with one line naming the bad variable.
Values are taken from the mapping only: an explicit mapping never mixes with os.environ.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from worker.errors import ConfigError
from worker.settings import (
    DEFAULT_SOURCE_HOSTS,
    CsvList,
    OptionalCsvList,
    OptionalSecret,
    OptionalText,
    Settings,
    SupabaseSettings,
    WebhookSecret,
    describe_validation_error,
)

log = logging.getLogger("functions_compat.config")

RETIRED_LIMIT = "FUNCTIONS_MAX_IN_FLIGHT"
SERVICE_KEY_NAMES = ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY")
PUBLIC_KEY_NAMES = ("SUPABASE_ANON_KEY", "SUPABASE_PUBLISHABLE_KEY")


class _InitOnly(BaseSettings):
    """Settings read from the keyword arguments only (the mapping given to create_app)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class _FunctionsEnv(_InitOnly, SupabaseSettings):
    """The project connection (the worker's validators) and the functions' own variables."""

    jwt_secret: OptionalSecret = Field(None, validation_alias="SUPABASE_JWT_SECRET")
    anon_key: OptionalSecret = Field(
        None, validation_alias=AliasChoices("SUPABASE_ANON_KEY", "SUPABASE_PUBLISHABLE_KEY")
    )
    max_prompt_chars: int = Field(
        2000, ge=1, le=100_000, validation_alias="FUNCTIONS_MAX_PROMPT_CHARS"
    )
    allowed_source_hosts: OptionalCsvList = Field(
        None, validation_alias="FUNCTIONS_ALLOWED_SOURCE_HOSTS"
    )
    generate_timeout: float = Field(
        120.0, gt=0, le=3600, validation_alias="FUNCTIONS_GENERATE_TIMEOUT"
    )
    jwt_issuer: OptionalText = Field(None, validation_alias="FUNCTIONS_JWT_ISSUER")
    dev_http_hosts: CsvList = Field((), validation_alias="WORKER_DEV_HTTP_HOSTS")
    webhook_secret: WebhookSecret = Field(None, validation_alias="REPLICATE_WEBHOOK_SECRET")
    webhook_tolerance: int = Field(
        300, ge=1, le=86_400, validation_alias="FUNCTIONS_WEBHOOK_TOLERANCE"
    )
    max_image_bytes: int = Field(
        Settings.model_fields["max_image_bytes"].default,
        ge=1024,
        validation_alias="WORKER_MAX_IMAGE_BYTES",
    )


class WorkerEnvSettings(_InitOnly, Settings):
    """The worker's Settings, read from the functions app's mapping instead of os.environ."""


@dataclass(frozen=True)
class FunctionsConfig:
    supabase_url: str
    service_key: str = field(repr=False)
    jwt_secret: str | None = field(repr=False)
    anon_key: str | None = field(repr=False)
    max_prompt_chars: int
    allowed_source_hosts: tuple[str, ...]
    generate_timeout: float
    jwt_issuer: str | None
    dev_http_hosts: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    worker_settings: Settings | None = field(default=None, repr=False)
    worker_config_problem: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_tolerance: int = 300
    max_image_bytes: int = 25 * 1024 * 1024
    # Every form of the project's keys the caller may send (legacy JWT, sb_ key).
    service_keys: tuple[str, ...] = field(default=(), repr=False)
    public_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def webhook_max_bytes(self) -> int:
        """The largest webhook body: a delivery echoes the prediction's input, which may hold
        an img2img source as a base64 data URI (4/3 of WORKER_MAX_IMAGE_BYTES), plus 64 KiB
        for the rest of the prediction."""
        return 4 * math.ceil(self.max_image_bytes / 3) + 64 * 1024

    @property
    def jwks_url(self) -> str:
        return f"{self.supabase_url}/auth/v1/.well-known/jwks.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FunctionsConfig:
        """Validate ``env``; ``ConfigError`` names the first bad variable."""
        values = {str(k): str(v) for k, v in env.items()}
        kwargs: dict[str, Any] = dict(values)
        try:
            parsed = _FunctionsEnv(**kwargs)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(_FunctionsEnv, exc)) from None
        if any(k.upper() == RETIRED_LIMIT for k in values):
            log.warning(
                "%s is no longer read: the per-user in-flight limit is the database's "
                "public.picture_settings.max_in_flight_per_user",
                RETIRED_LIMIT,
            )
        hosts = parsed.allowed_source_hosts
        if hosts is None:
            own = (urlsplit(parsed.supabase_url).hostname or "").lower()
            hosts = tuple(dict.fromkeys((own, *DEFAULT_SOURCE_HOSTS)))
        worker_settings, problem = _worker_settings(values)
        service_key = parsed.supabase_service_role_key.get_secret_value()
        anon_key = parsed.anon_key.get_secret_value() if parsed.anon_key else None
        return cls(
            supabase_url=parsed.supabase_url,
            service_key=service_key,
            jwt_secret=parsed.jwt_secret.get_secret_value() if parsed.jwt_secret else None,
            anon_key=anon_key,
            max_prompt_chars=parsed.max_prompt_chars,
            allowed_source_hosts=hosts,
            generate_timeout=parsed.generate_timeout,
            jwt_issuer=parsed.jwt_issuer,
            dev_http_hosts=parsed.dev_http_hosts,
            env=values,
            worker_settings=worker_settings,
            worker_config_problem=problem,
            webhook_secret=(
                parsed.webhook_secret.get_secret_value() if parsed.webhook_secret else None
            ),
            webhook_tolerance=parsed.webhook_tolerance,
            max_image_bytes=parsed.max_image_bytes,
            service_keys=_keys(values, service_key, SERVICE_KEY_NAMES),
            public_keys=_keys(values, anon_key, PUBLIC_KEY_NAMES),
        )

    def secrets(self) -> list[str]:
        """Secret values, for the log redaction filter."""
        found = [self.service_key, *self.service_keys, self.jwt_secret, self.webhook_secret]
        if self.worker_settings is not None:
            found.extend(self.worker_settings.secrets())
        return [s for s in found if s]


def _keys(values: Mapping[str, str], first: str | None, names: tuple[str, ...]) -> tuple[str, ...]:
    """``first`` and every other non-blank value of ``names`` (case-insensitive)."""
    upper = {k.upper(): v.strip() for k, v in values.items()}
    found = [first, *(upper.get(name) for name in names)]
    return tuple(dict.fromkeys(k for k in found if k))


def _worker_settings(values: Mapping[str, str]) -> tuple[Settings | None, str | None]:
    """The worker's Settings when Replicate is configured; a bad variable is fatal.

    Without a Replicate token the app still serves start-generation and generate-image;
    process-jobs and process-generation answer 500 naming the missing variable.
    """
    upper = {k.upper() for k in values}
    if not upper & {"REPLICATE_API_TOKEN", "REPLICATE_API_KEY"}:
        return None, "REPLICATE_API_TOKEN: required but not set"
    return WorkerEnvSettings.load(**values), None
