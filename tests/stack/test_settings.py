"""The stack's switches (devstack.settings): hosted's values by default, parsed and checked
from DEVSTACK_* and from POST /_stack/settings."""

from __future__ import annotations

import pytest

from devstack.settings import SettingsError, StackSettings


def test_defaults_are_hosted_values() -> None:
    assert StackSettings.from_env({}).as_dict() == {
        "url_limit": 8192,
        "max_rows": 1000,
        "schema_reload_delay": 0.25,
        "realtime_subscribe_delay": 0.5,
        "jwt_alg": "ES256",
    }


def test_environment_overrides_are_parsed() -> None:
    settings = StackSettings.from_env({
        "DEVSTACK_URL_LIMIT": "0", "DEVSTACK_MAX_ROWS": "50",
        "DEVSTACK_REALTIME_SUBSCRIBE_DELAY": "0", "DEVSTACK_JWT_ALG": "hs256",
        "DEVSTACK_UNRELATED": "ignored",
    })
    assert (settings.url_limit, settings.max_rows, settings.realtime_subscribe_delay,
            settings.jwt_alg) == (0, 50, 0.0, "HS256")


@pytest.mark.parametrize(("changes", "message"), [
    ({"max_rows": -1}, "max_rows must be 0"),
    ({"url_limit": "lots"}, "url_limit must be a whole number"),
    ({"realtime_subscribe_delay": 61}, "realtime_subscribe_delay must be 0..60"),
    ({"jwt_alg": "RS256"}, "jwt_alg must be one of"),
    ({"max_rowz": 1}, "unknown setting(s): max_rowz"),
])
def test_bad_values_name_the_setting(changes: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        StackSettings().changed(changes)
    assert message in str(raised.value)
