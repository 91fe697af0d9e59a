"""The decision core as a fold: ``step(state, event, policy) -> outputs``, state mutated in place.

``step`` is called identically by the Kafka worker and by offline replay. Metric samples and
alerts go into the open window of their service (a dict lookup and an append); everything else
happens when the event-time watermark passes a window's end, in one deterministic order:

1. at each window end ``t`` (ascending): every service's window ending at ``t`` closes (services
   in name order) and announces its breaches to the fleet;
2. then every deployment whose window closed at ``t`` is judged (``Deployment.observe`` ->
   ``decide``), so fleet-wide counts for that window are complete;
3. then deploy events, approval responses and request expiries whose time is ``t``.

Deploy events and approval responses are applied in event-time order with the windows, not on
arrival, so that reordering within the allowed lateness never changes a decision.

Watermark. The fleet clock is the newest event time seen (any service, any type). Service
``s`` closes a window when ``clock - allowed_lateness(s)`` reaches the window's end, so a silent
service's windows close too, and a window never closes while an event within the lateness can
still fill it. ``advance(t)`` moves every watermark to at least ``t`` (idle inputs, end of
replay). Samples for windows already closed are counted per service as late and reported as
``late_events`` in that service's next decision. See docs/core.md for the limits of this choice.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from models.alerts import AlertBook
from models.decide import DeploymentFacts, FleetFacts, Ruling, Stage, decide
from models.events import (
    Alert,
    ApprovalResponse,
    DeployEvent,
    DeployStatus,
    MetricSample,
    OutputRecord,
    ReasonCode,
)
from models.policy import Policy
from models.records import (
    approval_request,
    decision,
    deployment_evidence,
    rollback_command,
    verdict,
)
from models.scoring import DetectorKit, ServiceModels, default_kit
from models.trial import (
    Deployment,
    ThresholdCheck,
    ThresholdRule,
    check_thresholds,
    exceeds,
    threshold_rules,
)
from models.windows import (
    WindowAccumulator,
    WindowSummary,
    build_baseline,
    fold_metrics,
    ordered_alerts,
    stat_of,
)

__all__ = [
    "ApprovalCheck",
    "EngineState",
    "FleetState",
    "RequestRecord",
    "ServiceState",
    "advance",
    "new_state",
    "step",
]

_HOUR = 3600.0
_KEEP_CLOSED_DEPLOYMENTS = 32
_CONTROL_RANK = {"deploy": 0, "approval": 1, "expiry": 2}
_STATUS_RANK = {s: i for i, s in enumerate(DeployStatus)}


@dataclass(frozen=True, slots=True)
class ApprovalCheck:
    """What the shell verified about an approval response (the crypto stays outside the core)."""

    signature_valid: bool
    approver_known: bool
    approver_roles: frozenset[str] = frozenset()


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
        default_factory=lambda: deque(maxlen=_KEEP_CLOSED_DEPLOYMENTS)
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


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def step(
    state: EngineState,
    event: DeployEvent | MetricSample | Alert | ApprovalResponse,
    policy: Policy,
    *,
    approval_check: ApprovalCheck | None = None,
) -> list[OutputRecord]:
    """Fold one input event into ``state``; return the records to emit, in order."""
    kind = type(event)
    if kind is MetricSample:
        sample: MetricSample = event  # type: ignore[assignment]
        svc = state.services.get(sample.service)
        if svc is None:
            svc = _new_service(state, policy, sample.service)
        ts = sample.ts
        k = int(ts // svc.width)
        acc = svc.open.get(k)
        if acc is None:
            acc = _open_window(state, svc, k)
        if acc is not None:
            key = (sample.name, sample.source, sample.instance)
            entry = acc.samples.get(key)
            if entry is None:
                acc.samples[key] = [ts, sample.value]
            else:
                entry.append(sample.value)
                if ts > entry[0]:
                    entry[0] = ts
    elif kind is Alert:
        alert: Alert = event  # type: ignore[assignment]
        svc = state.services.get(alert.service) or _new_service(state, policy, alert.service)
        k = int(alert.ts // svc.width)
        acc = svc.open.get(k) or _open_window(state, svc, k)
        if acc is not None:
            acc.alerts.append(alert)
    elif kind is DeployEvent:
        deploy: DeployEvent = event  # type: ignore[assignment]
        svc = state.services.get(deploy.service) or _new_service(state, policy, deploy.service)
        order = (deploy.deployment_id, _STATUS_RANK[deploy.status], deploy.model_dump_json())
        _schedule(state, svc, deploy.ts, "deploy", order, deploy)
    elif kind is ApprovalResponse:
        response: ApprovalResponse = event  # type: ignore[assignment]
        record = state.fleet.requests.get(response.request_id)
        name = record.service if record is not None else response.service
        owner = state.services.get(name) if name else None
        if owner is None and name:
            owner = _new_service(state, policy, name)
        answer = (response.request_id, response.model_dump_json())
        _schedule(state, owner, response.ts, "approval", answer, (response, approval_check))
    else:
        raise TypeError(f"not an input event: {kind.__name__}")

    fleet = state.fleet
    ts = event.ts
    if ts > fleet.clock:
        fleet.clock = ts
    if fleet.clock >= fleet.next_due:
        return _run_due(state, policy)
    return []


def advance(state: EngineState, policy: Policy, event_time: float) -> list[OutputRecord]:
    """Move every watermark to at least ``event_time`` and emit what that decides."""
    fleet = state.fleet
    if event_time > fleet.floor:
        fleet.floor = event_time
    return _run_due(state, policy)


# ----------------------------------------------------------------------------------------------
# Services, windows and the schedule
# ----------------------------------------------------------------------------------------------


def _new_service(state: EngineState, policy: Policy, name: str) -> ServiceState:
    sp = policy.for_service(name)
    svc = ServiceState(
        name=name,
        width=sp.window_seconds,
        lateness=sp.allowed_lateness_seconds,
        ring=deque(maxlen=sp.baseline_windows + sp.consecutive_breach_windows + 2),
    )
    state.services[name] = svc
    fleet = state.fleet
    insort(fleet.order, name)
    config = (svc.width, svc.lateness)
    fleet.configs[config] = fleet.configs.get(config, 0) + 1
    fleet.next_due = min(fleet.next_due, _config_due(fleet, *config))
    return svc


def _watermark(fleet: FleetState, lateness: float) -> float:
    wm = fleet.clock - lateness
    return wm if wm > fleet.floor else fleet.floor


def _config_due(fleet: FleetState, width: int, lateness: float) -> float:
    """Clock value at which the next window end of this configuration becomes due."""
    limit = int(_watermark(fleet, lateness) // width)
    return (limit + 1) * width + lateness


def _open_window(state: EngineState, svc: ServiceState, k: int) -> WindowAccumulator | None:
    """A new accumulator for window ``k``, or None (and a late count) if it already closed."""
    wm = _watermark(state.fleet, svc.lateness)
    if k < int(wm // svc.width) or (svc.next_k is not None and k < svc.next_k):
        svc.late_events += 1
        svc.late_total += 1
        return None
    acc = svc.open[k] = WindowAccumulator()
    return acc


def _schedule(
    state: EngineState,
    svc: ServiceState | None,
    ts: float,
    kind: str,
    tiebreak: tuple[Any, ...],
    payload: Any,
) -> None:
    fleet = state.fleet
    fleet.sequence += 1
    name = svc.name if svc is not None else ""
    lateness = svc.lateness if svc is not None else 0.0
    entry = (ts, _CONTROL_RANK[kind], name, tiebreak, fleet.sequence, lateness, kind, payload)
    insort(fleet.timeline, entry)
    if svc is not None and ts < _watermark(fleet, lateness):
        svc.late_events += 1
        svc.late_total += 1
    fleet.next_due = min(fleet.next_due, ts + lateness)


@dataclass(slots=True)
class _Batch:
    """Work that became due, ordered by (time, phase, service, ...)."""

    heap: list[tuple[Any, ...]] = field(default_factory=list)
    queued: set[tuple[str, int]] = field(default_factory=set)
    checks: dict[tuple[str, int], dict[str, ThresholdCheck]] = field(default_factory=dict)
    out: list[OutputRecord] = field(default_factory=list)
    rules: dict[int, tuple[ThresholdRule, ...]] = field(default_factory=dict)
    """Threshold rules per ServicePolicy (by id; the policy outlives the batch)."""

    def close(self, end: float, svc: ServiceState, k: int) -> None:
        if (svc.name, k) not in self.queued:
            self.queued.add((svc.name, k))
            heapq.heappush(self.heap, (end, 0, svc.name, k, None))


_CLOSE, _JUDGE, _CONTROL = 0, 1, 2


def _run_due(state: EngineState, policy: Policy) -> list[OutputRecord]:
    fleet = state.fleet
    batch = _Batch()
    services = state.services
    for name in fleet.order:
        svc = services[name]
        if not svc.open and svc.deployment is None:
            continue
        width = svc.width
        limit = int(_watermark(fleet, svc.lateness) // width)
        for k in svc.open:
            if k < limit:
                batch.close(float((k + 1) * width), svc, k)
        if svc.deployment is not None and svc.next_k is not None:
            for k in range(svc.next_k, limit):
                batch.close(float((k + 1) * width), svc, k)
    _queue_control(state, batch)
    heap = batch.heap
    while heap:
        t, phase, name, k, payload = heapq.heappop(heap)
        if phase == _CLOSE:
            _close_window(state, policy, services[name], k, batch)
        elif phase == _JUDGE:
            _judge(state, policy, services[name], k, batch)
        else:
            _apply_control(state, policy, payload, batch)
        if not heap:
            _queue_control(state, batch)
    _prune(state, policy)
    fleet.next_due = min(
        [_config_due(fleet, w, lat) for (w, lat) in fleet.configs]
        + [entry[0] + entry[5] for entry in fleet.timeline]
    )
    return batch.out


def _queue_control(state: EngineState, batch: _Batch) -> None:
    """Move control events whose time the watermark has reached into the batch."""
    fleet = state.fleet
    keep: list[tuple[Any, ...]] = []
    for entry in fleet.timeline:
        ts, rank, name, tiebreak, seq, lateness, kind, payload = entry
        if ts <= _watermark(fleet, lateness):
            heapq.heappush(batch.heap, (ts, _CONTROL, name, (rank, tiebreak, seq), (kind, payload)))
        else:
            keep.append(entry)
    fleet.timeline = keep


def _close_window(
    state: EngineState, policy: Policy, svc: ServiceState, k: int, batch: _Batch
) -> None:
    sp = policy.for_service(svc.name)
    width = svc.width
    start, end = float(k * width), float((k + 1) * width)
    acc = svc.open.pop(k, None)
    if svc.next_k is None or k + 1 > svc.next_k:
        svc.next_k = k + 1
    metrics = fold_metrics(acc)
    alerts = ordered_alerts(acc)
    book = svc.alerts
    if alerts:
        book.record(alerts, keep_after=end - sp.flap_window_seconds)
    if book.status:
        book.carry_firing(end)

    dep = svc.deployment
    if dep is not None and dep.baseline is None and end > dep.facts.deployed_at:
        first, last = dep.baseline_range(sp)
        dep.baseline = build_baseline(svc.ring, first, last)
    rules = batch.rules.get(id(sp))
    if rules is None:
        rules = batch.rules[id(sp)] = threshold_rules(sp)
    rolling = svc.rolling
    checks: dict[str, ThresholdCheck] = {}
    breaching: list[str] = []
    if dep is not None and metrics:
        # Under trial: judged against the frozen baseline, with the details kept for evidence.
        checks = check_thresholds(metrics, sp, dep.baseline_values(sp))
        breaching = [name for name, check in checks.items() if check.breach]
        values = {name: check.value for name, check in checks.items()}
    else:
        # Idle: against the rolling baseline, with no more work than the comparison.
        values = {}
        for name, stat, top, ratio in rules:
            stats = metrics.get(name)
            if stats is None:
                continue
            value = values[name] = stat_of(stats, stat)
            past = rolling.get(name)
            base = sum(past) / len(past) if past else None
            if exceeds(value, top, ratio, base):
                breaching.append(name)
    on_trial = start < svc.trial_until and end > svc.trial_from
    pending = dep is not None and dep.stage in (Stage.PENDING, Stage.INCONCLUSIVE)
    learnable = bool(metrics) and not breaching and not on_trial and not pending
    summary = WindowSummary(k, start, end, metrics, alerts, tuple(breaching), learnable)
    svc.ring.append(summary)

    for name, value in values.items():
        past = rolling.get(name)
        if past is None:
            past = rolling[name] = deque(maxlen=sp.baseline_windows)
        past.append(value)
    last_seen = svc.last_seen
    for name, stats in metrics.items():
        for source, ts in stats.last_seen.items():
            last_seen[(name, source)] = ts
    if breaching:
        bucket_width = policy.defaults.window_seconds
        for bucket in range(int(start // bucket_width), -int(-end // bucket_width)):
            state.fleet.breaches.setdefault(bucket, set()).add(svc.name)
    if dep is not None and dep.stage is not Stage.INCONCLUSIVE:
        batch.checks[(svc.name, k)] = checks
        heapq.heappush(batch.heap, (end, _JUDGE, svc.name, k, None))


# ----------------------------------------------------------------------------------------------
# Judging a deployment at a window close
# ----------------------------------------------------------------------------------------------


def _kit(state: EngineState) -> DetectorKit:
    if state.kit is None:
        state.kit = default_kit()
    return state.kit


def _fleet_facts(
    state: EngineState, policy: Policy, service: str, start: float, end: float
) -> FleetFacts:
    fleet = state.fleet
    bucket_width = policy.defaults.window_seconds
    breaching: set[str] = set()
    for bucket in range(int(start // bucket_width), -int(-end // bucket_width)):
        breaching |= fleet.breaches.get(bucket, set())
    since = end - _HOUR
    recent = [s for ts, s in fleet.rollbacks if ts > since]
    return FleetFacts(
        breaching_services=tuple(sorted(breaching)),
        service_rollbacks=sum(1 for s in recent if s == service),
        fleet_rollbacks=len(recent),
    )


def _judge(state: EngineState, policy: Policy, svc: ServiceState, k: int, batch: _Batch) -> None:
    dep = svc.deployment
    checks = batch.checks.pop((svc.name, k), {})
    if dep is None or dep.stage is Stage.INCONCLUSIVE or k < dep.first_k:
        return
    summary = svc.ring[-1]
    assert summary.k == k
    sp = policy.for_service(svc.name)
    kit = _kit(state)
    svc.models.catch_up(kit, svc.ring, sp, through=k - 1)
    scores = svc.models.score(kit, summary, sp)
    findings, evidence = dep.observe(summary, checks, scores, sp, svc.last_seen, svc.alerts)
    fleet = _fleet_facts(state, policy, svc.name, summary.start, summary.end)
    ruling = decide(dep.facts, dep.stage, findings, fleet, policy, summary.end)
    if ruling is not None:
        _carry_out(state, policy, svc, dep, ruling, summary.end, evidence, batch)


def _evidence(
    svc: ServiceState, facts: DeploymentFacts, ts: float, *parts: dict[str, Any]
) -> dict[str, Any]:
    merged: dict[str, Any] = {"deployment": deployment_evidence(facts), "decided_at": ts}
    for part in parts:
        merged.update(part)
    merged["late_events"] = svc.late_events
    svc.late_events = 0
    return merged


def _close_deployment(svc: ServiceState, dep: Deployment) -> None:
    svc.deployment = None
    svc.closed_deployments.append(dep.facts.deployment_id)


def _record_rollback(state: EngineState, ts: float, service: str) -> None:
    state.fleet.rollbacks.append((ts, service))


def _carry_out(
    state: EngineState,
    policy: Policy,
    svc: ServiceState,
    dep: Deployment,
    ruling: Ruling,
    ts: float,
    trial_evidence: dict[str, Any],
    batch: _Batch,
) -> None:
    """Turn a ruling into output records and the state changes it implies."""
    sp = policy.for_service(svc.name)
    facts = dep.facts
    out = batch.out
    details = {code.value: text for code, text in ruling.details.items()}
    evidence = _evidence(
        svc, facts, ts, trial_evidence, dict(ruling.evidence), {"details": details}
    )
    version = policy.version
    action = ruling.action
    if action == "watch":
        out.append(decision(facts, svc.name, "watch", ruling.reasons, ts, evidence, version))
        dep.stage = Stage.WATCHING
        return
    if action == "auto_rollback":
        assert ruling.authority is not None
        evidence["authority"] = ruling.authority
        out.append(
            decision(facts, svc.name, "auto_rollback", ruling.reasons, ts, evidence, version)
        )
        out.append(
            rollback_command(facts, ruling.authority, ruling.reasons, ts, evidence, sp, version)
        )
        out.append(verdict(facts, "rolled_back", ts, ruling.reasons))
        _record_rollback(state, ts, svc.name)
        if dep.request_id is not None:
            state.fleet.requests[dep.request_id].status = "superseded"
        _close_deployment(svc, dep)
        return
    if action == "request_approval":
        request = approval_request(facts, ruling, ts, evidence, sp, version)
        out.append(
            decision(facts, svc.name, "request_approval", ruling.reasons, ts, evidence, version)
        )
        out.append(request)
        outcome = ruling.verdict or "pending_approval"
        out.append(verdict(facts, outcome, ts, ruling.reasons))
        dep.stage = Stage.INCONCLUSIVE if outcome == "inconclusive" else Stage.PENDING
        dep.request_id = request.request_id
        dep.request_expires_at = request.expires_at
        dep.request_reasons = tuple(c.value for c in ruling.reasons)
        state.fleet.requests[request.request_id] = RequestRecord(
            request_id=request.request_id,
            deployment_id=facts.deployment_id,
            service=svc.name,
            expires_at=request.expires_at,
            required_role=request.required_role,
            deploy_actor=facts.actor,
        )
        _schedule(
            state, svc, request.expires_at, "expiry", (request.request_id,), request.request_id
        )
        return
    if action == "pass":
        out.append(decision(facts, svc.name, "pass", ruling.reasons, ts, evidence, version))
        out.append(verdict(facts, "pass", ts, ruling.reasons))
        _close_deployment(svc, dep)
        return
    # withdraw
    out.append(decision(facts, svc.name, "none", ruling.reasons, ts, evidence, version))
    out.append(verdict(facts, "inconclusive", ts, ruling.reasons))
    if dep.request_id is not None:
        state.fleet.requests[dep.request_id].status = "withdrawn"
    _close_deployment(svc, dep)


# ----------------------------------------------------------------------------------------------
# Control events: deploys, approval responses, expiries
# ----------------------------------------------------------------------------------------------


def _apply_control(state: EngineState, policy: Policy, payload: Any, batch: _Batch) -> None:
    kind, body = payload
    if kind == "deploy":
        _apply_deploy(state, policy, body, batch)
    elif kind == "approval":
        response, check = body
        _apply_approval(state, policy, response, check, batch)
    else:
        _apply_expiry(state, policy, body, batch)


def _apply_deploy(state: EngineState, policy: Policy, event: DeployEvent, batch: _Batch) -> None:
    svc = state.services[event.service]
    dep = svc.deployment
    ident = event.deployment_id
    ending = event.status in (DeployStatus.ABORTED, DeployStatus.ROLLED_BACK)
    if dep is not None and dep.facts.deployment_id == ident:
        if ending:
            # The deployment is over; nothing more is decided about it (DESIGN: no decisions).
            if dep.request_id is not None:
                state.fleet.requests[dep.request_id].status = "closed"
            _close_deployment(svc, dep)
        return
    if ending or ident in svc.closed_deployments:
        return
    if dep is not None:
        reasons: tuple[ReasonCode, ...] = ()
        if dep.request_id is not None:
            state.fleet.requests[dep.request_id].status = "withdrawn"
            reasons = (ReasonCode.APPROVAL_WITHDRAWN,)
        evidence = _evidence(
            svc,
            dep.facts,
            event.ts,
            {"closed_by": {"deployment_id": ident, "status": event.status.value}},
        )
        batch.out.append(
            decision(dep.facts, svc.name, "none", reasons, event.ts, evidence, policy.version)
        )
        _close_deployment(svc, dep)
    sp = policy.for_service(svc.name)
    facts = DeploymentFacts(
        deployment_id=ident,
        service=event.service,
        version=event.version,
        rollback_target=event.rollback_target,
        actor=event.actor,
        deployed_at=event.ts,
        change=event.change,
    )
    dep = svc.deployment = Deployment.open(facts, sp)
    svc.trial_from = max(svc.trial_from, facts.deployed_at)
    svc.trial_until = max(svc.trial_until, dep.bake_until)
    straddle = int(facts.deployed_at // svc.width)
    svc.next_k = straddle if svc.next_k is None else max(svc.next_k, straddle)
    limit = int(_watermark(state.fleet, svc.lateness) // svc.width)
    for k in range(svc.next_k, limit):
        batch.close(float((k + 1) * svc.width), svc, k)


def _reject(
    state: EngineState,
    policy: Policy,
    response: ApprovalResponse,
    service: str,
    cause: str,
    batch: _Batch,
) -> None:
    svc = state.services.get(service)
    evidence = {
        "request_id": response.request_id,
        "approver": response.approver,
        "decision": response.decision,
        "cause": cause,
        "late_events": svc.late_events if svc is not None else 0,
    }
    if svc is not None:
        svc.late_events = 0
    record = state.fleet.requests.get(response.request_id)
    batch.out.append(
        decision(
            None,
            service,
            "none",
            (ReasonCode.APPROVAL_REJECTED,),
            response.ts,
            evidence,
            policy.version,
        )
    )
    if record is not None:
        last = batch.out[-1]
        batch.out[-1] = last.model_copy(update={"deployment_id": record.deployment_id})


def _approval_problem(
    record: RequestRecord | None,
    dep: Deployment | None,
    response: ApprovalResponse,
    check: ApprovalCheck | None,
) -> str | None:
    """Why an approval response does not count (DESIGN §6), or None if it does."""
    if record is None:
        return "no such approval request"
    if record.status != "pending":
        return f"request already {record.status}"
    if dep is None or dep.facts.deployment_id != record.deployment_id:
        return "the deployment is no longer open"
    if check is None or not check.signature_valid:
        return "signature missing or invalid"
    if not check.approver_known:
        return f"unknown approver {response.approver}"
    if record.required_role not in check.approver_roles:
        return f"{response.approver} lacks role {record.required_role}"
    if response.approver == record.deploy_actor:
        return f"self-approval: {response.approver} deployed this release"
    if response.ts > record.expires_at:
        return "the request had expired when the response was given"
    return None


def _apply_approval(
    state: EngineState,
    policy: Policy,
    response: ApprovalResponse,
    check: ApprovalCheck | None,
    batch: _Batch,
) -> None:
    record = state.fleet.requests.get(response.request_id)
    service = record.service if record is not None else (response.service or "unknown")
    svc = state.services.get(service)
    dep = svc.deployment if svc is not None else None
    problem = _approval_problem(record, dep, response, check)
    if problem is not None:
        _reject(state, policy, response, service, problem, batch)
        return
    assert record is not None and svc is not None and dep is not None
    sp = policy.for_service(service)
    facts = dep.facts
    ts = response.ts
    answer = {
        "request_id": record.request_id,
        "approver": response.approver,
        "decision": response.decision,
        "comment": response.comment,
        "request_reasons": list(dep.request_reasons),
    }
    evidence = _evidence(svc, facts, ts, {"approval": answer})
    version = policy.version
    out = batch.out
    if response.decision == "deny":
        record.status = "denied"
        reasons: tuple[ReasonCode, ...] = (ReasonCode.DENIED,)
        out.append(decision(facts, service, "none", reasons, ts, evidence, version))
        out.append(verdict(facts, "pass", ts, reasons))
        _close_deployment(svc, dep)
        return
    record.status = "approved"
    if facts.rollback_target is None:
        reasons = (ReasonCode.NO_ROLLBACK_TARGET, ReasonCode.APPROVED)
        out.append(decision(facts, service, "none", reasons, ts, evidence, version))
        out.append(verdict(facts, "inconclusive", ts, reasons))
        _close_deployment(svc, dep)
        return
    authority = f"approved:{response.approver}"
    evidence["authority"] = authority
    reasons = (ReasonCode.APPROVED,)
    out.append(decision(facts, service, "auto_rollback", reasons, ts, evidence, version))
    out.append(rollback_command(facts, authority, reasons, ts, evidence, sp, version))
    out.append(verdict(facts, "rolled_back", ts, reasons))
    _record_rollback(state, ts, service)
    _close_deployment(svc, dep)


def _apply_expiry(state: EngineState, policy: Policy, rid: str, batch: _Batch) -> None:
    record = state.fleet.requests.get(rid)
    if record is None or record.status != "pending":
        return
    record.status = "expired"
    svc = state.services[record.service]
    dep = svc.deployment
    if dep is None or dep.facts.deployment_id != record.deployment_id:
        return
    ts = record.expires_at
    reasons = (ReasonCode.APPROVAL_EXPIRED,)
    evidence = _evidence(svc, dep.facts, ts, {"request_id": rid, "expired_at": ts})
    batch.out.append(decision(dep.facts, svc.name, "none", reasons, ts, evidence, policy.version))
    batch.out.append(verdict(dep.facts, "inconclusive", ts, reasons))
    _close_deployment(svc, dep)


def _prune(state: EngineState, policy: Policy) -> None:
    """Forget fleet history that no decision can need any more (keeps memory flat)."""
    fleet = state.fleet
    horizon = fleet.clock - _HOUR
    bucket_floor = int(horizon // policy.defaults.window_seconds)
    for bucket in [b for b in fleet.breaches if b < bucket_floor]:
        del fleet.breaches[bucket]
    while fleet.rollbacks and fleet.rollbacks[0][0] <= horizon:
        fleet.rollbacks.popleft()
    forget = fleet.clock - 24 * _HOUR
    for rid in [
        r
        for r, rec in fleet.requests.items()
        if rec.status != "pending" and rec.expires_at < forget
    ]:
        del fleet.requests[rid]
