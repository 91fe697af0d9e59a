"""A fleet that spends its hourly rollback budget: the corpus of the partitioned-engine tests.

Fourteen services report healthy telemetry; then, two at a time at the same instant, bad
releases break their error rate (pairs 4 minutes apart, the first one alone), so that two
rollback claims meet at one window end and the budget (5 an hour) runs out inside a pair: the
first by name rolls back, the second finds the budget spent; one release that writes data
is rolled back by a signed approval first, spending budget from a control event; and late in
the hour four services break at once (a fleet-wide anomaly). Built deterministically.
"""

from __future__ import annotations

import random
from typing import Any

from rollguard.models.records import request_id
from rollguard.streams.serde import dumps
from rollguard.streams.signing import signature_of
from tests.golden.edges import ALICE

START = 1795586400.0  # 2026-11-25T06:00:00Z
HISTORY = 1500.0
PAIRS = 4
PAIR_GAP = 240.0
FIXED_AFTER = 120.0  # the executor's rollback takes effect this long after the break
Event = dict[str, Any]


def _deploy(service: str, at: float, n: int, **change: bool) -> Event:
    return {
        "type": "deploy", "deployment_id": f"dep-{service}-{n}", "service": service,
        "version": "v2", "previous_version": "v1", "rollback_target": "v1", "status": "started",
        "actor": "svc:ci-deployer", "ts": at, "environment": "prod", "change": change,
    }  # fmt: skip


def _telemetry(
    rng: random.Random, service: str, begin: float, end: float, broken: tuple[float, float] | None
) -> list[Event]:
    """Samples every 10 s; the error rate is high while ``broken`` (until the rollback)."""
    events: list[Event] = []
    t = begin + rng.uniform(0.0, 10.0)
    while t < end:
        bad = broken is not None and broken[0] <= t < broken[1]
        error = rng.uniform(0.25, 0.35) if bad else rng.uniform(0.008, 0.012)
        values = {"error_rate": error, "latency_p99_ms": rng.uniform(90.0, 110.0),
                  "request_rate": rng.uniform(45.0, 55.0)}
        for name, value in values.items():
            events.append({"type": "metric", "service": service, "name": name,
                           "value": round(value, 6), "ts": round(t, 3), "source": "prometheus"})
        t += 10.0
    return events


def budget_storm(seed: int = 0) -> list[bytes]:
    """The replay lines of the storm (time-ordered, as Kafka would deliver them)."""
    rng = random.Random(seed)
    services = [f"svc-{i:02d}" for i in range(14)]
    first = START + HISTORY
    end = first + PAIRS * PAIR_GAP + 900.0
    events: list[Event] = []
    breaks: dict[str, tuple[float, float]] = {}
    # The approval: a release that writes data asks a human, who approves its rollback.
    approved = services[0]
    events.append(_deploy(approved, first - 200.0, 1, data_writes=True))
    breaks[approved] = (first - 170.0, first + 30.0)
    for pair in range(PAIRS):
        at = first + pair * PAIR_GAP
        for service in services[1 + 2 * pair:3 + 2 * pair]:
            if service == services[2]:
                continue  # the first "pair" is one release: the budget ends inside a pair
            events.append(_deploy(service, at, 1))
            breaks[service] = (at + 35.0, at + 35.0 + FIXED_AFTER)
    # Late in the hour, four services break at once with no deploy but one.
    storm = first + PAIRS * PAIR_GAP + 300.0
    events.append(_deploy(services[9], storm - 30.0, 1))
    for service in services[9:13]:
        breaks[service] = (storm, end)
    for service in services:
        events.extend(_telemetry(rng, service, START, end, breaks.get(service)))
    answer: Event = {
        "type": "approval_response",
        "request_id": request_id(approved, f"dep-{approved}-1"),
        "approver": "user:alice", "decision": "approve", "ts": first - 20.0,
        "comment": "roll it back", "service": approved,
    }  # fmt: skip
    answer["signature"] = signature_of(answer, ALICE)
    events.append(answer)
    events.sort(key=lambda e: (float(e["ts"]), e["type"] != "deploy"))
    return [dumps(e) for e in events]
