"""The rule registry: every trigger and blocker of DESIGN §4 as one small pure function.

A rule reads one ``Judgement`` and returns a ``Finding`` (a reason code and its detail) or
None. The tables below list them; their order is the order the details are written in. Adding a
blocker is one function, one reason code and one test (docs/core.md shows one).

- ``TRIGGER_RULES``: actionable triggers (THRESHOLD_BREACH, CRITICAL_ALERT, ANOMALY);
- ``EPISODE_RULES``: the same triggers while they build (not yet actionable: ``watch``);
- ``WINDOW_BLOCKERS``: signal quality and the model's confirmation, judged per window;
- ``DEPLOYMENT_BLOCKERS``: what the deploy event, the policy and the fleet forbid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rollguard.models.events import ReasonCode
from rollguard.models.facts import DeploymentFacts, FleetFacts
from rollguard.models.judgement import Finding, Judgement
from rollguard.models.policy import Policy
from rollguard.models.quality import (
    TRAFFIC_DRAIN_RATIO,
    Signals,
    baseline_instability,
    cold_models,
    low_traffic,
)
from rollguard.models.sequential import SequentialVerdict
from rollguard.models.thresholds import breach_text

__all__ = [
    "DEPLOYMENT_BLOCKERS",
    "EPISODE_RULES",
    "TRIGGER_RULES",
    "WINDOW_BLOCKERS",
    "Rule",
    "Verdicts",
    "deployment_blockers",
    "evaluate",
    "judge",
    "unconfirmed_fallback",
]

R = ReasonCode
Rule = Callable[[Judgement], Finding | None]


def evaluate(rules: tuple[Rule, ...], judgement: Judgement) -> dict[ReasonCode, str]:
    """Run ``rules`` in table order; the findings as code -> detail."""
    out: dict[ReasonCode, str] = {}
    for rule in rules:
        found = rule(judgement)
        if found is not None:
            out[found.code] = found.detail
    return out


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _signals(j: Judgement) -> Signals:
    assert j.signals is not None, "a window blocker needs the window's signals"
    return j.signals


# ----------------------------------------------------------------------------------------------
# Triggers and episodes
# ----------------------------------------------------------------------------------------------


def threshold_breach(j: Judgement) -> Finding | None:
    """A written threshold crossed for ``consecutive_breach_windows`` windows (DESIGN §10)."""
    breached = j.breached
    if not breached:
        return None
    detail = "; ".join(breach_text(m, j.checks[m], j.streaks.breach[m]) for m in breached)
    return Finding(R.THRESHOLD_BREACH, detail)


def critical_alert(j: Judgement) -> Finding | None:
    """A critical alert firing for ``consecutive_breach_windows`` windows."""
    if not j.critical_trigger:
        return None
    return Finding(
        R.CRITICAL_ALERT,
        f"critical alert firing for {j.streaks.critical} windows: " + ", ".join(j.critical),
    )


def anomaly(j: Judgement) -> Finding | None:
    """A warm model's score at or above ``anomaly_threshold`` for ``need_anomaly`` windows, or
    a threshold metric's sequential test over the bake above its threshold
    (``models.sequential``: a sustained moderate departure that no run of windows shows). It
    asks a human; only a confirmed breach of the written thresholds may be automated."""
    anomalies, alarms = j.anomalies, j.sequential_alarms
    if not anomalies and not alarms:
        return None
    threshold = j.service_policy.anomaly_threshold
    return Finding(
        R.ANOMALY,
        "; ".join(
            [
                f"{k} score {j.scores[k].score:.6g} >= {threshold:.6g} for "
                f"{j.streaks.anomaly[k]} windows"
                for k in anomalies
            ]
            + [_sequential_detail(m, j.sequential[m]) for m in alarms]
        ),
    )


def _sequential_detail(metric: str, v: SequentialVerdict) -> str:
    """What proved a sequential alarm: the mSPRT's log LR, or the horizon test's z."""
    proof = (
        f"log LR {v.log_lr:.3g} >= {v.threshold:.3g}"
        if v.log_lr >= v.threshold
        else f"z {v.z:.3g} >= {v.z_threshold:.3g} at the bake's last window"
    )
    late = f", from window {v.start + 1}" if v.start else ""
    return (
        f"{metric} sequential test over {v.windows} windows{late}: {proof} "
        f"(mean excess {v.mean_excess:.3g} noise units)"
    )


def breach_building(j: Judgement) -> Finding | None:
    """A threshold breaching, not yet for ``consecutive_breach_windows`` windows."""
    need = j.need
    starting = [(m, n) for m, n in sorted(j.streaks.breach.items()) if 0 < n < need]
    if not starting:
        return None
    return Finding(
        R.THRESHOLD_BREACH,
        "; ".join(f"{m} breached {n} of {need} windows" for m, n in starting),
    )


def critical_building(j: Judgement) -> Finding | None:
    """A critical alert firing, not yet for ``consecutive_breach_windows`` windows."""
    if j.critical_trigger or not j.critical:
        return None
    return Finding(
        R.CRITICAL_ALERT,
        f"critical alert firing {j.streaks.critical} of {j.need} windows: " + ", ".join(j.critical),
    )


def anomaly_building(j: Judgement) -> Finding | None:
    """A model departure, not yet for ``need_anomaly`` windows."""
    need = j.need_anomaly
    building = [(k, n) for k, n in sorted(j.streaks.anomaly.items()) if 0 < n < need]
    if not building:
        return None
    return Finding(
        R.ANOMALY,
        "; ".join(f"{k} anomalous {n} of {need} windows" for k, n in building),
    )


# ----------------------------------------------------------------------------------------------
# Window blockers: signal quality (DESIGN §5) and the model's confirmation (§1.2)
# ----------------------------------------------------------------------------------------------


def telemetry_stale(j: Judgement) -> Finding | None:
    """A stream seen in the baseline silent for ``stale_after_seconds``."""
    stale = _signals(j).stale
    if not stale:
        return None
    limit = _fmt(j.service_policy.stale_after_seconds)
    return Finding(
        R.TELEMETRY_STALE,
        "; ".join(
            f"{key} silent for {_fmt(gap)} s (stale after {limit} s)" for key, gap in stale.items()
        ),
    )


def telemetry_incomplete(j: Judgement) -> Finding | None:
    """Coverage below ``min_coverage`` over the decision's span (stale metrics excepted)."""
    signals = _signals(j)
    floor = j.service_policy.min_coverage
    stale_metrics = {key.split("/", 1)[0] for key in signals.stale}
    incomplete = {
        m: c for m, c in signals.span.items() if c["coverage"] < floor and m not in stale_metrics
    }
    if not incomplete:
        return None
    return Finding(
        R.TELEMETRY_INCOMPLETE,
        "; ".join(
            f"{m} coverage {_fmt(c['coverage'])} < {_fmt(floor)} over the last "
            f"{c['windows']} window{'s' if c['windows'] != 1 else ''} "
            f"({_fmt(c['samples'])} of {_fmt(c['expected'])} samples)"
            for m, c in incomplete.items()
        ),
    )


