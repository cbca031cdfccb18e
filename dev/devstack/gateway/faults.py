"""Faults on demand: which requests the gateway answers badly, and how often it did.

A rule (JSON, ``POST /_stack/faults {"rules": [...], "seed": 1}``)::

    {"path": "/rest/v1/rpc/complete_job",   fnmatch pattern on the request path (required)
     "methods": ["POST"],                   default: any method
     "fault": "502",                        429 | 502 | 503 | 504 | slow | drop (required)
     "share": 0.3,                          chance that a matching request is hit (default 1)
     "count": 2,                            at most this many hits, then the rule is spent
     "after_upstream": true,                status faults: run the request (it commits), then
                                            answer the fault: a response lost after the commit
     "delay": 1.5}                          seconds: slow adds it before the real response;
                                            a status fault waits it before answering

- ``429``/``502``/``503``/``504``: Kong's status and JSON body (gateway.kong); without
  ``after_upstream`` the request never reaches the service.
- ``slow``: the service answers, the response leaves ``delay`` seconds later.
- ``drop``: the service runs the request (and commits), then the connection is closed with
  no response at all.

The first matching rule that fires decides; a request that matches but is not hit (share,
spent count) goes on to the next rule. Counts are kept per rule (``matched``, ``injected``)
and per fault kind until ``DELETE /_stack/faults``, which also removes the rules.
"""

from __future__ import annotations

import fnmatch
import logging
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("devstack.gateway")

STATUS_FAULTS = frozenset({"429", "502", "503", "504"})
FAULTS = STATUS_FAULTS | {"slow", "drop"}
MAX_DELAY = 120.0
_FIELDS = frozenset({"path", "methods", "fault", "share", "count", "after_upstream", "delay"})


class FaultError(ValueError):
    """A rule the switch cannot take; the message says why."""


@dataclass
class FaultRule:
    path: str
    fault: str
    methods: frozenset[str] = frozenset()
    share: float = 1.0
    count: int | None = None
    after_upstream: bool = False
    delay: float = 0.0
    matched: int = 0
    injected: int = 0

    @classmethod
    def parse(cls, raw: Any) -> FaultRule:
        if not isinstance(raw, dict):
            raise FaultError("each rule must be a JSON object")
        unknown = sorted(set(raw) - _FIELDS)
        if unknown:
            raise FaultError(f"unknown rule field(s): {', '.join(unknown)}")
        path, fault = raw.get("path"), str(raw.get("fault", ""))
        if not isinstance(path, str) or not path.startswith("/"):
            raise FaultError("path must be a pattern starting with / (e.g. /rest/v1/rpc/*)")
        if fault not in FAULTS:
            raise FaultError(f"fault must be one of {', '.join(sorted(FAULTS))}, not {fault!r}")
        methods = raw.get("methods") or []
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise FaultError("methods must be a list of HTTP methods")
        share = _number(raw.get("share", 1.0), "share", 0.0, 1.0)
        count = raw.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                                  or count < 0):
            raise FaultError("count must be a whole number >= 0")
        delay = _number(raw.get("delay", 0.0), "delay", 0.0, MAX_DELAY)
        if fault == "slow" and delay <= 0:
            raise FaultError("a slow fault needs a delay > 0 seconds")
        after = raw.get("after_upstream", False)
        if not isinstance(after, bool):
            raise FaultError("after_upstream must be true or false")
        return cls(path, fault, frozenset(m.upper() for m in methods), share, count,
                   after or fault == "drop", delay)

    def matches(self, method: str, path: str) -> bool:
        return (not self.methods or method in self.methods) and fnmatch.fnmatchcase(
            path, self.path
        )

    @property
    def spent(self) -> bool:
        return self.count is not None and self.injected >= self.count

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "fault": self.fault, "methods": sorted(self.methods),
            "share": self.share, "count": self.count, "after_upstream": self.after_upstream,
            "delay": self.delay, "matched": self.matched, "injected": self.injected,
        }


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise FaultError(f"{name} must be a number in [{low:g}, {high:g}], not {value!r}")
    return float(value)


@dataclass
class FaultBook:
    """The current rules and what they did."""

    rules: list[FaultRule] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)
    _random: random.Random = field(default_factory=random.Random)

    def configure(self, body: Mapping[str, Any]) -> None:
        """Replace the rules (counts of earlier rules stay in the totals)."""
        raw_rules = body.get("rules")
        if not isinstance(raw_rules, list):
            raise FaultError('expected {"rules": [...]} (and optionally "seed")')
        rules = [FaultRule.parse(r) for r in raw_rules]
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise FaultError("seed must be an integer")
        self.rules = rules
        self._random = random.Random(seed)
        log.info("gateway faults: %d rule(s) set", len(rules))

    def reset(self) -> dict[str, Any]:
        """Remove every rule; returns the counts as they were."""
        final = self.report()
        self.rules = []
        self.totals = Counter()
        return final

    def pick(self, method: str, path: str) -> FaultRule | None:
        """The rule that hits this request, if any (and count it)."""
        for rule in self.rules:
            if not rule.matches(method, path):
                continue
            rule.matched += 1
            if rule.spent or self._random.random() >= rule.share:
                continue
            rule.injected += 1
            self.totals[rule.fault] += 1
            log.info("gateway fault %s on %s %s", rule.fault, method, path)
            return rule
        return None

    def report(self) -> dict[str, Any]:
        return {"rules": [r.as_dict() for r in self.rules], "injected": dict(self.totals)}
