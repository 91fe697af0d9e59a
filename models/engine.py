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
from rollguard.models.decide import FleetFacts, Stage, decide, needs_fleet
from rollguard.models.events import (
    Alert,
    ApprovalResponse,
    CoreOutput,
    DeployEvent,
    DeployStatus,
    MetricSample,
)
from rollguard.models.evidence import trial_evidence
from rollguard.models.facts import Findings
from rollguard.models.fleet import FleetExchange, FleetFact, Solo
from rollguard.models.ledger import fold_through, prune, publish, receive
from rollguard.models.memory import LongMemory
from rollguard.models.policy import Policy, ServicePolicy
from rollguard.models.rolling import RunningSum
from rollguard.models.scoring import DetectorKit, default_kit
from rollguard.models.state import (
    ApprovalCheck,
    ApprovalControl,
    Batch,
    DeployControl,
    Due,
    EngineState,
    FleetState,
    Held,
    Phase,
    RequestRecord,
    RequestStatus,
    Scheduled,
    ServiceState,
    Trial,
    WindowConfig,
    new_state,
    schedule,
    watermark,
)
from rollguard.models.thresholds import (
    ThresholdRule,
    check_thresholds,
    threshold_rules,
)
from rollguard.models.trial import Deployment
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
    "resume",
    "step",
    "take_touched",
]

_HOUR = 3600.0
_STATUS_RANK = {s: i for i, s in enumerate(DeployStatus)}
_NO_FLEET = FleetFacts()


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
    """Fold one input event into ``state``; return the records to emit, in order.

    Not while ``state.held``: the batch waits for the other engines (``resume``)."""
    if state.held is not None:
        raise RuntimeError("the engine waits for the fleet's facts: resume() first")
    if isinstance(event, MetricSample):
        # The hot path (nearly every event): one attribute read per field.
        ts = event.ts
        svc = state.services.get(event.service)
        if svc is None:
            svc = _new_service(state, policy, event.service)
        if svc.cur_lo <= ts < svc.cur_hi:
            # The window of the service's last sample, since the last take_touched: the
            # service is in state.touched already.
            acc = svc.cur_acc
        else:
            state.touched.add(svc.name)
            acc = _window_of(state, svc, ts)
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
    else:
        ts = _take_other(state, event, policy, approval_check)

    fleet = state.fleet
    if ts > fleet.clock:
        fleet.clock = ts
    if fleet.clock >= fleet.next_due:
        return _run_due(state, policy)
    return []



def _take_other(
    state: EngineState,
    event: DeployEvent | Alert | ApprovalResponse,
    policy: Policy,
    approval_check: ApprovalCheck | None,
) -> float:
    """``step`` for every event but a metric sample; returns the event's time."""
    if isinstance(event, Alert):
        svc = state.services.get(event.service) or _new_service(state, policy, event.service)
        state.touched.add(svc.name)
        k = window_index(event.ts, svc.width)
        acc = svc.open.get(k) or _open_window(state, svc, k)
        if acc is not None:
            acc.alerts.append(event)
        return event.ts
    if isinstance(event, DeployEvent):
        svc = state.services.get(event.service) or _new_service(state, policy, event.service)
        state.touched.add(svc.name)
        schedule(state, svc, event.ts, DeployControl(event))
        return event.ts
    if isinstance(event, ApprovalResponse):
        record = state.fleet.requests.get(event.request_id)
        name = record.service if record is not None else event.service
        owner = state.services.get(name) if name else None
        if owner is None and name:
            owner = _new_service(state, policy, name)
        if owner is not None:
            state.touched.add(owner.name)
        # Arrival order (DESIGN §6): the broker's time, not the time the approver signed.
        schedule(state, owner, event.arrival, ApprovalControl(event, approval_check))
        return event.arrival
    raise TypeError(f"not an input event: {type(event).__name__}")

def advance(state: EngineState, policy: Policy, event_time: float) -> list[CoreOutput]:
    """Move every watermark to at least ``event_time`` and emit what that decides."""
    if state.held is not None:
        raise RuntimeError("the engine waits for the fleet's facts: resume() first")
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


