"""ReplicateClient against hand-written cassettes in Replicate's real JSON shapes.

Cassettes (tests/cassettes/replicate/*.yaml) are played with vcrpy in record mode
"none": a request that does not match the next recorded one (method, URL, JSON body and
the Prefer / Cancel-After headers) fails the test. The requests really sent are also
captured with an httpx event hook, so headers such as Authorization can be asserted
without writing the token into a cassette. Timeouts use httpx.MockTransport, the
client's own transport seam.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import vcr

from worker.errors import (
    DeadlineExceeded,
    InsufficientCredit,
    InvalidInput,
    JobCancelled,
    PermanentError,
    PredictionFailed,
    ProviderBusy,
    RetryableError,
)
from worker.replicate.client import Prediction, ReplicateClient, RetryPolicy

TOKEN = "r8_TESTTOKENdoNotUse0000000000000000000000"
CASSETTES = Path(__file__).resolve().parents[1] / "cassettes" / "replicate"
SCHNELL_IN = {"prompt": "a red fox", "aspect_ratio": "1:1", "num_outputs": 1}
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


def _same_replicate_headers(r1: Any, r2: Any) -> None:
    for name in ("Prefer", "Cancel-After"):
        assert r1.headers.get(name) == r2.headers.get(name), name


player = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",
    match_on=["method", "scheme", "host", "port", "path", "query", "body", "replicate_headers"],
    filter_headers=["authorization"],
)
player.register_matcher("replicate_headers", _same_replicate_headers)


class FakeTime:
    """A monotonic clock that advances only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Harness:
    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self.sent: list[httpx.Request] = []
        self.time = FakeTime()
        self.http = httpx.Client(transport=transport,
                                 event_hooks={"request": [self.sent.append]})
        self.client = ReplicateClient(
            self.http, TOKEN, wait_seconds=60,
            retry=RetryPolicy(max_attempts=5, initial_wait=0.5, max_wait=8.0, budget=30.0),
            sleep=self.time.sleep, clock=self.time.clock,
        )

    def body(self, i: int) -> Any:
        return json.loads(self.sent[i].content)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.http.close()


def play(name: str) -> Any:
    return player.use_cassette(f"{name}.yaml")


# --- create ---------------------------------------------------------------------------------


def test_sync_create_of_an_official_model_returns_the_finished_prediction(h: Harness) -> None:
    inp = {"prompt": "a red fox in the snow", "num_outputs": 1, "aspect_ratio": "16:9",
           "num_inference_steps": 4, "output_format": "webp", "output_quality": 90, "seed": 42}
    with play("create_sync_succeeded") as cassette:
        p = h.client.create_prediction("black-forest-labs/flux-schnell", None, inp,
                                       cancel_after=300)
        done = h.client.wait_for(p, deadline=h.time.now + 600)
    assert cassette.all_played and cassette.play_count == 1  # no GET: already settled
    assert done is p and p.status == "succeeded" and p.terminal
    assert p.output_urls == [
        "https://replicate.delivery/xezq/fGk3nQ0bC8aUJ1aVh7oE4cFqg5mZ9lKpY2sT6rW0xDb/out-0.webp"]
    assert p.predict_time == pytest.approx(0.671)
    sent = h.sent[0]
    assert (sent.method, sent.url.path) == (
        "POST", "/v1/models/black-forest-labs/flux-schnell/predictions")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["prefer"] == "wait=60"
    assert sent.headers["cancel-after"] == "300s"
    assert h.body(0) == {"input": inp}  # no version for an official model
    assert sent.extensions["timeout"]["read"] > 60  # outlasts the server's hold


