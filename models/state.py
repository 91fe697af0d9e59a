"""The engine's state: per service (one changelog entry each), fleet-wide, and per batch.

``EngineState`` is plain picklable data: ``services`` maps a service name to its
``ServiceState`` (open windows, recent summaries, alert book, detectors, the deployment on
trial) and ``fleet`` holds what spans services (the event-time clock, scheduled control events,
breaches per window, rollback budget history, approval requests). ``Batch`` is the work that
one watermark advance makes due; it lives only during one call.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from models.alerts import AlertBook
from models.decide import DeploymentFacts
from models.events import OutputRecord
from models.records import At, deployment_evidence
from models.scoring import DetectorKit, ServiceModels
from models.trial import Deployment, ThresholdCheck, ThresholdRule
from models.windows import WindowAccumulator, WindowSummary

__all__ = [
    "CLOSE",
    "CONTROL",
    "JUDGE",
    "ApprovalCheck",
    "Batch",
    "EngineState",
    "FleetState",
    "RequestRecord",
    "ServiceState",
    "close_deployment",
    "decision_evidence",
    "new_state",
    "record_rollback",
    "schedule",
    "watermark",
]

KEEP_CLOSED_DEPLOYMENTS = 32
CONTROL_RANK = {"deploy": 0, "approval": 1, "expiry": 2}
CLOSE, JUDGE, CONTROL = 0, 1, 2
"""Phases of the work due at one instant: windows close, deployments are judged, control
events (deploys, approval responses, expiries) apply."""


@dataclass(frozen=True, slots=True)
class ApprovalCheck:
    """What the shell verified about an approval response (the crypto stays outside the core)."""

    signature_valid: bool
    approver_known: bool
    approver_roles: frozenset[str] = frozenset()
    max_clock_skew_seconds: float | None = None
    """How far the signed ``ts`` may be from the arrival time (the shell's setting; None: no
    limit). Plain data: the check waits on the timeline, so it is part of the state."""


@dataclass(slots=True)
class ServiceState:
    """Everything rollguard remembers about one service (one changelog entry per service)."""

    name: str
    width: int
    lateness: float
    open: dict[int, WindowAccumulator] = field(default_factory=dict)
    next_k: int | None = None
    """Next window index to close (kept for services under trial, which close empty windows)."""
    ring: deque[WindowSummary] = field(default_factory=deque)
    rolling: dict[str, deque[float]] = field(default_factory=dict)
    """Policy stat of each threshold metric over recent windows (the baseline when idle)."""
    last_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    alerts: AlertBook = field(default_factory=AlertBook)
    models: ServiceModels = field(default_factory=ServiceModels)
    deployment: Deployment | None = None
    closed_deployments: deque[str] = field(
        default_factory=lambda: deque(maxlen=KEEP_CLOSED_DEPLOYMENTS)
    )
    trial_from: float = -1.0
    trial_until: float = -1.0
    late_events: int = 0
    """Late events since this service's last decision."""
    late_total: int = 0


@dataclass(slots=True)
class RequestRecord:
    """An approval request and what became of it."""

    request_id: str
    deployment_id: str
    service: str
    expires_at: float
    required_role: str
    deploy_actor: str
    status: str = "pending"


@dataclass(slots=True)
class FleetState:
    """Fleet-wide state: the clock, scheduled control events, breaches, budgets, requests."""

    clock: float = 0.0
    floor: float = 0.0
    """Watermark forced by ``advance``."""
    next_due: float = float("inf")
    """Clock value at which the next window end or control event becomes due."""
    configs: dict[tuple[int, float], int] = field(default_factory=dict)
    """(window_seconds, allowed_lateness_seconds) of the services -> how many use it."""
    order: list[str] = field(default_factory=list)
    """Service names, sorted."""
    timeline: list[tuple[Any, ...]] = field(default_factory=list)
    """Deploys, approval responses and expiries waiting for the watermark, in time order."""
    sequence: int = 0
    breaches: dict[int, set[str]] = field(default_factory=dict)
    """Fleet bucket index (default window width) -> services with a breaching metric."""
    rollbacks: deque[tuple[float, str]] = field(default_factory=deque)
    requests: dict[str, RequestRecord] = field(default_factory=dict)


@dataclass(slots=True)
class EngineState:
    """All mutable state of the decision core; picklable."""

    services: dict[str, ServiceState] = field(default_factory=dict)
    fleet: FleetState = field(default_factory=FleetState)
    kit: DetectorKit | None = None
    """How to make anomaly detectors (None: ``models.anomaly``, resolved when first needed)."""


def new_state(detectors: DetectorKit | None = None) -> EngineState:
    """A fresh engine state; ``detectors`` replaces the default anomaly models (tests)."""
    return EngineState(kit=detectors)


def watermark(fleet: FleetState, lateness: float) -> float:
    """The watermark of a service with this lateness: clock - lateness, or ``advance``'s floor."""
    wm = fleet.clock - lateness
    return wm if wm > fleet.floor else fleet.floor


def schedule(
    state: EngineState,
    svc: ServiceState | None,
    ts: float,
    kind: str,
    tiebreak: tuple[Any, ...],
    payload: Any,
) -> None:
    """Put a control event on the timeline, to apply when the watermark reaches ``ts``."""
    fleet = state.fleet
    fleet.sequence += 1
    name = svc.name if svc is not None else ""
    lateness = svc.lateness if svc is not None else 0.0
    entry = (ts, CONTROL_RANK[kind], name, tiebreak, fleet.sequence, lateness, kind, payload)
    insort(fleet.timeline, entry)
    if svc is not None and ts < watermark(fleet, lateness):
        svc.late_events += 1
        svc.late_total += 1
    fleet.next_due = min(fleet.next_due, ts + lateness)


@dataclass(slots=True)
class Batch:
    """Work that became due, ordered by (time, phase, service, ...)."""

    heap: list[tuple[Any, ...]] = field(default_factory=list)
    queued: set[tuple[str, int]] = field(default_factory=set)
    checks: dict[tuple[str, int], dict[str, ThresholdCheck]] = field(default_factory=dict)
    out: list[OutputRecord] = field(default_factory=list)
    rules: dict[int, tuple[ThresholdRule, ...]] = field(default_factory=dict)
    """Threshold rules per ServicePolicy (by id; the policy outlives the batch)."""

    def close(self, end: float, svc: ServiceState, k: int) -> None:
        """Queue window ``k`` of ``svc`` (ending at ``end``) to close, once."""
        if (svc.name, k) not in self.queued:
            self.queued.add((svc.name, k))
            heapq.heappush(self.heap, (end, 0, svc.name, k, None))


def decision_evidence(
    svc: ServiceState, facts: DeploymentFacts, ts: float, *parts: dict[str, Any]
) -> dict[str, Any]:
    """Evidence of a decision: the deployment, the given parts, and the late events since the
    service's last decision (which are then reported)."""
    merged: dict[str, Any] = {"deployment": deployment_evidence(facts), "decided_at": At(ts)}
    for part in parts:
        merged.update(part)
    merged["late_events"] = svc.late_events
    svc.late_events = 0
    return merged


def close_deployment(svc: ServiceState, dep: Deployment) -> None:
    """The deployment is over: nothing more is judged about it."""
    svc.deployment = None
    svc.closed_deployments.append(dep.facts.deployment_id)


def record_rollback(state: EngineState, ts: float, service: str) -> None:
    """Count a rollback command against the hourly budgets."""
    state.fleet.rollbacks.append((ts, service))
