"""Kong's own answers, as Supabase's API gateway sends them (kong/error_handlers.lua).

When Kong answers by itself (upstream down, slow or broken; URL too long; rate limited),
the body is ``{"message": ...}`` with no ``code``; supabase-py turns it into
``APIError(code=None)`` and drops the HTTP status. Kong renders JSON for ``Accept``
``application/json`` and ``*/*`` (what both Supabase clients send) and when there is none;
this stack answers JSON whatever the ``Accept``.
"""

from __future__ import annotations

import json

from starlette.responses import Response

MESSAGES: dict[int, str] = {
    414: "URI too long",
    429: "API rate limit exceeded",  # the rate-limiting plugin's message
    500: "An unexpected error occurred",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out",
}


def body(status: int) -> bytes:
    """Kong's JSON template, byte for byte: ``{\\n  "message": "..."\\n}\\n``."""
    message = MESSAGES.get(status, f"The upstream server responded with {status}")
    return f'{{\n  "message": {json.dumps(message)}\n}}\n'.encode()


def response(status: int) -> Response:
    headers = {"Server": "kong"}
    if status == 429:
        headers["Retry-After"] = "1"
    return Response(
        body(status), status, headers=headers, media_type="application/json; charset=utf-8"
    )
