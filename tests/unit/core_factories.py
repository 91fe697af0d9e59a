"""Factories for the decision-core tests: events, small recordings, the detector kit."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from rollguard.models.engine import ApprovalCheck, EngineState, advance, new_state, step
from rollguard.models.events import (
    Alert,
    ApprovalResponse,
    DeployEvent,
    MetricSample,
    OutputRecord,
)
from rollguard.models.policy import Policy
from rollguard.models.scoring import default_kit

REPO = Path(__file__).resolve().parents[2]
T0 = 1_795_593_600.0  # 2026-11-25T08:00:00Z, a multiple of 30 s
InputEvent = DeployEvent | MetricSample | Alert | ApprovalResponse


def load_policy(**overrides: Any) -> Policy:
    """The repository policy, with ``defaults`` fields (or whole sections) overridden."""
    raw = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())
    for key, value in overrides.items():
        if key in ("fleet", "preauthorizations", "services", "rollback_authorities"):
            raw[key] = value
        else:
            raw["defaults"][key] = value
    return Policy.from_mapping(raw, version="test")


KIT = default_kit()
"""The detectors of models.anomaly (WindowDetector, JointDetector)."""


def sample(
    service: str, name: str, value: float, ts: float, source: str = "prom", **kw: Any
) -> MetricSample:
    return MetricSample(service=service, name=name, value=value, ts=ts, source=source, **kw)


def deploy(
    ts: float,
    *,
    service: str = "search",
    deployment_id: str = "dep-1",
    status: str = "started",
    version: str = "v2",
    rollback_target: str | None = "v1",
    actor: str = "svc:ci-deployer",
    **change: Any,
) -> DeployEvent:
    return DeployEvent(
        deployment_id=deployment_id,
        service=service,
        version=version,
        previous_version="v1",
        rollback_target=rollback_target,
        status=status,
        actor=actor,
        ts=ts,
        change=change,
    )


def alert(
    ts: float,
    status: str = "firing",
    *,
    service: str = "search",
    name: str = "HighErrorRate",
    severity: str = "critical",
) -> Alert:
    return Alert(
        alert_id=f"am-{name}",
        service=service,
        name=name,
        severity=severity,
        status=status,
        ts=ts,
    )


def approval(
    ts: float,
    request: str,
    *,
    approver: str = "user:alice",
    decision: str = "approve",
    service: str | None = "search",
) -> ApprovalResponse:
    return ApprovalResponse(
        request_id=request, approver=approver, decision=decision, ts=ts, service=service
    )


GOOD = ApprovalCheck(True, True, frozenset({"sre-oncall"}))

Level = float | Callable[[float], float | None]
HEALTHY: dict[str, float] = {"error_rate": 0.01, "latency_p99_ms": 200.0, "request_rate": 100.0}


def telemetry(
    service: str,
    start: float,
    end: float,
    levels: Mapping[str, Level] | None = None,
    *,
    seed: int = 0,
    noise: float = 0.05,
    phase: float = 4.0,
    source: str = "prom",
) -> list[MetricSample]:
    """Samples every 10 s in [start, end), ``phase`` s into each slot, with seeded noise.

    A level may be a function of time returning None (no sample: a silent exporter).
    """
    rng = random.Random(f"{service}/{seed}/{source}")
    out: list[MetricSample] = []
    t = start + phase
    chosen = dict(HEALTHY if levels is None else levels)
    while t < end:
        for name in sorted(chosen):
            level = chosen[name]
            value = level(t) if callable(level) else level
            if value is None:
                continue
            jitter = 1.0 + rng.gauss(0.0, noise)
            out.append(sample(service, name, max(value * jitter, 0.0), t, source))
        t += 10.0
    return out


def after(ts: float, bad: float, good: float) -> Callable[[float], float]:
    """A level that is ``good`` before ``ts`` and ``bad`` from then on."""
    return lambda t: bad if t >= ts else good


def silent_after(ts: float, good: float) -> Callable[[float], float | None]:
    """A level that stops (no samples) from ``ts`` on."""
    return lambda t: None if t >= ts else good


def in_time_order(*streams: Iterable[InputEvent]) -> list[InputEvent]:
    """Merge event lists by event time (stable)."""
    merged = [e for s in streams for e in s]
    merged.sort(key=lambda e: e.ts)
    return merged


def run(
    events: Iterable[InputEvent],
    policy: Policy,
    *,
    state: EngineState | None = None,
    checks: Mapping[str, ApprovalCheck | None] | None = None,
    flush: bool = True,
) -> list[OutputRecord]:
    """Every output of the core for ``events`` in the given order, then ``advance``."""
    state = state if state is not None else new_state(KIT)
    outputs: list[OutputRecord] = []
    newest = 0.0
    for event in events:
        check = None
        if isinstance(event, ApprovalResponse):
            check = (checks or {}).get(event.approver, GOOD)
        outputs.extend(step(state, event, policy, approval_check=check))
        newest = max(newest, event.ts)
    if flush:
        outputs.extend(advance(state, policy, newest))
    return outputs


def of_type(outputs: Iterable[OutputRecord], kind: str) -> list[Any]:
    return [o for o in outputs if o.type == kind]


def actions(outputs: Iterable[OutputRecord]) -> list[tuple[str, tuple[str, ...]]]:
    """(action, reasons) of every Decision, in order."""
    return [(o.action, o.reasons) for o in of_type(outputs, "decision")]