def take_touched(state: EngineState) -> set[str]:
    """The services whose state changed since the last call (a checkpoint writes them), and
    from now on none. Their current windows are forgotten: a sample goes to the remembered
    window only while its service is in ``state.touched``, which is how ``step`` leaves the
    set alone for most samples."""
    touched, state.touched = state.touched, set()
    services = state.services
    for name in touched:
        svc = services.get(name)
        if svc is not None:
            svc.forget_window()
    return touched


def _window_of(state: EngineState, svc: ServiceState, ts: float) -> WindowAccumulator | None:
    """The open window of ``svc`` that holds ``ts`` (opened if need be, then remembered as
    the service's current window), or None if that window already closed."""
    k = window_index(ts, svc.width)
    acc = svc.open.get(k)
    if acc is None:
        acc = _open_window(state, svc, k)
    if acc is not None:
        svc.cur_lo, svc.cur_hi = window_bounds(k, svc.width)
        svc.cur_acc = acc
    return acc


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
    return _drain(state, policy, batch)


def _drain(state: EngineState, policy: Policy, batch: Batch) -> list[CoreOutput]:
    """Do the batch's work in order; stop (``state.held``) at a window end whose rulings
    wait for the other engines' fleet facts."""
    services = state.services
    heap = batch.heap
    touched = state.touched
    while heap:
        due = heapq.heappop(heap)
        if due.service:
            touched.add(due.service)
        if due.phase == Phase.CLOSE:  # nearly every entry: no pattern matching
            _close_window(state, policy, services[due.service], due.k, batch)
            if not heap:
                _queue_control(state, batch)
            continue
        match due:
            case Due(phase=Phase.JUDGE):
                trials = _observe_all(state, policy, due, batch)
                _claim(state, due.t, trials)
                if not _rule(state, policy, due.t, trials, batch):
                    out, batch.out = batch.out, []
                    return out
            case Due(scheduled=Scheduled(control=control)):
                apply_control(state, policy, control, batch)
        if not heap:
            _queue_control(state, batch)
    _end_batch(state, policy)
    return batch.out


def _end_batch(state: EngineState, policy: Policy) -> None:
    """Report progress to the other engines, fold what can be folded, forget the old."""
    fleet = state.fleet
    exchange = _exchange(state)
    through = min(
        [watermark(fleet, config.lateness) for config in fleet.configs] or [fleet.floor]
    )
    publish(fleet, exchange, through)
    reports = exchange.collect(fleet.reported)
    if reports is not None:
        receive(fleet, reports)
        fold_through(fleet, policy, fleet.reported)
    _prune(state, policy)
    fleet.next_due = min(
        [_config_due(fleet, config) for config in fleet.configs]
        + [entry.ts + entry.lateness for entry in fleet.timeline],
        default=float("inf"),
    )


def resume(state: EngineState, policy: Policy) -> list[CoreOutput]:
    """Go on with a batch held at a window end, if the other engines' facts are now in;
    what that decides ([] and still held if they are not)."""
    held = state.held
    if held is None:
        return []
    state.held = None
    if not _rule(state, policy, held.t, held.trials, held.batch):
        return []
    return _drain(state, policy, held.batch)


