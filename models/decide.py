"""``decide``: the decision principle of DESIGN §1 as one pure function.

The engine gathers what one window close showed about a deployment (``Findings``: triggers,
signal-quality blockers, whether the breach is confirmed, bake-end evidence) and the fleet
(``FleetFacts``: services breaching at once, rollbacks in the last hour); ``decide`` adds the
blockers that follow from the deploy event and the policy, applies the rules literally and
returns a ``Ruling`` (or None when there is nothing to say yet). It never reads a clock, never
mutates anything and orders its reasons the same way every time.

Rules, in order:

1. A pending request (``Stage.PENDING``): if the confirmed breach still holds and no blocker is
   left (or a pre-authorisation covers what is left), roll back and mark the request superseded;
   if nothing has breached for ``consecutive_breach_windows`` windows, withdraw it.
2. Triggers present, a confirmed THRESHOLD_BREACH and no blocker: automatic rollback.
3. Triggers present and blockers: a matching pre-authorisation (same service, all its ``when``
   triggers present, every blocker in ``allow_despite``, active at ``ts``, breach confirmed)
   turns it into an automatic rollback naming the rule; otherwise request approval, naming every
   trigger and every blocker. The request waits while another trigger is still building, for at
   most ``consecutive_breach_windows - 1`` windows.
4. No trigger yet, but an episode has started: ``watch`` (once).
5. Bake over with no trigger: ``pass`` if coverage and traffic were enough, else an
   ``inconclusive`` request (INSUFFICIENT_EVIDENCE and/or LOW_TRAFFIC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rollguard.models.events import BLOCKERS, TRIGGERS, ReasonCode, VerdictOutcome
from rollguard.models.facts import BakeEvidence, DeploymentFacts, Findings, FleetFacts, Stage
from rollguard.models.policy import Policy, PreAuthorization, ServicePolicy
from rollguard.models.rules import deployment_blockers, unconfirmed_fallback

__all__ = [
    "BakeEvidence",
    "DeploymentFacts",
    "Findings",
    "FleetFacts",
    "Ruling",
    "Stage",
    "decide",
    "deployment_blockers",
    "match_preauthorization",
    "needs_fleet",
    "ordered",
]

_ORDER = {code: i for i, code in enumerate(ReasonCode)}

# Signal-quality blockers that also stand in the way of a pass at the end of the bake, or
# that explain an inconclusive one.
_EVIDENCE_QUALITY = (
    ReasonCode.TELEMETRY_STALE,
    ReasonCode.TELEMETRY_INCOMPLETE,
    ReasonCode.ALERT_FLAPPING,
    ReasonCode.SIGNALS_CONFLICT,
)


def ordered(codes: Mapping[ReasonCode, Any] | set[ReasonCode]) -> tuple[ReasonCode, ...]:
    """Reason codes in the stable order of DESIGN §4 (triggers, blockers, outcomes)."""
    return tuple(sorted(codes, key=_ORDER.__getitem__))


Action = Literal["watch", "auto_rollback", "request_approval", "pass", "withdraw"]
Verdict = VerdictOutcome


@dataclass(frozen=True, slots=True)
class Ruling:
    """What ``decide`` concluded: the action, its reasons with details, and its evidence."""

    action: Action
    reasons: tuple[ReasonCode, ...]
    details: Mapping[ReasonCode, str]
    verdict: Verdict | None = None
    authority: str | None = None
    """For ``auto_rollback``: ``auto`` or ``preauthorized:<rule id>``."""
    evidence: Mapping[str, Any] = field(default_factory=dict)


def match_preauthorization(
    policy: Policy,
    service: str,
    triggers: Mapping[ReasonCode, str],
    blockers: Mapping[ReasonCode, str],
    confirmed: bool,
    ts: float,
) -> tuple[PreAuthorization | None, list[dict[str, Any]]]:
    """The first rule of ``service`` that covers this case, and why each rule did or did not."""
    considered: list[dict[str, Any]] = []
    chosen: PreAuthorization | None = None
    for rule in policy.preauthorizations:
        if rule.service != service:
            continue
        missing = [t.value for t in rule.when if t not in triggers]
        extra = [b.value for b in ordered(set(blockers)) if b not in rule.allow_despite]
        why: list[str] = []
        if missing:
            why.append("trigger missing: " + ", ".join(missing))
        if extra:
            why.append("blocker not allowed: " + ", ".join(extra))
        if not rule.active_at(ts):
            why.append(f"expired on {rule.expires.isoformat()}")
        if not confirmed:
            why.append("breach not confirmed by the model")
        matched = not why and chosen is None
        considered.append({"id": rule.id, "owner": rule.owner, "matched": matched, "why": why})
        if matched:
            chosen = rule
    return chosen, considered


def _fleet_evidence(policy: Policy, fleet: FleetFacts) -> dict[str, Any]:
    limits = policy.fleet
    return {
        "budgets": {
            "service_used": fleet.service_rollbacks,
            "service_limit": limits.max_auto_rollbacks_per_service_per_hour,
            "fleet_used": fleet.fleet_rollbacks,
            "fleet_limit": limits.max_auto_rollbacks_per_hour,
        },
        "fleet": {
            "breaching_services": list(fleet.breaching_services),
            "fleet_anomaly_limit": limits.fleet_anomaly_limit,
        },
    }


def _automation(
    deployment: DeploymentFacts,
    findings: Findings,
    fleet: FleetFacts,
    policy: Policy,
    ts: float,
) -> tuple[dict[ReasonCode, str], str | None, dict[str, Any]]:
    """All blockers present, the authority automation would have (None: none) and evidence."""
    blockers = {c: d for c, d in findings.blockers.items() if c in BLOCKERS}
    blockers.update(deployment_blockers(deployment, policy, fleet))
    evidence = _fleet_evidence(policy, fleet)
    breach = ReasonCode.THRESHOLD_BREACH in findings.triggers
    # DESIGN §1.2 ("the threshold is explicit") is a condition like the others: when it fails,
    # it is named, even if the caller did not say why.
    fallback = unconfirmed_fallback(breach, findings.confirmed, blockers)
    if fallback is not None:
        blockers.setdefault(ReasonCode.BREACH_UNCONFIRMED, fallback)
    # Without a predefined target there is nothing to roll back to, whatever a rule allows.
    allowed = breach and findings.confirmed and deployment.rollback_target is not None
    if not blockers:
        return blockers, ("auto" if allowed else None), evidence
    rule, considered = match_preauthorization(
        policy, deployment.service, findings.triggers, blockers, findings.confirmed, ts
    )
    if considered:
        evidence["preauthorizations"] = considered
    if rule is not None and not allowed:
        for entry in considered:
            if entry["id"] == rule.id:
                entry["matched"] = False
                entry["why"] = ["no rollback target to roll back to"]
        rule = None
    if rule is None:
        return blockers, None, evidence
    evidence["preauthorization"] = rule.id
    return blockers, f"preauthorized:{rule.id}", evidence


def _bake_end(
    findings: Findings, sp: ServicePolicy
) -> tuple[dict[ReasonCode, str], dict[str, Any]]:
    """Why the bake's evidence is not enough for a pass (empty: it is)."""
    gaps: dict[ReasonCode, str] = {}
    bake = findings.bake or BakeEvidence({}, {}, 0)
    thin = [
        f"{m} coverage {c:.6g} < {sp.min_coverage:.6g}"
        for m, c in sorted(bake.coverage.items())
        if c < sp.min_coverage
    ]
    thin += [
        f"{m} never reported" for m in sorted(sp.threshold_metrics()) if m not in bake.coverage
    ]
    if bake.samples == 0:
        thin.insert(0, "no telemetry at all after the deploy")
    if ReasonCode.TELEMETRY_STALE in findings.blockers:
        thin.append("telemetry stale at the end of the bake")
    if thin:
        gaps[ReasonCode.INSUFFICIENT_EVIDENCE] = "; ".join(thin)
    quiet = [
        f"{m} mean {'n/a (no samples)' if v is None else f'{v:.6g}'} < {sp.min_traffic:.6g}"
        for m, v in sorted(bake.traffic_mean.items())
        if v is None or v < sp.min_traffic
    ]
    if quiet:
        gaps[ReasonCode.LOW_TRAFFIC] = "; ".join(quiet)
    if gaps:
        for code in _EVIDENCE_QUALITY:
            if code in findings.blockers:
                gaps.setdefault(code, findings.blockers[code])
    evidence = {
        "bake": {
            "coverage": dict(sorted(bake.coverage.items())),
            "min_coverage": sp.min_coverage,
            "traffic_mean": dict(sorted(bake.traffic_mean.items())),
            "min_traffic": sp.min_traffic,
            "samples": bake.samples,
        }
    }
    return gaps, evidence


