"""The engine's state: per service (one changelog entry each), fleet-wide, and per batch.

``EngineState`` is plain picklable data: ``services`` maps a service name to its
``ServiceState`` (open windows, recent summaries, alert book, detectors, the deployment on
trial) and ``fleet`` holds what spans services (the event-time clock, scheduled control events,
breaches per window, rollback budget history, approval requests). ``Batch`` is the work that
one watermark advance makes due; it lives only during one call.

The schedule is typed: a control event (``DeployControl``, ``ApprovalControl``,
``ExpiryControl``) waits on the timeline as a ``Scheduled`` entry; the work of one advance is a
heap of ``Due`` items (close a window, judge it, apply a control event), ordered by time, then
``Phase``, then service.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from rollguard.models.alerts import AlertBook
from rollguard.models.events import ApprovalResponse, CoreOutput, DeployEvent, DeployStatus
from rollguard.models.facts import DeploymentFacts, Findings
from rollguard.models.fleet import FleetExchange, FleetFact, Phase
from rollguard.models.judgement import Judgement
from rollguard.models.memory import Memory
from rollguard.models.records import At, deployment_evidence
from rollguard.models.rolling import RunningSum
from rollguard.models.scoring import DetectorKit, ServiceModels
from rollguard.models.thresholds import ThresholdCheck, ThresholdRule
from rollguard.models.trial import Deployment
from rollguard.models.windows import WindowAccumulator, WindowSummary, window_end

__all__ = [
    "ApprovalCheck",
    "ApprovalControl",
    "Batch",
    "Control",
    "DeployControl",
    "Due",
    "EngineState",
    "ExpiryControl",
    "FleetState",
    "Held",
    "Phase",
    "RequestRecord",
    "RequestStatus",
    "Rollback",
    "Scheduled",
    "ServiceState",
    "Trial",
    "WindowConfig",
    "close_deployment",
    "decision_evidence",
    "new_state",
    "record_rollback",
    "schedule",
    "take_late_events",
    "watermark",
]

KEEP_CLOSED_DEPLOYMENTS = 32
_STATUS_RANK = {s: i for i, s in enumerate(DeployStatus)}


SortKey = tuple[str, int, str]
"""Orders control events of one kind at one instant (an id, a rank, the event's JSON)."""


@dataclass(frozen=True, slots=True)
class ApprovalCheck:
    """What the shell verified about an approval response (the crypto stays outside the core)."""

    signature_valid: bool
    approver_known: bool
    approver_roles: frozenset[str] = frozenset()
    max_clock_skew_seconds: float | None = None
    """How far the signed ``ts`` may be from the arrival time (the shell's setting; None: no
    limit). Plain data: the check waits on the timeline, so it is part of the state."""


TRANSIENT = {"transient": True}
"""Field metadata of a cache the state codec does not store (decoded as the default)."""
_NOWHERE = float("inf")


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
    memory: dict[str, Memory] = field(default_factory=dict)
    """Long memory of each threshold metric: every window outside a trial (issue 11)."""
    deployment: Deployment | None = None
    closed_deployments: deque[str] = field(
        default_factory=lambda: deque(maxlen=KEEP_CLOSED_DEPLOYMENTS)
    )
    trial_from: float = -1.0
    trial_until: float = -1.0
    suspect: bool = False
    """The running release was rolled back (automatically or on approval) or its request
    expired unanswered: its windows are not learned as the service's own until the next
    deploy event (a new release, or the rollback landing)."""
    late_events: int = 0
    """Late events since this service's last decision."""
    late_total: int = 0
    # The open window the service's last sample went to, and its bounds: the next sample of
    # the same window (most of them) skips the window arithmetic and the lookup. A cache, not
    # state: never stored (``TRANSIENT``), equal services compare equal without it.
    cur_lo: float = field(default=_NOWHERE, compare=False, metadata=TRANSIENT)
    cur_hi: float = field(default=-_NOWHERE, compare=False, metadata=TRANSIENT)
    cur_acc: WindowAccumulator | None = field(default=None, compare=False, metadata=TRANSIENT)
    sums: dict[str, RunningSum] = field(default_factory=dict, compare=False, metadata=TRANSIENT)
    """The running sum of each ``rolling`` baseline, for the idle close (a cache: a missing one
    is summed again; ``models/rolling.py``)."""

    def forget_window(self) -> None:
        """The current window closed: the next sample finds its window again."""
        self.cur_lo, self.cur_hi, self.cur_acc = _NOWHERE, -_NOWHERE, None


@dataclass(frozen=True, slots=True)
class DeployControl:
    """A deploy event, applied at its event time."""

    event: DeployEvent

    def sort_key(self) -> tuple[int, SortKey]:
        e = self.event
        return 0, (e.deployment_id, _STATUS_RANK[e.status], e.model_dump_json())


@dataclass(frozen=True, slots=True)
class ApprovalControl:
    """An approval response and what the shell verified of it, applied at its time."""

    response: ApprovalResponse
    check: ApprovalCheck | None

    def sort_key(self) -> tuple[int, SortKey]:
        return 1, (self.response.request_id, 0, self.response.model_dump_json())


@dataclass(frozen=True, slots=True)
class ExpiryControl:
    """The expiry of an approval request."""

    request_id: str

    def sort_key(self) -> tuple[int, SortKey]:
        return 2, (self.request_id, 0, "")


Control = DeployControl | ApprovalControl | ExpiryControl


@dataclass(frozen=True, slots=True, order=True)
class Scheduled:
    """A control event waiting on the timeline for the watermark to reach ``ts``."""

    ts: float
    rank: int
    """Deploys before approval responses before expiries."""
    service: str
    key: SortKey
    seq: int
    """Arrival order: the last tie-break."""
    lateness: float = field(compare=False)
    """The service's allowed lateness: the control applies when its watermark reaches ``ts``."""
    control: Control = field(compare=False)


class Due(NamedTuple):
    """One piece of work a watermark advance made due (a named tuple: the batch heap compares
    thousands of them, and tuples compare in C)."""

    t: float
    phase: Phase
    service: str
    k: int = 0
    """The window to close or judge."""
    scheduled: Scheduled | None = None
    """The control event to apply (phase CONTROL)."""


class WindowConfig(NamedTuple):
    """The window parameters a service was first seen with."""

    width: int
    lateness: float


class Rollback(NamedTuple):
    """A rollback command, counted against the hourly budgets."""

    ts: float
    service: str


class RequestStatus(StrEnum):
    """What became of an approval request (the one place its state is kept)."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"
    CLOSED = "closed"
    """The deployment ended (aborted or rolled back) before anyone answered."""


@dataclass(slots=True)
class RequestRecord:
    """An approval request and what became of it."""

    request_id: str
    deployment_id: str
    service: str
    expires_at: float
    required_role: str
    deploy_actor: str
    status: RequestStatus = RequestStatus.PENDING


@dataclass(slots=True)
class FleetState:
    """Fleet-wide state: the clock, scheduled control events, breaches, budgets, requests."""

    clock: float = 0.0
    floor: float = 0.0
    """Watermark forced by ``advance``."""
    next_due: float = float("inf")
    """Clock value at which the next window end or control event becomes due."""
    configs: dict[WindowConfig, int] = field(default_factory=dict)
    """(window_seconds, allowed_lateness_seconds) of the services -> how many use it."""
    order: list[str] = field(default_factory=list)
    """Service names, sorted."""
    timeline: list[Scheduled] = field(default_factory=list)
    """Deploys, approval responses and expiries waiting for the watermark, in time order."""
    sequence: int = 0
    breaches: dict[int, set[str]] = field(default_factory=dict)
    """Fleet bucket index (default window width) -> services with a breaching metric
    (folded from every engine's fleet facts: ``models.ledger``)."""
    rollbacks: deque[Rollback] = field(default_factory=deque)
    """Rollbacks fleet-wide, in the order they were folded (every engine's)."""
    requests: dict[str, RequestRecord] = field(default_factory=dict)
    pending: list[FleetFact] = field(default_factory=list)
    """Fleet facts received (this engine's and the others'), sorted, not yet folded."""
    outbox: list[FleetFact] = field(default_factory=list)
    """This engine's fleet facts not yet reported."""
    reported: float = float("-inf")
    """How far this engine has reported (``FleetReport.through``)."""
    folded: float = float("-inf")
    """Every fleet fact up to ``(folded, JUDGE)`` is in ``breaches`` and ``rollbacks``."""


@dataclass(slots=True)
class EngineState:
    """All mutable state of the decision core; picklable."""

    services: dict[str, ServiceState] = field(default_factory=dict)
    fleet: FleetState = field(default_factory=FleetState)
    kit: DetectorKit | None = None
    """How to make anomaly detectors (None: ``models.anomaly``, resolved when first needed)."""
    touched: set[str] = field(default_factory=set)
    """Services whose state changed since the shell last emptied this set (its checkpoints
    write only those); not itself part of the state."""
    exchange: FleetExchange | None = None
    """How fleet facts reach the other engines (None: this engine is the whole fleet)."""
    held: Held | None = None
    """A batch stopped at a window end, waiting for the other engines' fleet facts (never
    checkpointed: the shell takes no checkpoint while it is set)."""


@dataclass(frozen=True, slots=True)
class Trial:
    """One deployment judged at a window end, before its ruling (which may need the fleet)."""

    svc: ServiceState
    dep: Deployment
    summary: WindowSummary
    judgement: Judgement
    findings: Findings
    claim: FleetFact | None
    """What it asks of the fleet (None: its ruling reads no fleet fact)."""


@dataclass(slots=True)
class Held:
    """The rest of a batch, stopped at the judgements of window end ``t``."""

    batch: Batch
    t: float
    trials: list[Trial]


def new_state(detectors: DetectorKit | None = None) -> EngineState:
    """A fresh engine state; ``detectors`` replaces the default anomaly models (tests)."""
    return EngineState(kit=detectors)


def watermark(fleet: FleetState, lateness: float) -> float:
    """The watermark of a service with this lateness: clock - lateness, or ``advance``'s floor."""
    wm = fleet.clock - lateness
    return wm if wm > fleet.floor else fleet.floor


def schedule(state: EngineState, svc: ServiceState | None, ts: float, control: Control) -> None:
    """Put a control event on the timeline, to apply when the watermark reaches ``ts``."""
    fleet = state.fleet
    fleet.sequence += 1
    name = svc.name if svc is not None else ""
    lateness = svc.lateness if svc is not None else 0.0
    rank, key = control.sort_key()
    insort(fleet.timeline, Scheduled(ts, rank, name, key, fleet.sequence, lateness, control))
    if svc is not None and ts < watermark(fleet, lateness):
        svc.late_events += 1
        svc.late_total += 1
    fleet.next_due = min(fleet.next_due, ts + lateness)


@dataclass(slots=True)
class Batch:
    """Work that became due, ordered by (time, phase, service, ...)."""

    heap: list[Due] = field(default_factory=list)
    queued: set[tuple[str, int]] = field(default_factory=set)
    checks: dict[tuple[str, int], dict[str, ThresholdCheck]] = field(default_factory=dict)
    out: list[CoreOutput] = field(default_factory=list)
    rules: dict[int, tuple[ThresholdRule, ...]] = field(default_factory=dict)
    """Threshold rules per ServicePolicy (by id; the policy outlives the batch)."""

    def close(self, svc: ServiceState, k: int) -> None:
        """Queue window ``k`` of ``svc`` to close at its end, once."""
        key = (svc.name, k)
        if key not in self.queued:
            self.queued.add(key)
            heapq.heappush(self.heap, Due(window_end(k, svc.width), Phase.CLOSE, svc.name, k))


def take_late_events(svc: ServiceState) -> int:
    """The late events since the service's last decision, which reports them; the count
    starts again (``late_total`` keeps the running total)."""
    late, svc.late_events = svc.late_events, 0
    return late


def decision_evidence(
    facts: DeploymentFacts, ts: float, late_events: int, *parts: dict[str, Any]
) -> dict[str, Any]:
    """Evidence of a decision: the deployment, the given parts, and the late events."""
    merged: dict[str, Any] = {"deployment": deployment_evidence(facts), "decided_at": At(ts)}
    for part in parts:
        merged.update(part)
    merged["late_events"] = late_events
    return merged


def close_deployment(svc: ServiceState, dep: Deployment) -> None:
    """The deployment is over: nothing more is judged about it."""
    svc.deployment = None
    svc.closed_deployments.append(dep.facts.deployment_id)


def record_rollback(state: EngineState, ts: float, service: str) -> None:
    """Report the rollback of an approved request to the fleet's hourly budgets.

    It counts from its own time, or, if it comes later than this engine's last report (a late
    approval response), from just after that report: the judgements it could still have
    preceded are those not yet reported on."""
    fleet = state.fleet
    fleet.outbox.append(FleetFact(max(ts, fleet.reported), Phase.CONTROL, service, ts))
