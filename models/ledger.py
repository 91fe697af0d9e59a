"""The fleet's breaches and rollback budget, folded from every engine's fleet facts.

Each engine keeps the same ledger: ``FleetState.breaches`` (bucket -> services breaching) and
``FleetState.rollbacks`` (the budget's history), built only from ``FleetFact`` s — its own and
the other engines' — folded in one order (time, phase, service). A claim is resolved where the
fold reaches it, from the ledger at that point: it rolls back or not as its owner's ruling
would with those facts, and the budget counts it for every later claim. Hence every engine,
and one engine alone, spends the budget identically.
"""

from __future__ import annotations

from bisect import insort

from rollguard.models.decide import FleetFacts
from rollguard.models.fleet import FleetExchange, FleetReport, Phase, case_index
from rollguard.models.policy import Policy
from rollguard.models.state import FleetState, Rollback
from rollguard.models.windows import window_index, windows_overlapping

__all__ = ["fleet_facts", "fold_through", "prune", "publish", "receive"]

_HOUR = 3600.0


def publish(fleet: FleetState, exchange: FleetExchange, through: float) -> None:
    """Report this engine's facts since its last report; they join its own pending facts."""
    if through < fleet.reported:
        through = fleet.reported
    facts = tuple(fleet.outbox)
    fleet.outbox.clear()
    for fact in facts:
        insort(fleet.pending, fact)
    fleet.reported = through
    exchange.publish(FleetReport(through, facts))


def receive(fleet: FleetState, reports: list[FleetReport]) -> None:
    """Queue the other engines' facts for the fold."""
    for report in reports:
        for fact in report.facts:
            insort(fleet.pending, fact)


def fleet_facts(
    fleet: FleetState, policy: Policy, service: str, start: float, end: float
) -> FleetFacts:
    """What the ledger says now about the window ``[start, end)`` of ``service``."""
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


def fold_through(fleet: FleetState, policy: Policy, t: float) -> dict[str, FleetFacts]:
    """Fold every pending fact up to the claims at ``t``; the facts each claim at ``t`` was
    resolved with (its owner rules with exactly those).

    Call only once every engine has reported through ``t`` (``FleetExchange.collect``).
    """
    limits = policy.fleet
    width = policy.defaults.window_seconds
    pending = fleet.pending
    resolved: dict[str, FleetFacts] = {}
    n = 0
    for fact in pending:
        if fact.t > t or (fact.t == t and fact.phase > Phase.JUDGE):
            break
        n += 1
        match fact.phase:
            case Phase.CLOSE:
                for bucket in windows_overlapping(fact.start, fact.t, width):
                    fleet.breaches.setdefault(bucket, set()).add(fact.service)
            case Phase.CONTROL:
                fleet.rollbacks.append(Rollback(fact.start, fact.service))
            case Phase.JUDGE:
                facts = fleet_facts(fleet, policy, fact.service, fact.start, fact.t)
                fleet_wide = len(facts.breaching_services) >= limits.fleet_anomaly_limit
                spent = (
                    facts.service_rollbacks >= limits.max_auto_rollbacks_per_service_per_hour
                    or facts.fleet_rollbacks >= limits.max_auto_rollbacks_per_hour
                )
                if fact.rolls_back[case_index(fleet_wide, spent)]:
                    fleet.rollbacks.append(Rollback(fact.t, fact.service))
                if fact.t == t:
                    resolved[fact.service] = facts
    del pending[:n]
    if t > fleet.folded:
        fleet.folded = t
    return resolved


def prune(fleet: FleetState, policy: Policy) -> None:
    """Forget breaches and rollbacks that no judgement after ``fleet.folded`` can count."""
    if fleet.folded == float("-inf"):
        return
    horizon = fleet.folded - _HOUR
    bucket_floor = window_index(horizon, policy.defaults.window_seconds) - 1
    for bucket in [b for b in fleet.breaches if b < bucket_floor]:
        del fleet.breaches[bucket]
    fleet.rollbacks = type(fleet.rollbacks)(r for r in fleet.rollbacks if r.ts > horizon)