def _exchange(state: EngineState) -> FleetExchange:
    if state.exchange is None:
        state.exchange = Solo()
    return state.exchange


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
    start, end = window_bounds(k, svc.width)
    acc = svc.open.pop(k, None)
    if acc is not None and acc is svc.cur_acc:  # closed: no sample goes there any more
        svc.forget_window()
    if svc.next_k is None or k + 1 > svc.next_k:
        svc.next_k = k + 1
    metrics = fold_metrics(acc)
    alerts = ordered_alerts(acc) if acc is not None and acc.alerts else ()
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
    on_trial = start < svc.trial_until and end > svc.trial_from
    pending = dep is not None and dep.stage in (Stage.PENDING, Stage.INCONCLUSIVE)
    learn = not on_trial and not pending and not svc.suspect
    if dep is not None and metrics:
        # Under trial: judged against the frozen baseline, with the details kept for evidence.
        checks = check_thresholds(metrics, rules, dep.baseline_values(sp))
        breaching = [name for name, check in checks.items() if check.breach]
        for name, check in checks.items():
            _roll(svc, sp, name, check.value, start, learn)
    else:
        checks, breaching = {}, _idle_thresholds(svc, sp, rules, metrics, start, learn)
    learnable = bool(metrics) and not breaching and learn
    svc.ring.append(WindowSummary(k, start, end, metrics, alerts, tuple(breaching), learnable))
    last_seen = svc.last_seen
    for name, stats in metrics.items():
        for source, ts in stats.last_seen.items():
            last_seen[(name, source)] = ts
    if breaching:
        state.fleet.outbox.append(FleetFact(end, Phase.CLOSE, svc.name, start))
    if dep is not None and dep.stage is not Stage.INCONCLUSIVE:
        batch.checks[(svc.name, k)] = checks
        heapq.heappush(batch.heap, Due(end, Phase.JUDGE, svc.name, k))


def _roll(
    svc: ServiceState, sp: ServicePolicy, name: str, value: float, ts: float, learn: bool
) -> None:
    """Append a threshold metric's window value to its rolling baseline; with ``learn``,
    first teach its long memory the level held over the last ``consecutive_breach_windows``
    windows (their minimum), breaching or not (issue 11)."""
    past = svc.rolling.get(name)
    if past is None:
        past = svc.rolling[name] = deque(maxlen=sp.baseline_windows)
    if learn:
        _learn(svc, sp, name, past, value, ts)
    past.append(value)
    svc.sums.pop(name, None)  # summed again at the next idle close


def _learn(
    svc: ServiceState, sp: ServicePolicy, name: str, past: deque[float], value: float, ts: float
) -> None:
    low = value
    back = sp.consecutive_breach_windows - 1
    for i in range(1, min(back, len(past)) + 1):
        if past[-i] < low:
            low = past[-i]
    mem = svc.memory.get(name)
    if mem is None:
        mem = svc.memory[name] = LongMemory()
    mem.learn(low, ts)


def _idle_thresholds(
    svc: ServiceState,
    sp: ServicePolicy,
    rules: tuple[ThresholdRule, ...],
    metrics: Mapping[str, MetricStats],
    ts: float,
    learn: bool,
) -> list[str]:
    """The breaching metrics of an idle window, each against its rolling baseline (through
    its running sum, ``models/rolling.py``), and each value rolled in as ``_roll`` does."""
    breaching = []
    rolling, sums = svc.rolling, svc.sums
    for rule in rules:
        name = rule.metric
        stats = metrics.get(name)
        if stats is None:
            continue
        value = stat_of(stats, rule.stat)
        past = rolling.get(name)
        if past is None:
            past = rolling[name] = deque(maxlen=sp.baseline_windows)
        run = sums.get(name)
        if run is None:
            run = sums[name] = RunningSum(past)
        top, ratio = rule.max, rule.max_ratio_to_baseline
        # value > ratio * (sum(past) / len(past)), without reading every value of past.
        if (top is not None and value > top) or (
            ratio is not None and past and run.above(past, ratio, value)
        ):
            breaching.append(name)
        if learn:
            _learn(svc, sp, name, past, value, ts)
        run.push(past, value)
    return breaching


# ----------------------------------------------------------------------------------------------
# Judging a deployment at a window close
# ----------------------------------------------------------------------------------------------


def _kit(state: EngineState) -> DetectorKit:
    if state.kit is None:
        state.kit = default_kit()
    return state.kit


def _observe_all(state: EngineState, policy: Policy, first: Due, batch: Batch) -> list[Trial]:
    """Every deployment judged at ``first.t``, observed (services in name order)."""
    heap = batch.heap
    dues = [first]
    while heap and heap[0].t == first.t and heap[0].phase is Phase.JUDGE:
        dues.append(heapq.heappop(heap))
    trials: list[Trial] = []
    for due in dues:
        state.touched.add(due.service)
        trial = _observe(state, policy, state.services[due.service], due.k, batch)
        if trial is not None:
            trials.append(trial)
    return trials


