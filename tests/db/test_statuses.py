"""Python holds the status names (worker/statuses.py); the database holds the rules. The
names must be exactly the values the check constraints of the migrated database allow."""

from __future__ import annotations

import re

import pytest

from tests.db.dbkit import Database
from worker.settings import JOB_TYPES
from worker.statuses import GenerationStatus, JobStatus

CONSTRAINTS = {
    "job_queue_status_check_v2": {s.value for s in JobStatus},
    "image_generations_status_check_v2": {s.value for s in GenerationStatus},
    "job_queue_job_type_check_v2": set(JOB_TYPES),
}


def allowed_values(db: Database, constraint: str) -> set[str]:
    definition = db.scalar(
        "select pg_get_constraintdef(oid) from pg_constraint where conname = %s", (constraint,)
    )
    assert definition, f"constraint {constraint} not found"
    return set(re.findall(r"'([^']*)'::text", definition))


@pytest.mark.parametrize("constraint", sorted(CONSTRAINTS))
def test_python_names_match_the_check_constraint(db: Database, constraint: str) -> None:
    assert allowed_values(db, constraint) == CONSTRAINTS[constraint]
