"""A provider storm: 30 % of Replicate calls answer 5xx, with bursts of 429s on top.

Every generation must end cleanly (completed with one image, or failed with a reason),
no job may be left live or exceed its attempts, and retries must stay bounded and spaced:
the worker talks to the fake through a recording proxy, so create attempts per generation
and polls per prediction are counted exactly.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter

import psycopg
import pytest

from devstack.stack import StackState
from tests.faults.checks import facts, wait_terminal
from tests.faults.conftest import Workers
from tests.faults.proxy import Exchange, RecordingProxy
from tests.support import Fake, Picture
from worker.replicate.client import RetryPolicy

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")]

GENERATIONS = 30
MAX_ATTEMPTS = 3
IN_PROCESS = RetryPolicy().max_attempts  # tries of one HTTP call before the job attempt fails
MIN_GAP = 0.2  # seconds: in-process backoff starts at 0.5 s with equal jitter (>= 0.25 s)
POLL_INTERVAL = 1.0  # wait_for's interval between GETs of a running prediction


def _min_gap(exchanges: list[Exchange]) -> float:
    times = sorted(e.at for e in exchanges)
    return min((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


def _bursts(fake: Fake, stop: threading.Event) -> None:
    """Every 2 s the next 6 Replicate calls answer 429 (on top of the random 5xx)."""
    while not stop.wait(2.0):
        fake.configure(http_429_next=6)


@pytest.mark.timeout(180)
def test_provider_storm_every_job_ends_cleanly_with_bounded_retries(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    workers: Workers,
    admin_conn: psycopg.Connection,
) -> None:
    marker = f"storm-{uuid.uuid4().hex[:8]}"
    fake.configure(http_5xx_rate=0.3, latency_seconds=0.6, latency_jitter=0.4, random_seed=7)
    user = picture.create_user()
    upstream = stack_state.replicate_url.removesuffix("/v1")
    stop = threading.Event()
    bursts = threading.Thread(target=_bursts, args=(fake, stop), daemon=True)
    with RecordingProxy(upstream) as proxy:
        worker = workers.start(
            stack_state, REPLICATE_API_BASE_URL=proxy.url, WORKER_CONCURRENCY=6,
            WORKER_POLL_INTERVAL=0.5,
        )
        bursts.start()
        try:
            prompts = {
                picture.submit(user, f"{marker} {i}", max_attempts=MAX_ATTEMPTS)[0]: f"{marker} {i}"
                for i in range(GENERATIONS)
            }
            gids = list(prompts)
            wait_terminal(admin_conn, gids, 150)
        finally:
            stop.set()
            bursts.join(5)
        exchanges = proxy.snapshot()
        creates = proxy.creates_by_prompt()
        gets = proxy.gets_by_prediction()
    stats = fake.stats()
    assert stats["injected"].get("429", 0) >= 6 and stats["injected"].get("503", 0) >= 5, stats

    rows = facts(admin_conn, gids)
    outcomes = Counter(f.status for f in rows.values())
    assert set(outcomes) <= {"completed", "failed"}, outcomes
    assert outcomes["completed"] >= GENERATIONS * 2 // 3, f"the storm failed too much: {outcomes}"
    for gid, f in rows.items():
        assert all(attempt <= max_ for _t, _s, attempt, max_ in f.jobs), (gid, f.jobs)
        assert all(status in ("completed", "failed") for _t, status, _a, _m in f.jobs), f.jobs
        if f.status == "completed":
            assert f.images == 1 and len(f.objects) == 1, (gid, f)
        else:
            assert f.images == 0 and f.error_message, (gid, f)
            assert any(status == "failed" for _t, status, _a, _m in f.jobs), (gid, f)

    # Creates: bounded per generation, one paid prediction at most, never back to back.
    for gid, prompt in prompts.items():
        tries = creates.get(prompt, [])
        paid = [e for e in tries if e.status in (200, 201, 202)]
        assert len(paid) <= 1, f"{gid}: {len(paid)} predictions paid"
        assert len(tries) <= MAX_ATTEMPTS * IN_PROCESS, f"{gid}: {len(tries)} create calls"
        assert _min_gap(tries) >= MIN_GAP, f"{gid}: creates {_min_gap(tries):.3f}s apart"
        if rows[gid].status == "completed":
            assert len(paid) == 1

    # Polls: spaced, and few for a prediction that ran about a second.
    for pid, polls in gets.items():
        assert _min_gap(polls) >= MIN_GAP, f"{pid}: GETs {_min_gap(polls):.3f}s apart"
        lifetime = max(e.at for e in polls) - min(e.at for e in polls)
        ceiling = IN_PROCESS * (lifetime / POLL_INTERVAL + 2)
        assert len(polls) <= ceiling, f"{pid}: {len(polls)} GETs in {lifetime:.1f}s"
    span = max(e.at for e in exchanges) - min(e.at for e in exchanges)
    rate = len(exchanges) / max(span, 1.0)
    assert rate < 6 * 4, f"{len(exchanges)} Replicate calls in {span:.1f}s"
    assert worker.proc is not None and worker.proc.poll() is None
    polls_per_prediction = sum(len(p) for p in gets.values()) / max(len(gets), 1)
    print(f"storm: {outcomes}, {len(exchanges)} Replicate calls in {span:.1f}s, "
          f"{polls_per_prediction:.1f} GETs per prediction, injected {stats['injected']}")