def alert_flapping(j: Judgement) -> Finding | None:
    """An alert flipping at least ``flap_limit`` times in ``flap_window_seconds``."""
    sp = j.service_policy
    flapping = {n: k for n, k in _signals(j).flips.items() if k >= sp.flap_limit}
    if not flapping:
        return None
    return Finding(
        R.ALERT_FLAPPING,
        "; ".join(
            f"{name} flipped {n} times in {_fmt(sp.flap_window_seconds)} s (limit {sp.flap_limit})"
            for name, n in flapping.items()
        ),
    )


def signals_conflict(j: Judgement) -> Finding | None:
    """Breach against a resolved alert, sources disagreeing, or a breach during a drain."""
    signals = _signals(j)
    breaching = signals.breaching
    conflicts = [
        f"{metric} breach while alert {name} resolved at {_fmt(ts)}"
        for metric in breaching
        for name, ts in signals.resolved.items()
    ]
    for metric, info in signals.disagreements.items():
        shown = ", ".join(f"{src}={_fmt(v)}" for src, v in info["by_source"].items())
        conflicts.append(
            f"{metric} sources disagree by {_fmt(info['relative_gap'])} "
            f"(> {_fmt(j.service_policy.source_tolerance)}): {shown}"
        )
    for metric, drained in signals.drain.items():
        conflicts.append(
            f"{', '.join(breaching)} breach while {metric} drained to {_fmt(drained['mean'])} "
            f"(< {TRAFFIC_DRAIN_RATIO:g} x baseline {_fmt(drained['baseline_mean'])})"
        )
    if not conflicts:
        return None
    return Finding(R.SIGNALS_CONFLICT, "; ".join(conflicts))


def model_cold(j: Judgement) -> Finding | None:
    """A breaching metric whose model learned fewer than ``min_baseline_windows`` windows."""
    signals = _signals(j)
    need = j.service_policy.min_baseline_windows
    cold = cold_models(signals.breaching, signals.learned, need)
    if not cold:
        return None
    return Finding(
        R.MODEL_COLD,
        "; ".join(f"{m} model learned {n} windows (< {need})" for m, n in cold.items()),
    )