def needs_fleet(stage: Stage, findings: Findings) -> bool:
    """Does ``decide`` read the fleet facts for this stage and these findings?

    Only a trigger brings in the fleet blockers (FLEET_WIDE_ANOMALY, RATE_LIMITED) and the
    budget evidence; every other ruling is the deployment's own.
    """
    return stage is not Stage.INCONCLUSIVE and any(c in TRIGGERS for c in findings.triggers)


def decide(
    deployment: DeploymentFacts,
    stage: Stage,
    findings: Findings,
    fleet: FleetFacts,
    policy: Policy,
    ts: float,
) -> Ruling | None:
    """Apply DESIGN §1 to one window close of one deployment; None if nothing is decided.

    >>> import yaml
    >>> policy = Policy.from_mapping(yaml.safe_load(open("config/policy.yaml")), version="t")
    >>> dep = DeploymentFacts("dep-1", "search", "v2", "v1", "svc:ci", 0.0)
    >>> breach = Findings(triggers={ReasonCode.THRESHOLD_BREACH: "error_rate 0.2 > 0.05"},
    ...                   confirmed=True)
    >>> decide(dep, Stage.OBSERVING, breach, FleetFacts(), policy, 60.0).action
    'auto_rollback'
    >>> stale = Findings(triggers=breach.triggers, confirmed=True,
    ...                  blockers={ReasonCode.TELEMETRY_STALE: "latency silent 120 s"})
    >>> ruling = decide(dep, Stage.OBSERVING, stale, FleetFacts(), policy, 60.0)
    >>> ruling.action, [r.value for r in ruling.reasons]
    ('request_approval', ['THRESHOLD_BREACH', 'TELEMETRY_STALE'])
    """
    sp = policy.for_service(deployment.service)
    triggers = {c: d for c, d in findings.triggers.items() if c in TRIGGERS}

    if stage is Stage.INCONCLUSIVE:
        return None
    if stage is Stage.PENDING:
        return _while_pending(deployment, findings, triggers, fleet, policy, ts)
    if triggers:
        return _on_triggers(deployment, stage, findings, triggers, fleet, policy, ts)
    if findings.episode and stage is Stage.OBSERVING and not findings.bake_over:
        details = dict(findings.episode)
        return Ruling("watch", ordered(details), details)
    if findings.bake_over:
        gaps, evidence = _bake_end(findings, sp)
        if not gaps:
            return Ruling("pass", (), {}, "pass", None, evidence)
        return Ruling("request_approval", ordered(gaps), gaps, "inconclusive", None, evidence)
    return None


