"""`picture-worker generate`: one generation by hand, the way the app makes it.

    picture-worker generate "a red fox in snow" [--model ID|NAME] [--width W --height H]
        [--steps N] [--guidance G] [--seed S] [--negative TEXT]
        [--image URL --strength S] [--wait] [--out DIR] [--timeout SECONDS]
        [--token JWT | --email E --password P]

It signs in as a user (on the local stack it signs up a throwaway user by itself; against
a hosted project it never creates users: pass ``--token`` or ``--email``/``--password`` of
an existing user), resolves ``--model`` against the ``models`` catalogue (a Replicate id,
a name or a ``models.id``), calls ``POST /functions/v1/start-generation`` exactly as the
app does and prints the generation id. With ``--wait`` it follows the generation live
(Realtime UPDATEs on its row, as the app's clients do, with a slow poll as a safety net),
printing each status with the elapsed seconds, then prints the image's public URL and saves
the file. Exit codes: 0 completed (or submitted, without --wait), 1 failed, cancelled,
timed out or refused, 2 usage or configuration error.

Needs SUPABASE_URL and the client key (SUPABASE_PUBLISHABLE_KEY or SUPABASE_ANON_KEY): the
same two values the app ships with. No service key, no Replicate token.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from worker.errors import ConfigError

TERMINAL = ("completed", "failed", "cancelled")
DEFAULT_MODEL = "black-forest-labs/flux-schnell"
POLL_SECONDS = 2.0
CONFIRM_SECONDS = 5.0  # at most this long for Realtime's confirmation before starting
NEEDS_USER = (
    "sign in as an existing user: pass --token, or --email and --password "
    "(generate creates users only on the local stack)"
)


class GenerateError(Exception):
    """A refusal or failure to report on one line (exit 1)."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "generate",
        help="make one generation by hand and follow it",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    p.add_argument("prompt", help="what to draw")
    p.add_argument("--model", help=f"Replicate id, name or models.id (default {DEFAULT_MODEL})")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--steps", type=int, help="num_inference_steps")
    p.add_argument("--guidance", type=float, help="guidance_scale")
    p.add_argument("--seed", type=int)
    p.add_argument("--negative", help="negative prompt")
    p.add_argument("--image", help="img2img: https URL of the source image")
    p.add_argument("--strength", type=float, help="img2img strength in [0, 1]")
    p.add_argument("--wait", action="store_true", help="follow it live until it ends")
    p.add_argument("--out", default="generated", help="where --wait saves the image")
    p.add_argument("--timeout", type=float, default=600.0, help="--wait gives up after this")
    p.add_argument("--token", help="a user's access token (hosted projects)")
    p.add_argument("--email", help="sign in as this existing user (with --password)")
    p.add_argument("--password", help="the user's password")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from worker.settings import ClientSettings

    logging.getLogger().addHandler(logging.NullHandler())  # the Realtime library's noise
    if (args.image is None) != (args.strength is None):
        return _fail("--image and --strength go together (img2img)", 2)
    if bool(args.email) != bool(args.password):
        return _fail("--email and --password go together", 2)
    try:
        settings = ClientSettings.load()
    except ConfigError as exc:
        return _fail(f"configuration error: {exc.message}", 2)
    if not (args.token or args.email) and not is_local(settings.supabase_url):
        return _fail(NEEDS_USER, 1)
    api = Api(settings.supabase_url, settings.client_key.get_secret_value())
    try:
        with api:
            model = api.resolve_model(args.model)
            token = api.user_token(args.token, args.email, args.password)
            body = request_body(args, model)
            if not args.wait:
                answer = api.start_generation(token, body)
                print(f"generation {answer['generation_id']} {answer.get('status', 'queued')} "
                      f"(model {model})", flush=True)
                print("follow it with --wait, or watch the image_generations row")
                return 0
            return follow(api, token, body, model, Path(args.out), args.timeout)
    except GenerateError as exc:
        return _fail(str(exc), 1)
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach {settings.supabase_url}: {type(exc).__name__}: {exc}", 1)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int) -> int:
    print(f"picture-worker: {message}", file=sys.stderr)
    return code