def test_create_by_version_then_poll_until_succeeded(h: Harness) -> None:
    inp = {"prompt": "a lighthouse", "width": 1024, "height": 1024,
           "refine": "expert_ensemble_refiner", "high_noise_frac": 0.8}
    with play("create_version_then_poll") as cassette:
        p = h.client.create_prediction("stability-ai/sdxl", SDXL_VERSION, inp)
        assert p.status == "starting" and not p.settled
        done = h.client.wait_for(p, deadline=h.time.now + 600, poll_interval=2.0)
    assert cassette.all_played and cassette.play_count == 3
    assert done.status == "succeeded"
    assert done.output_urls[0].endswith("/out-0.png")
    assert [(r.method, r.url.path) for r in h.sent] == [
        ("POST", "/v1/predictions"),
        ("GET", "/v1/predictions/hn1ma8bq0drj20csx8qb2fz4ek"),
        ("GET", "/v1/predictions/hn1ma8bq0drj20csx8qb2fz4ek"),
    ]
    assert h.body(0) == {"version": SDXL_VERSION, "input": inp}
    assert "cancel-after" not in h.sent[0].headers
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in h.sent)
    assert sum(h.time.sleeps) == pytest.approx(4.0)  # two poll intervals


def test_webhook_mode_create_sends_no_prefer_header(h: Harness) -> None:
    hook = "https://proj.supabase.co/functions/v1/replicate-webhook"
    with play("create_webhook_no_wait") as cassette:
        p = h.client.create_prediction("black-forest-labs/flux-schnell", None, SCHNELL_IN,
                                       webhook=hook, webhook_events_filter=["completed"],
                                       wait=False)
    assert cassette.all_played
    assert p.status == "starting" and not p.terminal
    assert "prefer" not in h.sent[0].headers
    assert h.body(0) == {"input": SCHNELL_IN, "webhook": hook,
                         "webhook_events_filter": ["completed"]}


def test_output_present_while_processing_counts_as_done(h: Harness) -> None:
    with play("create_processing_with_output") as cassette:
        p = h.client.create_prediction(
            "recraft-ai/recraft-v3-svg", None,
            {"prompt": "a fox logo", "size": "1024x1024", "style": "vector_illustration"})
        done = h.client.wait_for(p, deadline=h.time.now + 60)
    assert cassette.play_count == 1
    assert done.status == "processing" and not done.terminal and done.settled
    assert done.output_urls == ["https://replicate.delivery/xezq/Rs7tUv/output.svg"]


@pytest.mark.parametrize(("pid", "urls"), [
    ("str0pred1rj00csx8aaaaaaaaa", ["https://replicate.delivery/czjl/Ab3dEf/output.webp"]),
    ("lst0pred1rj00csx8bbbbbbbbb", ["https://replicate.delivery/xezq/Gh1jKl/out-0.webp",
                                    "https://replicate.delivery/xezq/Gh1jKl/out-1.webp"]),
    ("obj0pred1rj00csx8ccccccccc", ["https://replicate.delivery/yhqm/Mn4oPq/image.png"]),
])
def test_output_shapes_are_normalised(h: Harness, pid: str, urls: list[str]) -> None:
    with play("output_shapes"):
        p = h.client.get_prediction(pid)
    assert p.output_urls == urls and p.status == "succeeded"


def test_cancel_after_is_at_least_five_seconds(h: Harness) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"id": "x1", "status": "starting", "output": None})

    harness = Harness(httpx.MockTransport(handler))
    harness.client.create_prediction("a/b", None, {"prompt": "p"}, cancel_after=1.2)
    harness.client.create_prediction("a/b", None, {"prompt": "p"}, cancel_after=90.1)
    assert [r.headers["cancel-after"] for r in harness.sent] == ["5s", "91s"]


# --- prediction outcomes ---------------------------------------------------------------------


def test_failed_prediction_raises_with_the_models_error(h: Harness) -> None:
    with play("failed"):
        p = h.client.create_prediction("black-forest-labs/flux-schnell", None, SCHNELL_IN)
        with pytest.raises(PredictionFailed) as info:
            h.client.wait_for(p, deadline=h.time.now + 600)
    assert "NSFW content" in str(info.value)
    assert info.value.details["prediction_id"] == "fail0prd1rj00csx8fffffffff"
    assert not info.value.retryable


