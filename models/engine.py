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

The state lives in ``models.state``; what a ruling or a control event does, in
``models.actions``; this module schedules and closes windows and judges deployments.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections import deque
from collections.abc import Mapping

from rollguard.models.actions import apply_control, carry_out
from rollguard.models.decide import FleetFacts, Stage, decide
from rollguard.models.events import (
    Alert,
    ApprovalResponse,
    CoreOutput,
    DeployEvent,
    DeployStatus,
    MetricSample,
)
from rollguard.models.evidence import trial_evidence
from rollguard.models.memory import LongMemory
from rollguard.models.policy import Policy, ServicePolicy
from rollguard.models.scoring import DetectorKit, default_kit
from rollguard.models.state import (
    ApprovalCheck,
    ApprovalControl,
    Batch,
    DeployControl,
    Due,
    EngineState,
    FleetState,
    Phase,
    RequestRecord,
    RequestStatus,
    Scheduled,
    ServiceState,
    WindowConfig,
    new_state,
    schedule,
    watermark,
)
from rollguard.models.thresholds import (
    ThresholdCheck,
    ThresholdRule,
    check_thresholds,
    exceeds,
    threshold_rules,
)
from rollguard.models.windows import (
    MetricStats,
    WindowAccumulator,
    WindowSummary,
    build_baseline,
    fold_metrics,
    ordered_alerts,
    stat_of,
    window_bounds,
    window_end,
    window_index,
    windows_overlapping,
)

__all__ = [
    "ApprovalCheck",
    "EngineState",
    "FleetState",
    "RequestRecord",
    "ServiceState",
    "advance",
    "last_bake_end",
    "new_state",
    "step",
]

_HOUR = 3600.0
_STATUS_RANK = {s: i for i, s in enumerate(DeployStatus)}


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def step(
    state: EngineState,
    event: DeployEvent | MetricSample | Alert | ApprovalResponse,
    policy: Policy,
    *,
    approval_check: ApprovalCheck | None = None,
) -> list[CoreOutput]:
    """Fold one input event into ``state``; return the records to emit, in order."""
    if isinstance(event, MetricSample):
        # The hot path (nearly every event): one attribute read per field.
        ts = event.ts
        svc = state.services.get(event.service)
        if svc is None:
            svc = _new_service(state, policy, event.service)
        state.touched.add(svc.name)
        k = window_index(ts, svc.width)
        acc = svc.open.get(k)
        if acc is None:
            acc = _open_window(state, svc, k)
        if acc is not None:
            # WindowAccumulator.add_sample, written out: it runs once per event.
            key = (event.name, event.source, event.instance)
            entry = acc.samples.get(key)
            if entry is None:
                acc.samples[key] = [ts, event.value]
            else:
                entry.append(event.value)
                if ts > entry[0]:
                    entry[0] = ts
    elif isinstance(event, Alert):
        ts = event.ts
        svc = state.services.get(event.service) or _new_service(state, policy, event.service)
        state.touched.add(svc.name)
        k = window_index(ts, svc.width)
        acc = svc.open.get(k) or _open_window(state, svc, k)
        if acc is not None:
            acc.alerts.append(event)
    elif isinstance(event, DeployEvent):
        ts = event.ts
        svc = state.services.get(event.service) or _new_service(state, policy, event.service)
        state.touched.add(svc.name)
        schedule(state, svc, ts, DeployControl(event))
    elif isinstance(event, ApprovalResponse):
        # Arrival order (DESIGN §6): the broker's time, not the time the approver signed.
        ts = event.arrival
        record = state.fleet.requests.get(event.request_id)
        name = record.service if record is not None else event.service
        owner = state.services.get(name) if name else None
        if owner is None and name:
            owner = _new_service(state, policy, name)
        if owner is not None:
            state.touched.add(owner.name)
        schedule(state, owner, ts, ApprovalControl(event, approval_check))
    else:
        raise TypeError(f"not an input event: {type(event).__name__}")

    fleet = state.fleet
    if ts > fleet.clock:
        fleet.clock = ts
    if fleet.clock >= fleet.next_due:
        return _run_due(state, policy)
    return []


def advance(state: EngineState, policy: Policy, event_time: float) -> list[CoreOutput]:
    """Move every watermark to at least ``event_time`` and emit what that decides."""
    fleet = state.fleet
    if event_time > fleet.floor:
        fleet.floor = event_time
    return _run_due(state, policy)


