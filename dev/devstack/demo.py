"""`picture-worker demo`: the whole system end to end on the local stack.

Starts the local Supabase-compatible stack (Postgres + API + fake Replicate) and the worker
daemon, signs up a demo user with supabase-py, submits a dozen generations across model
families through `start-generation` (one img2img, one the model refuses, one cancelled by
the user), shows progress live, saves the finished images under ``demo-output/``, prints a
timing table, and stops everything it started. Exit code 0 when every generation reached
the end it was expected to reach.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw
from supabase import Client, ClientOptions, create_client

from devstack.pg import free_port
from devstack.stack import Stack, StackState

TERMINAL = ("completed", "failed", "cancelled")
DEMO_IN_FLIGHT = 50
ROW = "{:<20} {:<40} {:<10} {:<10} {:>8} {:>10} {:>10} {:>8}"


@dataclass
class Planned:
    label: str
    model_id: str
    prompt: str
    expect: str = "completed"
    extra: dict[str, Any] | None = None
    cancel: bool = False
    generation_id: str = ""


def plan(quick: bool) -> list[Planned]:
    full = [
        Planned(
            "flux-schnell", "black-forest-labs/flux-schnell", "a lighthouse on a cliff at dawn"
        ),
        Planned(
            "flux-dev img2img",
            "black-forest-labs/flux-dev",
            "the same scene as a watercolour",
            extra={"strength": 0.6},
        ),
        Planned(
            "flux-1.1-pro",
            "black-forest-labs/flux-1.1-pro",
            "a red fox in fresh snow",
            extra={"width": 1344, "height": 768},
        ),
        Planned("ideogram-v3-turbo", "ideogram-ai/ideogram-v3-turbo", "a poster that says HELLO"),
        Planned(
            "imagen-4-fast",
            "google/imagen-4-fast",
            "a bowl of ramen, studio light",
            extra={"width": 768, "height": 1024},
        ),
        Planned("sdxl-lightning", "bytedance/sdxl-lightning-4step", "a cyberpunk street in rain"),
        Planned("sdxl", "stability-ai/sdxl", "an oil painting of a harbour"),
        Planned("seedream-4", "bytedance/seedream-4", "a paper boat on a pond"),
        Planned("recraft-v3-svg", "recraft-ai/recraft-v3-svg", "a minimal mountain logo"),
        Planned("qwen-image", "qwen/qwen-image", "a cat reading a newspaper"),
        Planned(
            "refused by model",
            "black-forest-labs/flux-schnell",
            "[nsfw] something the model refuses",
            expect="failed",
        ),
        Planned(
            "cancelled by user",
            "stability-ai/stable-diffusion-3.5-large",
            "[slow:30] a very slow cathedral",
            expect="cancelled",
            cancel=True,
        ),
    ]
    if not quick:
        return full
    keep = (
        "flux-schnell",
        "flux-dev img2img",
        "recraft-v3-svg",
        "refused by model",
        "cancelled by user",
    )
    return [p for p in full if p.label in keep]


def say(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def daemon(state: StackState, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WORKER_", "SUPABASE_", "REPLICATE_"))
    }
    env.update(state.env())
    env.update(
        {
            "WORKER_LOG_FORMAT": "text",
            "WORKER_HEALTH_PORT": str(free_port()),
            "WORKER_HEALTH_HOST": "127.0.0.1",
            "WORKER_HEARTBEAT_INTERVAL": "1",
            "WORKER_ID": f"demo-{uuid.uuid4().hex[:6]}",
        }
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def source_image(service: Client, state: StackState) -> str:
    """A small PNG in a public bucket: the img2img source (allowed: the project host)."""
    with contextlib.suppress(Exception):
        service.storage.create_bucket("demo-sources", options={"public": True})
    img = Image.new("RGB", (512, 512), (30, 60, 110))
    draw = ImageDraw.Draw(img)
    draw.ellipse((150, 150, 362, 362), fill=(250, 200, 60))
    draw.rectangle((0, 400, 512, 512), fill=(20, 110, 60))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    service.storage.from_("demo-sources").upload(
        "scene.png", buf.getvalue(), {"content-type": "image/png", "upsert": "true"}
    )
    return f"{state.url}/storage/v1/object/public/demo-sources/scene.png"


def submit(user: Client, item: Planned, source_url: str) -> str:
    body: dict[str, Any] = {"prompt": item.prompt, "model_id": item.model_id, **(item.extra or {})}
    if "strength" in body:
        body["source_image_url"] = source_url
    answer: Any = user.functions.invoke("start-generation", {"body": body, "responseType": "json"})
    return str(answer["generation_id"])


def watch(
    service: Client, user: Client, items: list[Planned], timeout: float
) -> dict[str, dict[str, Any]]:
    ids = [p.generation_id for p in items]
    last: dict[str, str] = {}
    cancelled: set[str] = set()
    deadline = time.monotonic() + timeout
    rows: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        query = service.table("image_generations").select("*, images(*)").in_("id", ids)
        data: list[Any] = query.execute().data
        rows = {str(r["id"]): r for r in data}
        for item in items:
            row = rows.get(item.generation_id)
            if row is None:
                continue
            status = row["status"]
            if last.get(item.generation_id) != status:
                before = last.get(item.generation_id)
                arrow = f"{before} -> {status}" if before else status
                say(f"  {time.monotonic() - t0:6.1f}s  {item.label:<20} {arrow}")
                last[item.generation_id] = status
            if item.cancel and status == "processing" and item.generation_id not in cancelled:
                user.rpc("cancel_generation", {"p_generation_id": item.generation_id}).execute()
                cancelled.add(item.generation_id)
                say(f"  {time.monotonic() - t0:6.1f}s  {item.label:<20} (user pressed cancel)")
        if all(rows.get(i, {}).get("status") in TERMINAL for i in ids):
            return rows
        time.sleep(0.25)
    return rows


def _ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def _secs(a: datetime | None, b: datetime | None) -> str:
    return f"{(b - a).total_seconds():.2f}" if a and b else "-"


def report(
    service: Client, items: list[Planned], rows: dict[str, dict[str, Any]], out: Path
) -> bool:
    out.mkdir(parents=True, exist_ok=True)
    header = ROW.format(
        "generation",
        "model",
        "status",
        "expected",
        "queued s",
        "provider s",
        "download s",
        "total s",
    )
    say("")
    say(header)
    say("-" * len(header))
    all_ok = True
    for item in items:
        row = rows.get(item.generation_id, {})
        jobs: list[Any] = (
            service.table("job_queue")
            .select("job_type, started_at, completed_at")
            .eq("payload->>generation_id", item.generation_id)
            .order("created_at")
            .execute()
            .data
        )
        gen_job: dict[str, Any] = next((j for j in jobs if j["job_type"] == "generate-image"), {})
        dl_job: dict[str, Any] = next((j for j in jobs if j["job_type"] == "download-image"), {})
        created = _ts(row.get("created_at"))
        queued = _secs(created, _ts(gen_job.get("started_at")))
        provider = (
            f"{float(row['generation_time_seconds']):.2f}"
            if row.get("generation_time_seconds")
            else "-"
        )
        download = _secs(_ts(dl_job.get("started_at")), _ts(dl_job.get("completed_at")))
        total = _secs(created, _ts(row.get("completed_at")))
        status = row.get("status", "?")
        ok = status == item.expect
        all_ok &= ok
        cells = (item.label, item.model_id, status, item.expect, queued, provider, download, total)
        say(ROW.format(*cells) + ("" if ok else "   <-- unexpected"))
        for image in row.get("images") or []:
            data = httpx.get(image["public_url"], timeout=30).content
            target = out / f"{item.label.replace(' ', '_')}.{image['format']}"
            target.write_bytes(data)
        if status == "failed":
            say(f"{'':<20}   reason: {row.get('error_message')}")
    say("")
    say(f"images saved in {out}/")
    return all_ok


def lift_in_flight_limit(service: Client, limit: int) -> None:
    """A dozen generations at once from one user: lift the per-user in-flight limit (5 by
    default) in the demo stack's database, where every door reads it."""
    service.table("picture_settings").update({"max_in_flight_per_user": limit}).eq(
        "id", True
    ).execute()