def baseline_unstable(j: Judgement) -> Finding | None:
    """A breaching metric whose baseline varies more than ``max_baseline_cv``, or whose
    departure began before the deploy (``models.onset``: a shift in the last baseline windows
    or a trend under way): the release is not to blame, so it is never automated."""
    sp = j.service_policy
    unstable = baseline_instability(_signals(j).breaching, sp, j.baseline)
    if not unstable and not j.onsets:
        return None
    return Finding(
        R.BASELINE_UNSTABLE,
        "; ".join(
            [
                f"{m} baseline CV {_fmt(cv)} > {_fmt(sp.max_baseline_cv)}"
                for m, cv in unstable.items()
            ]
            + [f"{m} {onset.detail}" for m, onset in sorted(j.onsets.items())]
        ),
    )


def low_traffic_rule(j: Judgement) -> Finding | None:
    """Traffic over the observation so far below ``min_traffic``, or an error rate above its
    limit on too few requests to tell (``models.counts``: then not a breach)."""
    floor = j.service_policy.min_traffic
    low = low_traffic(_signals(j).traffic_means, floor)
    if not low and not j.counts:
        return None
    return Finding(
        R.LOW_TRAFFIC,
        "; ".join(
            [
                f"{m} mean {'n/a (no samples)' if v is None else _fmt(v)} < {_fmt(floor)}"
                for m, v in low.items()
            ]
            + [f"{m} {_fmt(j.checks[m].value)}: {c.detail}" for m, c in sorted(j.counts.items())]
        ),
    )


def breach_unconfirmed(j: Judgement) -> Finding | None:
    """DESIGN §1.2: a trigger without a written threshold crossed, or a breach its warm model
    did not confirm in every breaching window."""
    breached = j.breached
    if not breached:
        if j.anomalies or j.critical_trigger or j.sequential_alarms:
            return Finding(R.BREACH_UNCONFIRMED, _no_threshold_text(j))
        return None
    if j.confirmed:
        return None
    need, threshold = j.need, j.service_policy.anomaly_threshold
    unconfirmed = [m for m in breached if j.streaks.confirmed.get(m, 0) < need and j.model_warm(m)]
    if not unconfirmed:
        return None
    return Finding(
        R.BREACH_UNCONFIRMED,
        "; ".join(_unconfirmed_text(j, m, threshold) for m in unconfirmed),
    )


def _unconfirmed_text(j: Judgement, m: str, threshold: float) -> str:
    tail = j.memory.get(m)
    if j.scores[m].score < threshold:
        return f"{m} model score {j.scores[m].score:.6g} < {threshold:.6g} in a breaching window"
    if tail is not None and not tail.rare:
        return (
            f"{m} departure not rare for the service: {tail.as_bad} of its {tail.windows} "
            f"healthy windows as bad (p {tail.p_value:.2g})"
        )
    return f"{m} model agreed in only {j.streaks.confirmed.get(m, 0)} of {j.need} windows"


def _no_threshold_text(j: Judgement) -> str:
    what = []
    anomalies = j.anomalies
    if anomalies:
        shown = ", ".join(f"{j.scores[k].score:.2f} on {k}" for k in anomalies)
        what.append(f"model departure (score {shown})")
    if j.critical_trigger:
        what.append(f"critical alert {', '.join(j.critical)}")
    if j.sequential_alarms:
        what.append(f"sequential test alarm on {', '.join(j.sequential_alarms)}")
    return (
        f"{' and '.join(what) or 'a trigger'} but no written threshold crossed "
        f"for {j.need} consecutive windows"
    )


def unconfirmed_fallback(
    breach: bool, confirmed: bool, blockers: Mapping[ReasonCode, str]
) -> str | None:
    """The BREACH_UNCONFIRMED detail ``decide`` adds when its caller named none: a trigger
    without a breach, or a breach not confirmed for a reason other than a cold model."""
    if not breach:
        return "no written threshold crossed: a trigger alone"
    if not confirmed and ReasonCode.MODEL_COLD not in blockers:
        return "the anomaly model did not confirm the breach"
    return None


# ----------------------------------------------------------------------------------------------
# Deployment blockers: the deploy event, the policy, the fleet (DESIGN §1.3, §1.4)
# ----------------------------------------------------------------------------------------------


def no_rollback_target(j: Judgement) -> Finding | None:
    """The deploy event names no ``rollback_target``."""
    if j.facts.rollback_target is not None:
        return None
    return Finding(R.NO_ROLLBACK_TARGET, "the deploy event names no rollback_target")


def shared_infra(j: Judgement) -> Finding | None:
    """The release depends on shared infrastructure."""
    infra = j.facts.change.shared_infra
    if not infra:
        return None
    return Finding(R.SHARED_INFRA, "depends on shared infra: " + ", ".join(sorted(infra)))


@dataclass(frozen=True, slots=True)
class _ChangeFlag:
    """A blocker raised by one boolean of the deploy event's ``change``."""

    code: ReasonCode
    flag: str
    text: str

    def __call__(self, j: Judgement) -> Finding | None:
        return Finding(self.code, self.text) if getattr(j.facts.change, self.flag) else None


