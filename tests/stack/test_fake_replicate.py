"""The fake Replicate API of the local stack, exercised over HTTP like the real one.

Runs against the session stack's fake (``stack_state.replicate_url``); every test resets the
fake's config, counters and predictions first.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from devstack.stack import StackState

TOKEN = "r8_local_fake_token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIGHTNING = "6f7a773af6fc3e8de9d5a3c00be77c17308914bf67772726aff83496ba1e3bbe"
SDXL = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
REQUIRED = {
    "id",
    "model",
    "version",
    "input",
    "output",
    "data_removed",
    "error",
    "status",
    "created_at",
    "urls",
    "logs",
    "started_at",
    "completed_at",
    "metrics",
    "source",
}


class Fake:
    """A client for one test: the Replicate API plus the fake's control endpoints."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30.0)

    def config(self, **patch: Any) -> dict[str, Any]:
        r = self.http.post("/_fake/config", json=patch)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def stats(self) -> dict[str, Any]:
        return dict(self.http.get("/_fake/stats").json())

    def create(
        self,
        model: str,
        input: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        return self.http.post(
            f"/models/{model}/predictions",
            json={"input": input, **extra},
            headers={**AUTH, **(headers or {})},
        )

    def create_version(
        self, version: str, input: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.http.post(
            "/predictions",
            json={"version": version, "input": input},
            headers={**AUTH, **(headers or {})},
        )

    def get(self, pred_id: str) -> dict[str, Any]:
        r = self.http.get(f"/predictions/{pred_id}", headers=AUTH)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def poll(self, pred_id: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pred = self.get(pred_id)
            if pred["status"] in ("succeeded", "failed", "canceled", "aborted"):
                return pred
            time.sleep(0.1)
        raise AssertionError(f"prediction {pred_id} did not finish in {timeout}s")


@pytest.fixture
def fake(stack_state: StackState) -> Iterator[Fake]:
    f = Fake(stack_state.replicate_url)
    assert f.http.post("/_fake/reset", json={"predictions": True}).status_code == 200
    f.config(latency_seconds=0.2, queue_seconds=0.05)
    yield f
    f.http.post("/_fake/reset", json={"predictions": True})
    f.http.close()


class Receiver:
    """A tiny webhook receiver on 127.0.0.1 answering a scripted list of statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.requests.append(
                        ({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("location", f"{receiver.url}/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"got {len(self.requests)} webhook(s), expected {count}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.split("_")[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    sigs = [s.split(",", 1)[1] for s in headers["webhook-signature"].split()]
    return any(hmac.compare_digest(expected, s) for s in sigs)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- creating predictions ---------------------------------------------------------------------


def test_prefer_wait_returns_a_finished_prediction(fake: Fake) -> None:
    r = fake.create(
        "black-forest-labs/flux-schnell",
        {"prompt": "a red fox", "num_outputs": 2},
        headers={"Prefer": "wait"},
    )
    assert r.status_code == 201
    pred = r.json()
    assert set(pred) >= REQUIRED
    assert pred["status"] == "succeeded"
    assert pred["model"] == "black-forest-labs/flux-schnell"
    assert pred["version"] == "hidden"
    assert pred["source"] == "api"
    assert pred["input"] == {"prompt": "a red fox", "num_outputs": 2}
    assert isinstance(pred["output"], list) and len(pred["output"]) == 2
    assert all(u.endswith(".webp") for u in pred["output"])
    assert pred["urls"]["get"] == f"{fake.base}/predictions/{pred['id']}"
    assert pred["urls"]["cancel"] == f"{fake.base}/predictions/{pred['id']}/cancel"
    assert r.headers["location"] == pred["urls"]["get"]
    assert pred["metrics"]["predict_time"] > 0.1
    assert pred["metrics"]["total_time"] >= pred["metrics"]["predict_time"]
    assert _ts(pred["created_at"]) <= _ts(pred["started_at"]) <= _ts(pred["completed_at"])
    assert len(pred["id"]) == 26


def test_without_prefer_the_prediction_starts(fake: Fake) -> None:
    r = fake.create("google/imagen-4-fast", {"prompt": "x"})
    assert r.status_code == 201
    pred = r.json()
    assert pred["status"] == "starting"
    assert pred["output"] is None and pred["started_at"] is None
    done = fake.poll(pred["id"])
    assert done["status"] == "succeeded"
    assert isinstance(done["output"], str) and done["output"].endswith(".jpg")


@pytest.mark.parametrize(
    ("version", "model", "shown"),
    [
        (LIGHTNING, "bytedance/sdxl-lightning-4step", LIGHTNING),
        (f"stability-ai/sdxl:{SDXL}", "stability-ai/sdxl", SDXL),
        ("qwen/qwen-image", "qwen/qwen-image", "hidden"),
    ],
)
def test_predictions_endpoint_accepts_every_version_form(
    fake: Fake, version: str, model: str, shown: str
) -> None:
    r = fake.create_version(version, {"prompt": "a boat"}, headers={"Prefer": "wait=10"})
    assert r.status_code == 201, r.text
    pred = r.json()
    assert (pred["model"], pred["version"], pred["status"]) == (model, shown, "succeeded")
    assert isinstance(pred["output"], list)


def test_unknown_and_community_models_on_the_models_endpoint_are_404(fake: Fake) -> None:
    for model in ("stability-ai/sdxl", "bytedance/sdxl-lightning-4step", "nobody/nothing"):
        r = fake.create(model, {"prompt": "x"})
        assert r.status_code == 404, model
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 404


@pytest.mark.parametrize(
    "version", ["stability-ai/sdxl", "0" * 64, f"stability-ai/sdxl:{LIGHTNING}", "nobody/x"]
)
def test_unknown_version_is_422(fake: Fake, version: str) -> None:
    r = fake.create_version(version, {"prompt": "x"})
    assert r.status_code == 422
    assert r.json()["title"] == "Invalid version or not permitted"


def test_request_body_is_validated_like_the_openapi_schema(fake: Fake) -> None:
    r = fake.http.post("/predictions", json={"model": "qwen/qwen-image", "input": {}}, headers=AUTH)
    assert r.status_code == 422
    descriptions = [f["description"] for f in r.json()["invalid_fields"]]
    assert "Additional property model is not allowed" in descriptions
    assert "version is required" in descriptions
    r = fake.create("qwen/qwen-image", {"prompt": "x"}, version=LIGHTNING)
    assert r.status_code == 422
    assert "Additional property version is not allowed" in r.text
    r = fake.http.post("/models/qwen/qwen-image/predictions", json={}, headers=AUTH)
    assert r.status_code == 422 and "input is required" in r.text
    r = fake.http.post("/models/qwen/qwen-image/predictions", content=b"{not json", headers=AUTH)
    assert r.status_code == 400 and r.json()["status"] == 400
    r = fake.create("qwen/qwen-image", {"prompt": "x"}, webhook_events_filter=["done"])
    assert r.status_code == 422 and r.json()["invalid_fields"][0]["type"] == "enum"


def test_input_validation_failed_with_invalid_fields(fake: Fake) -> None:
    r = fake.create(
        "black-forest-labs/flux-schnell",
        {"prompt": "x", "num_inference_steps": 28, "aspect_ratio": "custom"},
    )
    assert r.status_code == 422
    body = r.json()
    assert body["title"] == "Input validation failed"
    assert body["status"] == 422
    fields = {f["field"]: f for f in body["invalid_fields"]}
    assert fields["input.num_inference_steps"] == {
        "type": "maximum",
        "field": "input.num_inference_steps",
        "description": "Must be less than or equal to 4",
    }
    assert fields["input.aspect_ratio"]["type"] == "enum"
    assert "- input.num_inference_steps: Must be less than or equal to 4" in body["detail"]
    r = fake.create("google/imagen-4-fast", {"aspect_ratio": "1:1"})
    assert r.json()["invalid_fields"] == [
        {"type": "required", "field": "input.prompt", "description": "prompt is required"}
    ]
    assert fake.stats()["predictions_created"] == {}


def test_unknown_inputs_are_ignored_and_counted(fake: Fake) -> None:
    r = fake.create(
        "black-forest-labs/flux-schnell", {"prompt": "x", "guidance_scale": 3, "width": 512}
    )
    assert r.status_code == 201
    assert r.headers["x-fake-ignored-inputs"] == "guidance_scale,width"
    assert "x-fake-ignored-inputs" not in fake.create("qwen/qwen-image", {"prompt": "x"}).headers
    ignored = fake.stats()["ignored_inputs"]
    assert ignored == {
        "black-forest-labs/flux-schnell input.guidance_scale": 1,
        "black-forest-labs/flux-schnell input.width": 1,
    }


def test_wait_timeout_returns_unfinished_then_polling_finishes(fake: Fake) -> None:
    fake.config(latency_seconds=2.5)
    started = time.monotonic()
    r = fake.create("black-forest-labs/flux-dev", {"prompt": "x"}, headers={"Prefer": "wait=1"})
    elapsed = time.monotonic() - started
    assert r.status_code == 202
    assert 0.9 <= elapsed < 2.4
    pred = r.json()
    assert pred["status"] in ("starting", "processing")
    assert pred["output"] is None
    done = fake.poll(pred["id"])
    assert done["status"] == "succeeded" and len(done["output"]) == 1


def test_output_present_while_still_processing(fake: Fake) -> None:
    fake.config(finalize_seconds=3.0)
    r = fake.create("recraft-ai/recraft-v3", {"prompt": "x"}, headers={"Prefer": "wait=5"})
    assert r.status_code == 201
    pred = r.json()
    assert pred["status"] == "processing"
    assert isinstance(pred["output"], str)
    assert httpx.get(pred["output"]).status_code == 200


@pytest.mark.parametrize("value", ["wait=0", "wait=100", "respond-async", "wait=abc"])
def test_bad_prefer_header_is_422(fake: Fake, value: str) -> None:
    r = fake.create("qwen/qwen-image", {"prompt": "x"}, headers={"Prefer": value})
    assert r.status_code == 422


# -- outputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "input", "fmt", "size"),
    [
        (
            "black-forest-labs/flux-schnell",
            {"output_format": "png", "aspect_ratio": "16:9"},
            "PNG",
            (1024, 585),
        ),
        (
            "black-forest-labs/flux-schnell",
            {"output_format": "jpg", "aspect_ratio": "9:21"},
            "JPEG",
            (427, 1024),
        ),
        ("black-forest-labs/flux-schnell", {"megapixels": "0.25"}, "WEBP", (512, 512)),
        ("google/imagen-4-fast", {"output_format": "png"}, "PNG", (1024, 1024)),
        ("ideogram-ai/ideogram-v3-turbo", {"resolution": "512x1536"}, "PNG", (341, 1024)),
        (
            "black-forest-labs/flux-1.1-pro",
            {"aspect_ratio": "custom", "width": 512, "height": 320},
            "WEBP",
            (512, 320),
        ),
        ("bytedance/seedream-3", {}, "JPEG", (1024, 578)),
    ],
)
def test_output_files_decode_to_the_right_format_and_size(
    fake: Fake, model: str, input: dict[str, Any], fmt: str, size: tuple[int, int]
) -> None:
    r = fake.create(model, {"prompt": "a lighthouse at dusk", **input}, headers={"Prefer": "wait"})
    pred = r.json()
    url = pred["output"][0] if isinstance(pred["output"], list) else pred["output"]
    assert url.startswith(fake.base.removesuffix("/v1") + "/files/")
    file = httpx.get(url)
    assert file.status_code == 200
    img = Image.open(io.BytesIO(file.content))
    assert img.format == fmt
    assert img.size == size
    assert (
        file.headers["content-type"]
        == {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[fmt]
    )


def test_single_vs_list_output_shapes(fake: Fake) -> None:
    singles = [
        "black-forest-labs/flux-1.1-pro",
        "ideogram-ai/ideogram-v3-turbo",
        "recraft-ai/recraft-v3",
        "bytedance/seedream-3",
    ]
    lists = [
        "black-forest-labs/flux-krea-dev",
        "bytedance/seedream-4",
        "stability-ai/stable-diffusion-3.5-large",
    ]
    for model in singles + lists:
        extra = {"aspect_ratio": "1:1"} if model == "bytedance/seedream-4" else {}
        pred = fake.create(model, {"prompt": "x", **extra}, headers={"Prefer": "wait"}).json()
        assert pred["status"] == "succeeded", model
        assert isinstance(pred["output"], list if model in lists else str), model


def test_svg_output_is_valid_xml(fake: Fake) -> None:
    pred = fake.create(
        "recraft-ai/recraft-v3-svg", {"prompt": 'a <logo> & "text"'}, headers={"Prefer": "wait"}
    ).json()
    assert isinstance(pred["output"], str) and pred["output"].endswith(".svg")
    file = httpx.get(pred["output"])
    assert file.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(file.content)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert 'a <logo> & "text"' in " ".join(t or "" for t in texts)


def test_data_uri_output_mode(fake: Fake) -> None:
    fake.config(output_mode="data")
    pred = fake.create(
        "google/imagen-4-fast", {"prompt": "x", "output_format": "png"}, headers={"Prefer": "wait"}
    ).json()
    header, _, payload = pred["output"].partition(",")
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).format == "PNG"


def test_files_expire_and_data_is_removed(fake: Fake) -> None:
    fake.config(file_ttl_seconds=1.0)
    pred = fake.create("qwen/qwen-image", {"prompt": "x"}, headers={"Prefer": "wait"}).json()
    url = pred["output"][0]
    assert httpx.get(url).status_code == 200
    time.sleep(1.2)
    assert httpx.get(url).status_code == 404
    later = fake.get(pred["id"])
    assert later["data_removed"] is True
    assert later["output"] is None
    assert later["status"] == "succeeded"


def test_unknown_file_and_prediction_are_404(fake: Fake) -> None:
    pred = fake.create("qwen/qwen-image", {"prompt": "x"}, headers={"Prefer": "wait"}).json()
    assert httpx.get(pred["output"][0].replace("out-0", "out-5")).status_code == 404
    r = fake.http.get("/predictions/doesnotexist", headers=AUTH)
    assert r.status_code == 404 and r.json()["status"] == 404


# -- auth and injected HTTP errors -----------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer garbage!", "Basic abc", "r8_x"])
def test_missing_or_garbage_token_is_401(fake: Fake, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = fake.http.post(
        "/models/qwen/qwen-image/predictions", json={"input": {"prompt": "x"}}, headers=headers
    )
    assert r.status_code == 401
    assert r.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass a valid authentication token",
        "status": 401,
    }
    assert fake.http.get("/webhooks/default/secret", headers=headers).status_code == 401


def test_broke_token_is_402(fake: Fake) -> None:
    fake.config(broke_tokens=["r8_broke_account"])
    r = fake.http.post(
        "/models/qwen/qwen-image/predictions",
        json={"input": {"prompt": "x"}},
        headers={"Authorization": "Bearer r8_broke_account"},
    )
    assert r.status_code == 402
    assert r.json()["title"] == "Insufficient credit"
    assert fake.create("qwen/qwen-image", {"prompt": "x"}).status_code == 201


def test_injected_429_then_5xx_bursts(fake: Fake) -> None:
    fake.config(http_429_next=2, http_5xx_next=1, retry_after_seconds=3)
    first = fake.create("qwen/qwen-image", {"prompt": "x"})
    assert first.status_code == 429
    assert first.json()["detail"].startswith("Request was throttled.")
    assert first.headers["retry-after"] == "3"
    assert fake.create("qwen/qwen-image", {"prompt": "x"}).status_code == 429
    assert fake.create("qwen/qwen-image", {"prompt": "x"}).status_code == 503
    assert fake.create("qwen/qwen-image", {"prompt": "x"}).status_code == 201
    stats = fake.stats()
    assert stats["injected"] == {"429": 2, "503": 1}
    assert stats["requests"]["POST /v1/models/{owner}/{name}/predictions"] == {
        "429": 2,
        "503": 1,
        "201": 1,
    }
    assert stats["predictions_created"] == {"qwen/qwen-image": 1}


def test_injected_rates_and_methods(fake: Fake) -> None:
    pred = fake.create("qwen/qwen-image", {"prompt": "x"}).json()
    fake.config(http_5xx_rate=1.0, http_5xx_status=502, fault_methods=["GET"])
    r = fake.http.get(f"/predictions/{pred['id']}", headers=AUTH)
    assert r.status_code == 502
    assert fake.create("qwen/qwen-image", {"prompt": "x"}).status_code == 201
    fake.config(http_5xx_rate=0.0, http_429_rate=1.0)
    assert fake.http.get(f"/predictions/{pred['id']}", headers=AUTH).status_code == 429


def test_invalid_config_is_rejected(fake: Fake) -> None:
    assert fake.http.post("/_fake/config", json={"latency": 1}).status_code == 400
    assert fake.http.post("/_fake/config", json={"fail_rate": 2}).status_code == 400
    assert fake.http.get("/_fake/config").json()["latency_seconds"] == 0.2


# -- outcomes, cancel and deadlines ------------------------------------------------------------


def test_prompt_directives(fake: Fake) -> None:
    failed = fake.create("qwen/qwen-image", {"prompt": "x [fail]"}, headers={"Prefer": "wait"})
    assert failed.status_code == 201
    assert failed.json()["status"] == "failed" and failed.json()["error"]
    assert failed.json()["output"] is None
    nsfw = fake.create("qwen/qwen-image", {"prompt": "[nsfw] x"}, headers={"Prefer": "wait"})
    assert nsfw.json()["status"] == "failed" and "NSFW" in nsfw.json()["error"]
    aborted = fake.create("qwen/qwen-image", {"prompt": "[abort]"}, headers={"Prefer": "wait"})
    assert aborted.json()["status"] == "aborted"
    assert aborted.json()["started_at"] is None
    rejected = fake.create("qwen/qwen-image", {"prompt": "[422] x"})
    assert rejected.status_code == 422 and rejected.json()["invalid_fields"]
    slow = fake.create("qwen/qwen-image", {"prompt": "[slow:3]"}, headers={"Prefer": "wait=1"})
    assert slow.status_code == 202
    assert fake.stats()["outcomes"] == {"failed": 2, "aborted": 1}


def test_fail_rate_fails_every_prediction(fake: Fake) -> None:
    fake.config(fail_rate=1.0)
    pred = fake.create("qwen/qwen-image", {"prompt": "x"}, headers={"Prefer": "wait"}).json()
    assert pred["status"] == "failed"
    assert pred["error"].startswith("NSFW content detected")


def test_cancel_running_and_finished_predictions(fake: Fake) -> None:
    pred = fake.create("qwen/qwen-image", {"prompt": "[slow:30]"}).json()
    r = fake.http.post(f"/predictions/{pred['id']}/cancel", headers=AUTH)
    assert r.status_code == 200
    assert r.json()["status"] == "canceled" and r.json()["completed_at"]
    time.sleep(0.3)
    assert fake.get(pred["id"])["status"] == "canceled"
    done = fake.create("qwen/qwen-image", {"prompt": "x"}, headers={"Prefer": "wait"}).json()
    again = fake.http.post(f"/predictions/{done['id']}/cancel", headers=AUTH).json()
    assert again["status"] == "succeeded" and again["output"] == done["output"]
    assert fake.http.post("/predictions/nope/cancel", headers=AUTH).status_code == 404
    assert fake.stats()["cancels"] == 2


def test_cancel_after_aborts_before_start_and_cancels_while_running(fake: Fake) -> None:
    too_short = fake.create("qwen/qwen-image", {"prompt": "x"}, headers={"Cancel-After": "2s"})
    assert too_short.status_code == 422  # Replicate's minimum is 5 s
    fake.config(cancel_after_min_seconds=1, queue_seconds=5)
    queued = fake.create(
        "qwen/qwen-image", {"prompt": "x"}, headers={"Cancel-After": "1s", "Prefer": "wait=4"}
    ).json()
    assert queued["status"] == "aborted"
    assert abs(_ts(queued["deadline"]) - _ts(queued["created_at"]) - 1.0) < 0.01
    fake.config(queue_seconds=0, latency_seconds=10)
    running = fake.create(
        "qwen/qwen-image", {"prompt": "x"}, headers={"Cancel-After": "1", "Prefer": "wait=4"}
    ).json()
    assert running["status"] == "canceled" and running["started_at"]
    long = fake.create("qwen/qwen-image", {"prompt": "x"}, headers={"Cancel-After": "1m30s"}).json()
    assert abs(_ts(long["deadline"]) - _ts(long["created_at"]) - 90) < 0.01
    assert (
        fake.create(
            "qwen/qwen-image", {"prompt": "x"}, headers={"Cancel-After": "soon"}
        ).status_code
        == 422
    )


# -- webhooks ---------------------------------------------------------------------------------


def test_webhook_delivery_is_signed(fake: Fake, receiver: Receiver) -> None:
    secret = fake.http.get("/webhooks/default/secret", headers=AUTH).json()["key"]
    assert secret.startswith("whsec_")
    pred = fake.create(
        "black-forest-labs/flux-schnell",
        {"prompt": "x"},
        webhook=f"{receiver.url}/hook",
        webhook_events_filter=["start", "completed"],
    ).json()
    got = receiver.wait_for(2)
    statuses = [json.loads(body)["status"] for _h, body in got]
    assert statuses == ["processing", "succeeded"]
    for headers, body in got:
        assert _verify(secret, headers, body)
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
        assert json.loads(body)["id"] == pred["id"]
    assert got[0][0]["webhook-id"] != got[1][0]["webhook-id"]
    assert not _verify("whsec_" + base64.b64encode(b"other-key").decode(), *got[1])
    final = json.loads(got[1][1])
    assert final == fake.get(pred["id"])


def test_default_events_are_output_and_completed(fake: Fake, receiver: Receiver) -> None:
    fake.create("qwen/qwen-image", {"prompt": "x"}, webhook=receiver.url)
    got = receiver.wait_for(2)
    time.sleep(0.3)
    assert len(receiver.requests) == 2
    first, last = (json.loads(b) for _h, b in got)
    assert first["output"] and first["status"] == "processing"
    assert last["status"] == "succeeded"


def test_webhook_retries_on_errors_and_never_follows_redirects(fake: Fake) -> None:
    fake.config(webhook_retry_base_seconds=0.05, webhook_max_attempts=3)
    flaky = Receiver([500, 200])
    moved = Receiver([307, 307, 307])
    try:
        fake.create(
            "qwen/qwen-image",
            {"prompt": "x"},
            webhook=flaky.url,
            webhook_events_filter=["completed"],
        )
        fake.create(
            "qwen/qwen-image",
            {"prompt": "x"},
            webhook=moved.url,
            webhook_events_filter=["completed"],
        )
        got = flaky.wait_for(2)
        assert got[0][0]["webhook-id"] == got[1][0]["webhook-id"]
        moved.wait_for(3)
        time.sleep(0.5)
        assert len(moved.requests) == 3  # nothing was sent to /elsewhere
        hooks = fake.stats()["webhooks"]
        assert hooks == {
            "attempted": 5,
            "sent": 1,
            "failed": 4,
            "gave_up": 1,
            "dropped": 0,
            "duplicated": 0,
            "refused": 0,
        }
    finally:
        flaky.close()
        moved.close()


def test_webhook_duplicates_and_drops_are_counted(fake: Fake, receiver: Receiver) -> None:
    fake.config(webhook_duplicate_rate=1.0)
    fake.create(
        "qwen/qwen-image",
        {"prompt": "x"},
        webhook=receiver.url,
        webhook_events_filter=["completed"],
    )
    got = receiver.wait_for(2)
    assert got[0][0]["webhook-id"] == got[1][0]["webhook-id"]
    assert got[0][1] == got[1][1]
    fake.config(webhook_duplicate_rate=0.0, webhook_drop_rate=1.0)
    pred = fake.create(
        "qwen/qwen-image",
        {"prompt": "x"},
        webhook=receiver.url,
        headers={"Prefer": "wait"},
        webhook_events_filter=["completed"],
    ).json()
    assert pred["status"] == "succeeded"
    time.sleep(0.5)
    assert len(receiver.requests) == 2
    hooks = fake.stats()["webhooks"]
    assert (hooks["duplicated"], hooks["dropped"], hooks["sent"]) == (1, 1, 2)


def test_webhook_delay(fake: Fake, receiver: Receiver) -> None:
    fake.config(webhook_delay_seconds=1.0)
    pred = fake.create(
        "qwen/qwen-image",
        {"prompt": "x"},
        webhook=receiver.url,
        headers={"Prefer": "wait"},
        webhook_events_filter=["completed"],
    ).json()
    assert pred["status"] == "succeeded"
    time.sleep(0.5)
    assert receiver.requests == []
    receiver.wait_for(1, timeout=5)


# -- load and bookkeeping ---------------------------------------------------------------------


def test_hundreds_of_concurrent_predictions(fake: Fake) -> None:
    fake.config(latency_seconds=0.5, latency_jitter=0.3)

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=fake.base, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/models/black-forest-labs/flux-schnell/predictions",
                        json={"input": {"prompt": f"image {n}"}},
                        headers={**AUTH, "Prefer": "wait=30"},
                    )
                    for n in range(300)
                )
            )

    started = time.monotonic()
    responses = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [201] * 300
    assert {r.json()["status"] for r in responses} == {"succeeded"}
    assert len({r.json()["id"] for r in responses}) == 300
    assert elapsed < 20
    stats = fake.stats()
    assert stats["predictions_created"] == {"black-forest-labs/flux-schnell": 300}
    assert stats["outcomes"] == {"succeeded": 300}
    assert stats["active"] == 0


def test_list_and_stats(fake: Fake) -> None:
    ids = [fake.create("qwen/qwen-image", {"prompt": str(n)}).json()["id"] for n in range(3)]
    listed = fake.http.get("/predictions", headers=AUTH).json()
    assert [p["id"] for p in listed["results"]] == ids[::-1]
    assert listed["next"] is None
    fake.http.get(f"/predictions/{ids[0]}", headers=AUTH)
    fake.http.get("/nowhere")
    stats = fake.stats()
    assert stats["requests"]["POST /v1/models/{owner}/{name}/predictions"] == {"201": 3}
    assert stats["requests"]["GET /v1/predictions/{id}"] == {"200": 1}
    assert stats["requests"]["unmatched"] == {"404": 1}
    assert stats["predictions_in_memory"] == 3


def test_memory_is_bounded(fake: Fake) -> None:
    fake.config(max_predictions=10)
    ids = [
        fake.create("qwen/qwen-image", {"prompt": str(n)}, headers={"Prefer": "wait"}).json()["id"]
        for n in range(15)
    ]
    assert fake.stats()["predictions_in_memory"] == 10
    assert fake.http.get(f"/predictions/{ids[0]}", headers=AUTH).status_code == 404
    assert fake.get(ids[-1])["status"] == "succeeded"
    fake.config(prediction_ttl_seconds=0.5, max_predictions=20000)
    time.sleep(0.7)
    assert fake.stats()["predictions_in_memory"] == 0
    assert fake.http.get(f"/predictions/{ids[-1]}", headers=AUTH).status_code == 404
