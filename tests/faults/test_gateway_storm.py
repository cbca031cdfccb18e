"""A gateway storm: hosted Supabase's gateway (Kong) answers a share of the worker's REST and
Storage calls with its 502/503/504 bodies and 429s, drops some answers after the service
committed (claim_work, finish_prediction, store_image), and replaces others with a 504 after the commit,
while a running daemon works through a burst of generations.

Nothing may be lost to it: every generation completed with one image, each prediction
created once at the fake Replicate, nothing left pending or processing. The counts of each
injected fault are printed and must all be above zero.
"""

from __future__ import annotations

import uuid
from collections import Counter

import psycopg
import pytest

from devstack.stack import StackState
from tests.faults.checks import assert_completed_once, facts, predictions_by_prompt, wait_terminal
from tests.faults.conftest import SHORT_LEASE, Workers
from tests.support import Fake, Picture, StackControl

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")]

GENERATIONS = 30
KINDS = ("502", "503", "504", "429", "drop")

# The first rule that fires decides; the specific ones come first.
STORM = [
    # answers lost after the commit: the claim, and each call that completes a job (the
    # combined ones also claim the thread's next job)
    {"path": "/rest/v1/rpc/claim_work", "fault": "drop", "share": 0.08},
    {"path": "/rest/v1/rpc/finish_prediction", "fault": "drop", "share": 0.08},
    {"path": "/rest/v1/rpc/store_image", "fault": "drop", "share": 0.08},
    {"path": "/rest/v1/rpc/store_image", "fault": "504", "after_upstream": True, "share": 0.08},
    {"path": "/rest/v1/rpc/finish_prediction", "fault": "504", "after_upstream": True,
     "share": 0.08},
    # Storage's gateway
    {"path": "/storage/v1/object/*", "methods": ["POST", "DELETE"], "fault": "503",
     "share": 0.15},
    {"path": "/storage/v1/object/*", "methods": ["POST", "DELETE"], "fault": "502",
     "share": 0.1},
    # REST's gateway: every table and RPC
    {"path": "/rest/v1/*", "fault": "502", "share": 0.05},
    {"path": "/rest/v1/*", "fault": "503", "share": 0.04},
    {"path": "/rest/v1/*", "fault": "504", "share": 0.04},
    {"path": "/rest/v1/*", "fault": "429", "share": 0.04},
]


@pytest.mark.timeout(300)
def test_gateway_storm_loses_nothing_and_pays_once(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    workers: Workers,
    admin_conn: psycopg.Connection,
) -> None:
    marker = f"gwstorm-{uuid.uuid4().hex[:8]}"
    fake.configure(latency_seconds=0.4, latency_jitter=0.3, random_seed=11)
    user = picture.create_user()
    workers.start(stack_state, WORKER_CONCURRENCY=4, WORKER_POLL_INTERVAL=0.5, **SHORT_LEASE)
    # The burst arrives at a running daemon, then the storm starts (the test's own calls
    # stay out of it).
    gids = [picture.submit(user, f"{marker} {i}")[0] for i in range(GENERATIONS)]
    control.faults(*STORM, seed=12)
    try:
        wait_terminal(admin_conn, gids, 240)
    finally:
        report = control.reset_faults()
    injected = Counter({k: int(v) for k, v in report["injected"].items()})
    storage = sum(int(r["injected"]) for r in report["rules"] if r["path"].startswith("/storage"))
    rows = facts(admin_conn, gids)
    outcomes = Counter(f.status for f in rows.values())
    created = predictions_by_prompt(stack_state.replicate_url, marker)
    twice = {p: n for p, n in created.items() if n != 1}
    print(
        f"gateway storm: {GENERATIONS} generations -> {dict(outcomes)}; injected faults "
        f"{dict(sorted(injected.items()))} ({storage} on Storage); predictions created "
        f"{sum(created.values())} for {len(created)} prompts"
    )
    assert all(injected[kind] > 0 for kind in KINDS), injected
    assert storage > 0, report["rules"]
    assert_completed_once(rows, gids)  # nothing lost, nothing left live
    assert len(created) == GENERATIONS and not twice, twice