def last_bake_end(state: EngineState, policy: Policy) -> float:
    """Event time by which every deployment now under trial, or scheduled, has been judged.

    The end of its bake plus one window and the lateness, for open deployments and for deploy
    events the watermark has not reached yet; ``-inf`` when there is none.
    """
    end = float("-inf")
    for svc in state.services.values():
        dep = svc.deployment
        if dep is not None:
            end = max(end, dep.bake_until + svc.width + svc.lateness)
    for entry in state.fleet.timeline:
        match entry.control:
            case DeployControl(event=deploy):
                rules = policy.for_service(deploy.service)
                end = max(
                    end,
                    entry.ts
                    + rules.bake_seconds
                    + rules.window_seconds
                    + rules.allowed_lateness_seconds,
                )
            case _:
                pass
    return end


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
    config = WindowConfig(svc.width, svc.lateness)
    fleet.configs[config] = fleet.configs.get(config, 0) + 1
    fleet.next_due = min(fleet.next_due, _config_due(fleet, config))
    return svc


def _config_due(fleet: FleetState, config: WindowConfig) -> float:
    """Clock value at which the next window end of this configuration becomes due."""
    width, lateness = config.width, config.lateness
    return window_end(window_index(watermark(fleet, lateness), width), width) + lateness


def _open_window(state: EngineState, svc: ServiceState, k: int) -> WindowAccumulator | None:
    """A new accumulator for window ``k``, or None (and a late count) if it already closed."""
    wm = watermark(state.fleet, svc.lateness)
    if k < window_index(wm, svc.width) or (svc.next_k is not None and k < svc.next_k):
        svc.late_events += 1
        svc.late_total += 1
        return None
    acc = svc.open[k] = WindowAccumulator()
    return acc


def _run_due(state: EngineState, policy: Policy) -> list[CoreOutput]:
    fleet = state.fleet
    batch = Batch()
    services = state.services
    # The first window each configuration must not close yet (a handful of configurations,
    # thousands of services).
    limits: dict[tuple[int, float], int] = {
        config: window_index(watermark(fleet, config.lateness), config.width)
        for config in fleet.configs
    }
    for name in fleet.order:
        svc = services[name]
        if not svc.open and svc.deployment is None:
            continue
        limit = limits[(svc.width, svc.lateness)]
        for k in svc.open:
            if k < limit:
                batch.close(svc, k)
        if svc.deployment is not None and svc.next_k is not None:
            for k in range(svc.next_k, limit):
                batch.close(svc, k)
    _queue_control(state, batch)
    heap = batch.heap
    touched = state.touched
    while heap:
        due = heapq.heappop(heap)
        if due.service:
            touched.add(due.service)
        match due:
            case Due(phase=Phase.CLOSE):
                _close_window(state, policy, services[due.service], due.k, batch)
            case Due(phase=Phase.JUDGE):
                _judge(state, policy, services[due.service], due.k, batch)
            case Due(scheduled=Scheduled(control=control)):
                apply_control(state, policy, control, batch)
        if not heap:
            _queue_control(state, batch)
    _prune(state, policy)
    fleet.next_due = min(
        [_config_due(fleet, config) for config in fleet.configs]
        + [entry.ts + entry.lateness for entry in fleet.timeline],
        default=float("inf"),
    )
    return batch.out


def _queue_control(state: EngineState, batch: Batch) -> None:
    """Move control events whose time the watermark has reached into the batch."""
    fleet = state.fleet
    keep: list[Scheduled] = []
    for entry in fleet.timeline:
        if entry.ts <= watermark(fleet, entry.lateness):
            heapq.heappush(batch.heap, Due(entry.ts, Phase.CONTROL, entry.service, 0, entry))
        else:
            keep.append(entry)
    fleet.timeline = keep


def _close_window(
    state: EngineState, policy: Policy, svc: ServiceState, k: int, batch: Batch
) -> None:
    sp = policy.for_service(svc.name)
    width = svc.width
    start, end = window_bounds(k, width)
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
        dep.keep_baseline_values(svc.ring, sp, first, last)
    rules = batch.rules.get(id(sp))
    if rules is None:
        rules = batch.rules[id(sp)] = threshold_rules(sp)
    checks, breaching, values = _thresholds(svc, sp, rules, metrics)
    on_trial = start < svc.trial_until and end > svc.trial_from
    pending = dep is not None and dep.stage in (Stage.PENDING, Stage.INCONCLUSIVE)
    learnable = bool(metrics) and not breaching and not on_trial and not pending
    summary = WindowSummary(k, start, end, metrics, alerts, tuple(breaching), learnable)
    svc.ring.append(summary)
    _roll(svc, sp, values, start, learn=not on_trial and not pending)
    last_seen = svc.last_seen
    for name, stats in metrics.items():
        for source, ts in stats.last_seen.items():
            last_seen[(name, source)] = ts
    if breaching:
        bucket_width = policy.defaults.window_seconds
        for bucket in windows_overlapping(start, end, bucket_width):
            state.fleet.breaches.setdefault(bucket, set()).add(svc.name)
    if dep is not None and dep.stage is not Stage.INCONCLUSIVE:
        batch.checks[(svc.name, k)] = checks
        heapq.heappush(batch.heap, Due(end, Phase.JUDGE, svc.name, k))