def request_body(args: argparse.Namespace, model_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": args.prompt, "model_id": model_id}
    optional = {
        "width": args.width,
        "height": args.height,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "seed": args.seed,
        "negative_prompt": args.negative,
        "source_image_url": args.image,
        "strength": args.strength,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


@dataclass
class Api:
    """The few HTTP calls of a client app, with its public key."""

    url: str
    key: str

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(30.0, connect=10.0))

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _headers(self, token: str | None = None) -> dict[str, str]:
        return {"apikey": self.key, "Authorization": f"Bearer {token or self.key}"}

    def user_token(self, token: str | None, email: str | None, password: str | None) -> str:
        if token:
            return token
        if email and password:
            return self._password_grant(email, password)
        if not is_local(self.url):
            raise GenerateError(NEEDS_USER)
        email = f"generate-{secrets.token_hex(4)}@example.test"
        password = secrets.token_urlsafe(16)
        r = self.http.post("/auth/v1/signup", headers=self._headers(),
                           json={"email": email, "password": password})
        if r.status_code >= 400:
            raise GenerateError(f"local sign-up refused: {_message(r)}")
        session = r.json()
        if not session.get("access_token"):
            return self._password_grant(email, password)
        print(f"signed up local user {email}", flush=True)
        return str(session["access_token"])

    def _password_grant(self, email: str, password: str) -> str:
        r = self.http.post("/auth/v1/token", params={"grant_type": "password"},
                           headers=self._headers(), json={"email": email, "password": password})
        if r.status_code >= 400:
            raise GenerateError(f"sign-in refused: {_message(r)}")
        return str(r.json()["access_token"])

    def resolve_model(self, wanted: str | None) -> str:
        r = self.http.get("/rest/v1/models", headers=self._headers(),
                          params={"select": "id,name,replicate_id", "is_active": "eq.true"})
        if r.status_code >= 400:
            raise GenerateError(f"cannot read the model catalogue: {_message(r)}")
        models: list[dict[str, Any]] = r.json()
        wanted = wanted or DEFAULT_MODEL
        for m in models:
            if wanted in (m.get("replicate_id"), m.get("id")) or (
                str(m.get("name", "")).lower() == wanted.lower()
            ):
                return str(m["replicate_id"])
        known = ", ".join(sorted(str(m["replicate_id"]) for m in models)) or "none"
        raise GenerateError(f"unknown or inactive model {wanted!r}; active models: {known}")

    def start_generation(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post("/functions/v1/start-generation", headers=self._headers(token),
                           json=body, timeout=60.0)
        if r.status_code != 200:
            raise GenerateError(f"start-generation answered {r.status_code}: {_message(r)}")
        answer: dict[str, Any] = r.json()
        return answer

    def generation(self, token: str, gid: str) -> dict[str, Any] | None:
        r = self.http.get("/rest/v1/image_generations", headers=self._headers(token),
                          params={"select": "status,error_message", "id": f"eq.{gid}"})
        rows = r.json() if r.status_code == 200 else []
        return rows[0] if rows else None

    def image(self, token: str, gid: str) -> dict[str, Any] | None:
        r = self.http.get("/rest/v1/images", headers=self._headers(token),
                          params={"select": "public_url,format", "generation_id": f"eq.{gid}"})
        rows = r.json() if r.status_code == 200 else []
        return rows[0] if rows else None


def _message(r: httpx.Response) -> str:
    try:
        doc = r.json()
    except ValueError:
        return r.text[:200] or f"HTTP {r.status_code}"
    if isinstance(doc, dict):
        for key in ("error", "msg", "message", "error_description"):
            if doc.get(key):
                return str(doc[key])
    return str(doc)[:200]


# -- following ------
def follow(
    api: Api, token: str, body: dict[str, Any], model: str, out: Path, timeout: float
) -> int:
    """Start the generation with its row's UPDATEs already subscribed, show each status as
    it happens, then fetch and save the image."""
    started = time.monotonic()
    gid, status = asyncio.run(_start_and_watch(api, token, body, model, started, timeout))
    if status is None:
        print(f"picture-worker: still not finished after {timeout:.0f} s", file=sys.stderr)
        return 1
    if status != "completed":
        row = api.generation(token, gid) or {}
        reason = row.get("error_message") or "no reason given"
        print(f"picture-worker: generation {status}: {reason}", file=sys.stderr)
        return 1
    image = api.image(token, gid)
    if image is None:
        raise GenerateError("the generation completed but its images row is not readable")
    url = str(image["public_url"])
    print(f"image: {url}")
    data = api.http.get(url, timeout=60.0)
    if data.status_code != 200:
        raise GenerateError(f"the image did not download: HTTP {data.status_code}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{gid}.{image.get('format') or url.rsplit('.', 1)[-1]}"
    path.write_bytes(data.content)
    print(f"saved: {path} ({len(data.content)} bytes)")
    return 0


async def _start_and_watch(
    api: Api, token: str, body: dict[str, Any], model: str, started: float, timeout: float
) -> tuple[str, str | None]:
    """The user's own rows' UPDATEs over Realtime (the app's way; subscribed and confirmed
    before the generation starts, so no status is missed), with a slow poll of the row as
    the safety net. Returns the generation id and its terminal status (None: timed out)."""
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    confirmed = asyncio.Event()
    realtime = asyncio.create_task(_subscribe(api, token, updates, confirmed))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(confirmed.wait(), timeout=CONFIRM_SECONDS)
    seen: list[str] = []
    submitted = time.monotonic()  # elapsed times count from the request, as the app's would

    def show(status: str) -> None:
        if not seen or seen[-1] != status:
            seen.append(status)
            print(f"  {status:<12} {time.monotonic() - submitted:6.1f} s", flush=True)

    try:
        answer = await loop.run_in_executor(None, api.start_generation, token, body)
        gid = str(answer["generation_id"])
        print(f"generation {gid} {answer.get('status', 'queued')} (model {model})", flush=True)
        show(str(answer.get("status", "queued")))
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                changed_gid, status = await asyncio.wait_for(updates.get(), POLL_SECONDS)
                if changed_gid != gid:
                    continue
            except TimeoutError:
                row = await loop.run_in_executor(None, api.generation, token, gid)
                if row is None:
                    raise GenerateError(f"generation {gid} is not readable by this user") from None
                status = str(row["status"])
            show(status)
            if status in TERMINAL:
                return gid, status
        return gid, None
    finally:
        realtime.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await realtime


def _user_id(token: str) -> str:
    """The ``sub`` of the user's access token (read, not verified: it is our own token)."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return str(claims["sub"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise GenerateError("the access token is not a user's JWT") from None


async def _subscribe(
    api: Api, token: str, updates: asyncio.Queue[tuple[str, str]], confirmed: asyncio.Event
) -> None:
    """Queue (generation id, status) for every UPDATE of the user's generations; set
    ``confirmed`` on the server's "Subscribed to PostgreSQL". Silent on failure: the poll
    goes on."""
    from realtime import AsyncRealtimeClient
    from realtime.types import RealtimePostgresChangesListenEvent

    client = AsyncRealtimeClient(f"{api.url}/realtime/v1", token=api.key, auto_reconnect=False)

    def on_update(payload: Any) -> None:
        record = (payload.get("data") or {}).get("record") or {}
        if record.get("id") and record.get("status"):
            updates.put_nowait((str(record["id"]), str(record["status"])))

    def on_system(payload: Any) -> None:
        message = str(payload.get("message", "") if isinstance(payload, dict) else payload)
        if "Subscribed to PostgreSQL" in message:
            confirmed.set()

    try:
        await client.connect()
        await client.set_auth(token)
        channel = client.channel(f"generations-{secrets.token_hex(4)}")
        channel.on_postgres_changes(
            RealtimePostgresChangesListenEvent.Update,
            on_update,
            table="image_generations",
            schema="public",
            filter=f"user_id=eq.{_user_id(token)}",
        )
        channel.on_system(on_system)
        await channel.subscribe()
        await asyncio.Event().wait()
    except Exception:  # Realtime only makes the poll faster: its failure is not ours
        confirmed.set()
        return
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), timeout=2)