def test_canceled_by_us_is_job_cancelled_and_by_others_is_a_failure(h: Harness) -> None:
    with play("canceled") as cassette:
        cancelled = h.client.cancel_prediction("cncl0prd1rj00csx8ggggggggg")
        assert cancelled.status == "canceled"
        with pytest.raises(JobCancelled):
            h.client.wait_for(h.client.get_prediction("cncl0prd1rj00csx8ggggggggg"),
                              deadline=h.time.now + 60)
        with pytest.raises(PredictionFailed, match="canceled"):
            h.client.wait_for(h.client.get_prediction("othr0prd1rj00csx8hhhhhhhhh"),
                              deadline=h.time.now + 60)
    assert cassette.all_played
    assert (h.sent[0].method, h.sent[0].url.path) == (
        "POST", "/v1/predictions/cncl0prd1rj00csx8ggggggggg/cancel")


def test_aborted_prediction_is_retryable(h: Harness) -> None:
    with play("aborted"), pytest.raises(RetryableError, match="aborted") as info:
        h.client.wait_for(h.client.get_prediction("abrt0prd1rj00csx8iiiiiiiii"),
                          deadline=h.time.now + 60)
    assert info.value.details["status"] == "aborted"


def test_wait_for_raises_at_the_deadline_and_when_stopped() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json={"id": "slow1", "status": "processing", "output": None})

    harness = Harness(httpx.MockTransport(handler))
    running = Prediction.from_json({"id": "slow1", "status": "starting"})
    with pytest.raises(DeadlineExceeded) as info:
        harness.client.wait_for(running, deadline=harness.time.now + 5, poll_interval=1.0)
    assert info.value.details["prediction_id"] == "slow1"
    assert 3 <= len(calls) <= 5 and harness.time.now == pytest.approx(1005.0)

    flags = iter([False, False, False, True])
    with pytest.raises(JobCancelled):
        harness.client.wait_for(running, deadline=harness.time.now + 600,
                                should_stop=lambda: next(flags, True))
    assert harness.time.now < 1005.0 + 2  # noticed within a poll interval


# --- HTTP errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("cassette_name", "error"), [
    ("create_401", PermanentError),
    ("create_402", InsufficientCredit),
])
def test_create_errors_are_classified_and_not_retried(
    h: Harness, cassette_name: str, error: type[Exception]
) -> None:
    with play(cassette_name) as cassette, pytest.raises(error) as info:
        h.client.create_prediction("black-forest-labs/flux-schnell", None, SCHNELL_IN)
    assert cassette.play_count == 1 and not h.time.sleeps
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value.args)


def test_422_keeps_invalid_fields(h: Harness) -> None:
    with play("create_422") as cassette, pytest.raises(InvalidInput) as info:
        h.client.create_prediction("black-forest-labs/flux-schnell", None,
                                   {"prompt": "a red fox", "num_inference_steps": 28})
    assert cassette.play_count == 1
    assert info.value.details["invalid_fields"] == [{
        "type": "maximum", "field": "input.num_inference_steps",
        "description": "Must be less than or equal to 4"}]
    assert "Must be less than or equal to 4" in str(info.value)


def test_get_404_is_invalid_input(h: Harness) -> None:
    with play("get_404"), pytest.raises(InvalidInput, match="404"):
        h.client.get_prediction("gone0prd1rj00csx8jjjjjjjjj")


def test_create_is_retried_on_429(h: Harness) -> None:
    with play("create_429_then_created") as cassette:
        p = h.client.create_prediction("black-forest-labs/flux-schnell", None, SCHNELL_IN)
    assert cassette.all_played and cassette.play_count == 3
    assert p.status == "succeeded" and len(h.sent) == 3
    assert len(h.time.sleeps) == 2
    assert 0.25 <= h.time.sleeps[0] <= 0.5 and 0.5 <= h.time.sleeps[1] <= 1.0  # backoff+jitter


def test_429_exhausted_is_provider_busy_and_honours_retry_after(h: Harness) -> None:
    with play("create_429_exhausted") as cassette, pytest.raises(ProviderBusy) as info:
        h.client.create_prediction("black-forest-labs/flux-schnell", None, SCHNELL_IN)
    assert cassette.all_played and cassette.play_count == 5  # bounded attempts
    assert len(h.time.sleeps) == 4
    assert h.time.sleeps[1] >= 3.0  # Retry-After: 3
    assert sum(h.time.sleeps) <= 30.0
    assert "throttled" in str(info.value)


