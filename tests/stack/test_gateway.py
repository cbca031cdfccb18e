"""The gateway in front of the services, as Kong on hosted Supabase: the 8 KB URL limit
and, on demand, Kong's error bodies, slow and dropped responses (devstack.gateway).

What the official clients make of each answer is asserted with the clients themselves
(supabase-py's postgrest, storage3 and auth), since that is what the worker sees.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from postgrest.exceptions import APIError
from storage3.exceptions import StorageApiError
from supabase import Client, ClientOptions, create_client
from supabase_auth.errors import AuthRetryableError

from devstack.stack import StackState
from tests.support import StackControl

KONG_502 = {"message": "An invalid response was received from the upstream server"}
KONG_503 = {"message": "The upstream server is currently unavailable"}
KONG_504 = {"message": "The upstream server is timing out"}


@pytest.fixture
def svc(stack_state: StackState) -> Client:
    return create_client(
        stack_state.url,
        stack_state.keys.service_role_key,
        ClientOptions(auto_refresh_token=False, persist_session=False),
    )


def _models(url: str, key: str, ids: int) -> httpx.Response:
    """GET /rest/v1/models with an ``in.(...)`` filter of ``ids`` uuids, as cleanup-storage
    builds it (a uuid and its comma are 37 bytes of URL)."""
    values = ",".join(str(uuid.UUID(int=i)) for i in range(ids))
    return httpx.get(
        f"{url}/rest/v1/models",
        params={"select": "id", "id": f"in.({values})"},
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
        timeout=10,
    )


# -- URL limit -----------------------------------------------------------------------------
def test_a_url_past_8_kb_gets_kongs_414(stack_state: StackState) -> None:
    key = stack_state.keys.service_role_key
    fits = _models(stack_state.url, key, 200)  # ~7.5 KB
    assert fits.status_code == 200
    too_long = _models(stack_state.url, key, 230)  # ~8.6 KB
    assert too_long.status_code == 414
    assert too_long.json() == {"message": "URI too long"}
    assert too_long.headers["content-type"] == "application/json; charset=utf-8"
    far_too_long = _models(stack_state.url, key, 1000)  # ~37 KB: also Kong's 414, not h11's 400
    assert far_too_long.status_code == 414


def test_supabase_py_sees_the_414_as_an_api_error_without_code(svc: Client) -> None:
    ids = [str(uuid.UUID(int=i)) for i in range(1000)]
    with pytest.raises(APIError) as raised:
        svc.table("images").select("id").in_("generation_id", ids).execute()
    assert (raised.value.code, raised.value.message) == (None, "URI too long")


def test_the_url_limit_is_a_switch(stack_state: StackState, control: StackControl) -> None:
    control.settings(url_limit=0)
    assert _models(stack_state.url, stack_state.keys.service_role_key, 1000).status_code == 200


# -- faults on demand ----------------------------------------------------------------------
def test_kong_502_body_on_a_chosen_rpc_then_normal_service(
    svc: Client, control: StackControl
) -> None:
    control.faults({"path": "/rest/v1/rpc/next_scheduled_at", "methods": ["POST"],
                    "fault": "502", "count": 1})
    with pytest.raises(APIError) as raised:
        svc.rpc("next_scheduled_at").execute()
    assert (raised.value.code, raised.value.message) == (None, KONG_502["message"])
    svc.rpc("next_scheduled_at").execute()  # spent after one hit
    (rule,) = control.fault_counts()["rules"]
    assert (rule["matched"], rule["injected"]) == (2, 1)


def test_status_faults_answer_kongs_exact_bodies(
    stack_state: StackState, control: StackControl
) -> None:
    key = stack_state.keys.anon_key
    control.faults(
        {"path": "/rest/v1/models", "fault": "503", "count": 1},
        {"path": "/rest/v1/models", "fault": "504", "count": 1},
        {"path": "/rest/v1/models", "fault": "429", "count": 1},
    )
    answers = [
        httpx.get(f"{stack_state.url}/rest/v1/models?select=id", timeout=10,
                  headers={"apikey": key, "Accept": "application/json"})
        for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [503, 504, 429, 200]
    assert answers[0].content == b'{\n  "message": "The upstream server is currently unavailable"\n}\n'
    assert answers[1].json() == KONG_504
    assert answers[2].json() == {"message": "API rate limit exceeded"}
    assert answers[2].headers["retry-after"] == "1"
    assert control.fault_counts()["injected"] == {"503": 1, "504": 1, "429": 1}


def test_a_share_of_requests_and_only_the_chosen_methods(
    stack_state: StackState, control: StackControl
) -> None:
    key = stack_state.keys.anon_key
    headers = {"apikey": key}
    control.faults({"path": "/rest/v1/*", "methods": ["GET"], "fault": "503", "share": 0.5},
                   seed=7)
    statuses = [
        httpx.get(f"{stack_state.url}/rest/v1/models?select=id", headers=headers).status_code
        for _ in range(40)
    ]
    hit = statuses.count(503)
    assert 8 <= hit <= 32 and statuses.count(200) == 40 - hit
    head = httpx.head(f"{stack_state.url}/rest/v1/models?select=id", headers=headers)
    assert head.status_code == 200  # HEAD is not GET
    (rule,) = control.fault_counts()["rules"]
    assert (rule["matched"], rule["injected"]) == (40, hit)


def test_a_slow_response_arrives_late_but_intact(svc: Client, control: StackControl) -> None:
    control.faults({"path": "/rest/v1/models", "fault": "slow", "delay": 0.8})
    began = time.monotonic()
    rows = svc.table("models").select("id").limit(1).execute().data
    assert len(rows) == 1 and time.monotonic() - began >= 0.8


def _generation_count(svc: Client, marker: str) -> int:
    rows = svc.table("image_generations").select("id").eq("prompt", marker).execute().data
    return len(rows)


def _insert_generation(svc: Client, user_id: str, marker: str) -> Any:
    return svc.table("image_generations").insert(
        {"user_id": user_id, "prompt": marker, "model": "black-forest-labs/flux-schnell", "status": "pending"}
    ).execute()


@pytest.fixture
def user_id(svc: Client) -> str:
    email = f"gw-{uuid.uuid4().hex[:10]}@example.test"
    created = svc.auth.admin.create_user({"email": email, "password": "correct-horse-42",
                                          "email_confirm": True})
    return str(created.user.id)


def test_a_dropped_response_after_the_commit(
    svc: Client, control: StackControl, user_id: str
) -> None:
    marker = f"dropped {uuid.uuid4()}"
    control.faults({"path": "/rest/v1/image_generations", "methods": ["POST"],
                    "fault": "drop", "count": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        _insert_generation(svc, user_id, marker)
    assert _generation_count(svc, marker) == 1  # the insert committed all the same


def test_a_response_lost_after_the_commit(
    svc: Client, control: StackControl, user_id: str
) -> None:
    marker = f"lost {uuid.uuid4()}"
    control.faults({"path": "/rest/v1/image_generations", "methods": ["POST"],
                    "fault": "504", "after_upstream": True, "count": 1})
    with pytest.raises(APIError) as raised:
        _insert_generation(svc, user_id, marker)
    assert (raised.value.code, raised.value.message) == (None, KONG_504["message"])
    assert _generation_count(svc, marker) == 1
    before = _generation_count(svc, marker)
    control.faults({"path": "/rest/v1/image_generations", "methods": ["POST"],
                    "fault": "502", "count": 1})  # without after_upstream: nothing ran
    with pytest.raises(APIError):
        _insert_generation(svc, user_id, marker)
    assert _generation_count(svc, marker) == before


def test_storage_auth_and_functions_routes_are_faulted_too(
    svc: Client, stack_state: StackState, control: StackControl
) -> None:
    control.faults(
        {"path": "/storage/v1/object/*", "fault": "503", "count": 1},
        {"path": "/auth/v1/admin/users", "fault": "502", "count": 1},
        {"path": "/functions/v1/*", "fault": "504", "count": 1},
    )
    with pytest.raises(StorageApiError) as storage:
        svc.storage.from_("generated-images").upload(
            f"gw/{uuid.uuid4()}.png", b"\x89PNG", {"content-type": "image/png"}
        )
    assert storage.value.status == 503
    with pytest.raises(AuthRetryableError):
        svc.auth.admin.create_user({"email": f"gw-{uuid.uuid4().hex[:8]}@example.test"})
    function = httpx.post(f"{stack_state.url}/functions/v1/start-generation", json={})
    assert (function.status_code, function.json()) == (504, KONG_504)
    assert control.fault_counts()["injected"] == {"503": 1, "502": 1, "504": 1}


def test_the_control_api_wants_the_service_key_and_valid_rules(
    stack_state: StackState, control: StackControl
) -> None:
    url = f"{stack_state.url}/_stack/faults"
    anon = {"Authorization": f"Bearer {stack_state.keys.anon_key}"}
    assert httpx.get(url, headers=anon).status_code == 401
    bad = httpx.post(url, headers=control.headers,
                     json={"rules": [{"path": "/rest/v1/*", "fault": "418"}]})
    assert bad.status_code == 400 and "fault must be one of" in bad.json()["message"]
    settings = httpx.post(f"{stack_state.url}/_stack/settings", headers=control.headers,
                          json={"max_rowz": 1})
    assert settings.status_code == 400 and "unknown setting" in settings.json()["message"]


def test_reset_removes_the_rules_and_reports_the_final_counts(
    svc: Client, control: StackControl
) -> None:
    control.faults({"path": "/rest/v1/models", "fault": "502"})  # 503: postgrest-py retries
    for _ in range(2):
        with pytest.raises(APIError):
            svc.table("models").select("id").execute()
    final = control.reset_faults()
    assert final["injected"] == {"502": 2}
    assert control.fault_counts() == {"rules": [], "injected": {}}
    assert svc.table("models").select("id").limit(1).execute().data