def _roll(
    svc: ServiceState, sp: ServicePolicy, values: Mapping[str, float], ts: float, *, learn: bool
) -> None:
    """Append each threshold metric's window value to its rolling baseline; with ``learn``,
    first teach its long memory the level held over the last ``consecutive_breach_windows``
    windows (their minimum), breaching or not (issue 11)."""
    back = sp.consecutive_breach_windows - 1
    rolling, memory = svc.rolling, svc.memory
    for name, value in values.items():
        past = rolling.get(name)
        if past is None:
            past = rolling[name] = deque(maxlen=sp.baseline_windows)
        if learn:
            low = value
            n = len(past)
            for i in range(1, (back if back < n else n) + 1):
                if past[-i] < low:
                    low = past[-i]
            mem = memory.get(name)
            if mem is None:
                mem = memory[name] = LongMemory()
            mem.learn(low, ts)
        past.append(value)


def _thresholds(
    svc: ServiceState,
    sp: ServicePolicy,
    rules: tuple[ThresholdRule, ...],
    metrics: Mapping[str, MetricStats],
) -> tuple[dict[str, ThresholdCheck], list[str], dict[str, float]]:
    """The threshold checks of a closing window (under trial only), its breaching metrics,
    and each threshold metric's policy stat (for the rolling baseline)."""
    dep = svc.deployment
    if dep is not None and metrics:
        # Under trial: judged against the frozen baseline, with the details kept for evidence.
        checks = check_thresholds(metrics, rules, dep.baseline_values(sp))
        breaching = [name for name, check in checks.items() if check.breach]
        return checks, breaching, {name: check.value for name, check in checks.items()}
    # Idle: against the rolling baseline, with no more work than the comparison.
    values: dict[str, float] = {}
    breaching = []
    for rule in rules:
        name = rule.metric
        stats = metrics.get(name)
        if stats is None:
            continue
        value = values[name] = stat_of(stats, rule.stat)
        past = svc.rolling.get(name)
        base = sum(past) / len(past) if past else None
        if exceeds(value, rule.max, rule.max_ratio_to_baseline, base):
            breaching.append(name)
    return {}, breaching, values


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
    for bucket in windows_overlapping(start, end, bucket_width):
        breaching |= fleet.breaches.get(bucket, set())
    since = end - _HOUR
    recent = [r.service for r in fleet.rollbacks if r.ts > since]
    return FleetFacts(
        breaching_services=tuple(sorted(breaching)),
        service_rollbacks=sum(1 for s in recent if s == service),
        fleet_rollbacks=len(recent),
    )


def _judge(state: EngineState, policy: Policy, svc: ServiceState, k: int, batch: Batch) -> None:
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
    fleet = _fleet_facts(state, policy, svc.name, summary.start, summary.end)
    judgement = dep.observe(
        summary, checks, scores, policy, svc.last_seen, svc.alerts, fleet, svc.memory
    )
    findings = dep.conclude(judgement)
    ruling = decide(dep.facts, dep.stage, findings, fleet, policy, summary.end)
    if ruling is not None:
        evidence = trial_evidence(judgement, dep)
        carry_out(state, policy, svc, dep, ruling, summary.end, evidence, batch)


# ----------------------------------------------------------------------------------------------
# Control events: deploys, approval responses, expiries
# ----------------------------------------------------------------------------------------------


def _prune(state: EngineState, policy: Policy) -> None:
    """Forget fleet history that no decision can need any more (keeps memory flat)."""
    fleet = state.fleet
    horizon = fleet.clock - _HOUR
    bucket_floor = window_index(horizon, policy.defaults.window_seconds)
    for bucket in [b for b in fleet.breaches if b < bucket_floor]:
        del fleet.breaches[bucket]
    while fleet.rollbacks and fleet.rollbacks[0].ts <= horizon:
        fleet.rollbacks.popleft()
    forget = fleet.clock - 24 * _HOUR
    for rid in [
        r
        for r, rec in fleet.requests.items()
        if rec.status is not RequestStatus.PENDING and rec.expires_at < forget
    ]:
        del fleet.requests[rid]