def test_get_is_retried_on_5xx(h: Harness) -> None:
    with play("get_5xx_then_ok") as cassette:
        p = h.client.get_prediction("five0prd1rj00csx8lllllllll")
    assert cassette.all_played and cassette.play_count == 3 and len(h.time.sleeps) == 2
    assert p.status == "processing"


def test_create_is_not_retried_on_5xx(h: Harness) -> None:
    with play("create_500") as cassette, pytest.raises(RetryableError) as info:
        h.client.create_prediction("black-forest-labs/flux-schnell", None, SCHNELL_IN)
    assert cassette.play_count == 1 and not h.time.sleeps
    assert info.value.details["outcome_unknown"] is True


def test_retry_budget_bounds_total_sleep() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="busy")

    harness = Harness(httpx.MockTransport(handler))
    harness.client = ReplicateClient(
        harness.http, TOKEN, retry=RetryPolicy(max_attempts=50, initial_wait=1.0, max_wait=8.0,
                                               budget=10.0),
        sleep=harness.time.sleep, clock=harness.time.clock)
    with pytest.raises(RetryableError, match="503"):
        harness.client.get_prediction("p1")
    assert sum(harness.time.sleeps) <= 10.0 and 3 <= len(harness.sent) < 10


# --- transport errors (httpx.MockTransport) ---------------------------------------------------


def _raising(exc: Callable[[httpx.Request], Exception], then_ok_after: int | None = None
             ) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if then_ok_after is not None and len(seen) > then_ok_after:
            return httpx.Response(201 if request.method == "POST" else 200,
                                  json={"id": "ok1", "status": "starting", "output": None})
        raise exc(request)

    return httpx.MockTransport(handler), seen


def test_create_read_timeout_is_not_retried() -> None:
    transport, seen = _raising(lambda r: httpx.ReadTimeout("timed out", request=r))
    harness = Harness(transport)
    with pytest.raises(RetryableError) as info:
        harness.client.create_prediction("black-forest-labs/flux-schnell", None, SCHNELL_IN)
    assert len(seen) == 1 and not harness.time.sleeps
    assert info.value.details == {"error": "ReadTimeout", "outcome_unknown": True}


def test_create_connect_error_is_retried() -> None:
    transport, seen = _raising(lambda r: httpx.ConnectError("refused", request=r),
                               then_ok_after=2)
    harness = Harness(transport)
    p = harness.client.create_prediction("black-forest-labs/flux-schnell", None, SCHNELL_IN)
    assert p.id == "ok1" and len(seen) == 3 and len(harness.time.sleeps) == 2


def test_create_connect_error_exhausted_is_retryable_with_known_outcome() -> None:
    transport, seen = _raising(lambda r: httpx.ConnectTimeout("slow", request=r))
    harness = Harness(transport)
    with pytest.raises(RetryableError) as info:
        harness.client.create_prediction("black-forest-labs/flux-schnell", None, SCHNELL_IN)
    assert len(seen) == 5 and info.value.details["outcome_unknown"] is False


def test_get_read_timeout_is_retried() -> None:
    transport, seen = _raising(lambda r: httpx.ReadTimeout("timed out", request=r),
                               then_ok_after=1)
    harness = Harness(transport)
    assert harness.client.get_prediction("ok1").status == "starting"
    assert len(seen) == 2


# --- input hygiene ---------------------------------------------------------------------------


def test_ids_and_model_names_cannot_escape_the_path(h: Harness) -> None:
    with pytest.raises(InvalidInput):
        h.client.get_prediction("../../account")
    with pytest.raises(InvalidInput):
        h.client.create_prediction("owner/name/../../predictions", None, {"prompt": "p"})
    assert not h.sent


def test_the_token_never_appears_in_repr() -> None:
    harness = Harness(httpx.MockTransport(lambda r: httpx.Response(200)))
    assert TOKEN not in repr(harness.client)