def _observe(
    state: EngineState, policy: Policy, svc: ServiceState, k: int, batch: Batch
) -> Trial | None:
    """The part of a judgement that is the service's alone (it reads no fleet fact)."""
    dep = svc.deployment
    checks = batch.checks.pop((svc.name, k), {})
    if dep is None or dep.stage is Stage.INCONCLUSIVE or k < dep.first_k:
        return None
    summary = svc.ring[-1]
    assert summary.k == k
    sp = policy.for_service(svc.name)
    kit = _kit(state)
    svc.models.catch_up(kit, svc.ring, sp, through=k - 1)
    scores = svc.models.score(kit, summary, sp)
    judgement = dep.observe(
        summary, checks, scores, policy, svc.last_seen, svc.alerts, _NO_FLEET, svc.memory
    )
    findings = dep.conclude(judgement)
    claim = None
    if needs_fleet(dep.stage, findings):
        def case(fleet_wide: bool, spent: bool) -> bool:
            return _rolls_back(dep, findings, policy, summary.end, fleet_wide, spent)

        cases = (case(False, False), case(False, True), case(True, False), case(True, True))
        claim = FleetFact(summary.end, Phase.JUDGE, svc.name, summary.start, cases)
    return Trial(svc, dep, summary, judgement, findings, claim)


def _rolls_back(
    dep: Deployment, findings: Findings, policy: Policy, ts: float, fleet_wide: bool, spent: bool
) -> bool:
    """Would the ruling roll back if the fleet were (not) breaching and the budget (not) spent?"""
    limits = policy.fleet
    facts = FleetFacts(
        breaching_services=("",) * limits.fleet_anomaly_limit if fleet_wide else (),
        service_rollbacks=limits.max_auto_rollbacks_per_service_per_hour if spent else 0,
        fleet_rollbacks=limits.max_auto_rollbacks_per_hour if spent else 0,
    )
    ruling = decide(dep.facts, dep.stage, findings, facts, policy, ts)
    return ruling is not None and ruling.action == "auto_rollback"


def _claim(state: EngineState, t: float, trials: list[Trial]) -> None:
    """Report the claims on the fleet of the deployments judged at ``t``, with everything
    before them, to the other engines."""
    claims = [trial.claim for trial in trials if trial.claim is not None]
    if claims:
        fleet = state.fleet
        fleet.outbox.extend(claims)
        publish(fleet, _exchange(state), t)


def _rule(
    state: EngineState, policy: Policy, t: float, trials: list[Trial], batch: Batch
) -> bool:
    """Rule on the deployments judged at window end ``t``, in service order; False (and the
    batch held) while their claims wait for the other engines' fleet facts."""
    fleet = state.fleet
    resolved: dict[str, FleetFacts] = {}
    if any(trial.claim is not None for trial in trials):
        exchange = _exchange(state)
        reports = exchange.collect(t)
        if reports is None:
            state.held = Held(batch, t, trials)
            return False
        receive(fleet, reports)
        resolved = fold_through(fleet, policy, t)
    for trial in trials:
        dep, summary = trial.dep, trial.summary
        facts = resolved.get(trial.svc.name, _NO_FLEET)
        ruling = decide(dep.facts, dep.stage, trial.findings, facts, policy, summary.end)
        if ruling is not None:
            evidence = trial_evidence(trial.judgement, dep)
            carry_out(state, policy, trial.svc, dep, ruling, summary.end, evidence, batch)
    return True


# ----------------------------------------------------------------------------------------------
# Control events: deploys, approval responses, expiries
# ----------------------------------------------------------------------------------------------


def _prune(state: EngineState, policy: Policy) -> None:
    """Forget fleet history that no decision can need any more (keeps memory flat)."""
    fleet = state.fleet
    prune(fleet, policy)
    forget = fleet.clock - 24 * _HOUR
    for rid in [
        r
        for r, rec in fleet.requests.items()
        if rec.status is not RequestStatus.PENDING and rec.expires_at < forget
    ]:
        del fleet.requests[rid]