def _while_pending(
    deployment: DeploymentFacts,
    findings: Findings,
    triggers: dict[ReasonCode, str],
    fleet: FleetFacts,
    policy: Policy,
    ts: float,
) -> Ruling | None:
    """Rule 1: supersede a pending request by a rollback, or withdraw it."""
    sp = policy.for_service(deployment.service)
    if triggers:
        blockers, authority, evidence = _automation(deployment, findings, fleet, policy, ts)
        if authority is None:
            return None
        details = {**triggers, **blockers}
        details[ReasonCode.APPROVAL_SUPERSEDED] = (
            "the breach still holds and automation is now allowed"
        )
        return _rollback(details, authority, evidence)
    if findings.clear_windows >= sp.consecutive_breach_windows:
        details = {
            ReasonCode.APPROVAL_WITHDRAWN: (
                f"nothing breached for {findings.clear_windows} consecutive windows"
            )
        }
        return Ruling("withdraw", ordered(details), details, "inconclusive")
    return None


def _on_triggers(
    deployment: DeploymentFacts,
    stage: Stage,
    findings: Findings,
    triggers: dict[ReasonCode, str],
    fleet: FleetFacts,
    policy: Policy,
    ts: float,
) -> Ruling | None:
    """Rules 2 and 3: roll back, or request approval (or wait while a trigger builds)."""
    sp = policy.for_service(deployment.service)
    blockers, authority, evidence = _automation(deployment, findings, fleet, policy, ts)
    details = {**triggers, **blockers}
    evidence["blockers"] = dict(blockers)
    if authority is not None:
        return _rollback(details, authority, evidence)
    # A request waits (at most consecutive_breach_windows - 1 windows) while another
    # trigger is still building, so that it names the whole picture; a rollback never waits.
    if findings.episode and findings.trigger_windows < sp.consecutive_breach_windows:
        if stage is Stage.OBSERVING:
            watched = {**findings.episode, **triggers}
            return Ruling("watch", ordered(watched), watched)
        return None
    return Ruling(
        "request_approval", ordered(details), details, "pending_approval", None, evidence
    )


def _rollback(details: dict[ReasonCode, str], authority: str, evidence: dict[str, Any]) -> Ruling:
    """The one way a ruling rolls back: with the authority automation has, and its evidence."""
    return Ruling("auto_rollback", ordered(details), details, "rolled_back", authority, evidence)