data_writes = _ChangeFlag(R.DATA_WRITES, "data_writes", "the release writes data")
schema_migration = _ChangeFlag(
    R.SCHEMA_MIGRATION, "schema_migration", "the release migrates a schema"
)
credential_rotation = _ChangeFlag(
    R.CREDENTIAL_ROTATION, "credential_rotation", "the release rotates credentials"
)
session_invalidation = _ChangeFlag(
    R.SESSION_INVALIDATION, "session_invalidation", "the release invalidates sessions"
)
cross_domain_secrets = _ChangeFlag(
    R.CROSS_DOMAIN_SECRETS, "cross_domain_secrets", "the release touches cross-domain secrets"
)


def blast_radius(j: Judgement) -> Finding | None:
    """The service is tier ``shared`` in the policy."""
    if j.service_policy.tier != "shared":
        return None
    return Finding(R.BLAST_RADIUS, f"{j.facts.service} is tier 'shared' in the policy")


def policy_requires_approval(j: Judgement) -> Finding | None:
    """``auto_rollback: false`` for the service."""
    if j.service_policy.auto_rollback:
        return None
    return Finding(
        R.POLICY_REQUIRES_APPROVAL, f"auto_rollback is false for {j.facts.service} in the policy"
    )


def same_identity(j: Judgement) -> Finding | None:
    """The deploy actor is one of the ``rollback_authorities``."""
    actor = j.facts.actor
    if actor not in j.policy.rollback_authorities:
        return None
    return Finding(R.SAME_IDENTITY, f"deployed by {actor}, which is a rollback authority")


def rate_limited(j: Judgement) -> Finding | None:
    """The hourly rollback budget of the service, or of the fleet, is spent."""
    limits, fleet = j.policy.fleet, j.fleet
    if fleet.service_rollbacks >= limits.max_auto_rollbacks_per_service_per_hour:
        return Finding(
            R.RATE_LIMITED,
            f"{fleet.service_rollbacks} rollbacks of {j.facts.service} in the last hour "
            f"(limit {limits.max_auto_rollbacks_per_service_per_hour})",
        )
    if fleet.fleet_rollbacks >= limits.max_auto_rollbacks_per_hour:
        return Finding(
            R.RATE_LIMITED,
            f"{fleet.fleet_rollbacks} rollbacks fleet-wide in the last hour "
            f"(limit {limits.max_auto_rollbacks_per_hour})",
        )
    return None


def fleet_wide_anomaly(j: Judgement) -> Finding | None:
    """``fleet_anomaly_limit`` or more services breaching in the same window."""
    breaching, limit = j.fleet.breaching_services, j.policy.fleet.fleet_anomaly_limit
    if len(breaching) < limit:
        return None
    return Finding(
        R.FLEET_WIDE_ANOMALY,
        f"{len(breaching)} services breaching in the same window "
        f"(limit {limit}): {', '.join(breaching)}",
    )


# ----------------------------------------------------------------------------------------------
# The tables
# ----------------------------------------------------------------------------------------------

TRIGGER_RULES: tuple[Rule, ...] = (threshold_breach, critical_alert, anomaly)
EPISODE_RULES: tuple[Rule, ...] = (breach_building, critical_building, anomaly_building)
WINDOW_BLOCKERS: tuple[Rule, ...] = (
    telemetry_stale,
    telemetry_incomplete,
    alert_flapping,
    signals_conflict,
    model_cold,
    baseline_unstable,
    low_traffic_rule,
    breach_unconfirmed,
)
DEPLOYMENT_BLOCKERS: tuple[Rule, ...] = (
    no_rollback_target,
    shared_infra,
    data_writes,
    schema_migration,
    credential_rotation,
    session_invalidation,
    cross_domain_secrets,
    blast_radius,
    policy_requires_approval,
    same_identity,
    rate_limited,
    fleet_wide_anomaly,
)


@dataclass(frozen=True, slots=True)
class Verdicts:
    """What the tables found in one judgement."""

    triggers: dict[ReasonCode, str]
    episode: dict[ReasonCode, str]
    blockers: dict[ReasonCode, str]


def judge(j: Judgement) -> Verdicts:
    """Run the trigger, episode and window-blocker tables over one judgement."""
    return Verdicts(
        evaluate(TRIGGER_RULES, j), evaluate(EPISODE_RULES, j), evaluate(WINDOW_BLOCKERS, j)
    )


def deployment_blockers(
    deployment: DeploymentFacts, policy: Policy, fleet: FleetFacts
) -> dict[ReasonCode, str]:
    """Blockers that follow from the deploy event, the service's policy and the fleet."""
    return evaluate(DEPLOYMENT_BLOCKERS, Judgement.of_deployment(deployment, policy, fleet))