def run(quick: bool, root: Path, out: Path) -> int:
    items = plan(quick)
    stack = Stack(root)
    say("==> starting the local stack (PostgreSQL 15 + Supabase-compatible API + fake Replicate)")
    stack.reset()
    state = stack.up(log=lambda m: say(f"    {m}"))
    try:
        fake = f"{state.replicate_url}/_fake"
        httpx.post(f"{fake}/reset", timeout=5)
        httpx.post(
            f"{fake}/config",
            json={"latency_seconds": 0.8 if quick else 2.0, "latency_jitter": 0.5},
            timeout=5,
        ).raise_for_status()
        out.mkdir(parents=True, exist_ok=True)
        worker_log = out / "worker.log"
        with daemon(state, worker_log) as proc:
            say(f"==> worker daemon started (pid {proc.pid}, log: {worker_log})")
            service = create_client(
                state.url,
                state.keys.service_role_key,
                ClientOptions(auto_refresh_token=False, persist_session=False),
            )
            lift_in_flight_limit(service, DEMO_IN_FLIGHT)
            user = create_client(
                state.url,
                state.keys.anon_key,
                ClientOptions(auto_refresh_token=False, persist_session=False),
            )
            email = f"demo-{uuid.uuid4().hex[:8]}@picture.local"
            user.auth.sign_up({"email": email, "password": "demo-password-123"})
            say(f"==> signed up {email} with supabase-py")
            source = source_image(service, state)
            say(f"==> submitting {len(items)} generations through start-generation")
            for item in items:
                item.generation_id = submit(user, item, source)
            rows = watch(service, user, items, timeout=120 if quick else 240)
            ok = report(service, items, rows, out)
            if proc.poll() is not None:
                say(f"the worker exited early with {proc.returncode}; see {worker_log}")
                ok = False
    finally:
        say("==> stopping the worker and the stack")
        stack.down()
    say(
        "demo OK: every generation reached its expected end"
        if ok
        else "demo FAILED: see the table above"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="picture-worker demo")
    parser.add_argument(
        "--quick", action="store_true", help="five generations, shorter latency (CI)"
    )
    parser.add_argument("--root", type=Path, default=Path(".stack/demo"), help="stack state folder")
    parser.add_argument(
        "--out", type=Path, default=Path("demo-output"), help="where images are saved"
    )
    args = parser.parse_args(argv)
    return run(args.quick, args.root, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
