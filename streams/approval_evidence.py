"""An approval request's evidence as a human reads it: reasons in words, thresholds, quality.

Plain data (rows of strings) for ``rollguard approvals show`` (a terminal) and the console (HTML)
alike, so both say the same thing. Everything shown comes from the request's own evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rollguard.models.events import parse_ts

__all__ = ["EXPLANATIONS", "EvidenceView", "age", "clock", "evidence_view", "explain", "fmt",
           "response_command"]

def age(seconds: float) -> str:
    """A duration as a person reads it: '42 s', '17 min', '3.5 h'."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# DESIGN §4, in words an on-call engineer reads at 3 a.m.
EXPLANATIONS: dict[str, str] = {
    "THRESHOLD_BREACH": "A metric crossed the threshold written in the policy for enough "
                        "consecutive windows.",
    "ANOMALY": "The online anomaly model scores this service's recent windows as a departure "
               "from its own baseline.",
    "CRITICAL_ALERT": "A critical alert is firing for the service.",
    "TELEMETRY_STALE": "A metric stopped arriving: some exporter has been silent too long, so "
                       "the picture is incomplete.",
    "TELEMETRY_INCOMPLETE": "Fewer samples arrived than expected (coverage below the policy's "
                            "minimum).",
    "ALERT_FLAPPING": "An alert keeps switching between firing and resolved.",
    "SIGNALS_CONFLICT": "Signals disagree (a breach while its alert resolved, two sources "
                        "apart, or errors rising while traffic collapses).",
    "MODEL_COLD": "The anomaly model has not seen enough of this service to be trusted yet.",
    "BASELINE_UNSTABLE": "The pre-deploy baseline varied too much to compare against.",
    "BREACH_UNCONFIRMED": "The threshold breach is not confirmed by the anomaly model.",
    "NO_ROLLBACK_TARGET": "The deploy event named no version to roll back to.",
    "SHARED_INFRA": "The release touches shared infrastructure; a rollback may affect others.",
    "DATA_WRITES": "The release writes data; rolling back may not undo it.",
    "SCHEMA_MIGRATION": "The release migrated a schema; the old version may not read it.",
    "CREDENTIAL_ROTATION": "The release rotated credentials; the old version may not have them.",
    "SESSION_INVALIDATION": "The release invalidated sessions; rolling back does not restore "
                            "them.",
    "CROSS_DOMAIN_SECRETS": "The release changed secrets shared with other domains.",
    "BLAST_RADIUS": "The service is in the shared tier; its rollback reaches other services.",
    "FLEET_WIDE_ANOMALY": "Many services breach at once: more likely a shared cause or broken "
                          "telemetry than a bad deploy.",
    "RATE_LIMITED": "The rollback budget (per service or fleet-wide, per hour) is spent.",
    "SAME_IDENTITY": "The release was deployed by an identity that also rolls back.",
    "POLICY_REQUIRES_APPROVAL": "The policy says this service never rolls back without a human.",
    "INSUFFICIENT_EVIDENCE": "The bake ended without enough telemetry to call it good.",
    "LOW_TRAFFIC": "Too little traffic during the bake to judge the release.",
    "APPROVED": "An approver approved the rollback.",
    "DENIED": "An approver denied the rollback.",
    "APPROVAL_EXPIRED": "Nobody answered before the request expired.",
    "APPROVAL_SUPERSEDED": "Every blocker cleared while the breach held: rolled back "
                           "automatically.",
    "APPROVAL_WITHDRAWN": "The breach cleared (or a new deploy replaced this one): the request "
                          "was withdrawn.",
    "APPROVAL_REJECTED": "An answer did not count (bad signature, unknown approver, missing "
                         "role, self-approval, replay or late).",
}


def explain(code: str) -> str:
    return EXPLANATIONS.get(code, "")


def clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt(value: Any) -> str:
    """A number as people read it (4 significant digits); anything else as text."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True)
class EvidenceView:
    """The parts of the evidence shown to an approver, as rows of text."""

    reasons: list[tuple[str, str, str]]
    """(code, the worker's detail, the code explained in words)."""
    thresholds: list[list[str]]
    """metric, stat, last window, max, baseline, ratio limit, breaching, windows in breach."""
    windows: list[list[str]]
    """window end, then each metric's stat per window."""
    window_metrics: list[str]
    quality: list[tuple[str, str]]
    anomaly: list[tuple[str, str]]
    facts: list[tuple[str, str]]
    """Deployment and request facts: version, target, actor, deployed, decided, expiry."""


THRESHOLD_HEADERS = ["metric", "stat", "last window", "max", "baseline", "limit (ratio × "
                     "baseline)", "breaching", "windows in breach"]


def evidence_view(request: dict[str, Any]) -> EvidenceView:
    """What ``rollguard approvals show`` and the console display for ``request``."""
    evidence = request.get("evidence") or {}
    thresholds = evidence.get("thresholds") or {}
    rows = [[name, str(t.get("stat", "")), fmt(t.get("value")), fmt(t.get("max")),
             fmt(t.get("baseline")),
             f"{fmt(t.get('ratio_limit'))} ({fmt(t.get('max_ratio_to_baseline'))}×)",
             "BREACH" if t.get("breach") else "ok", fmt(t.get("breach_windows"))]
            for name, t in sorted(thresholds.items())]
    stats = {name: str(t.get("stat", "mean")) for name, t in thresholds.items()}
    windows = evidence.get("windows") or []
    names = sorted({m for w in windows for m in (w.get("metrics") or {})})
    window_rows = []
    for window in windows:
        metrics = window.get("metrics") or {}
        row = [clock(parse_ts(window["end"])) if window.get("end") else "?"]
        for name in names:
            values = metrics.get(name) or {}
            row.append(fmt(values.get(stats.get(name, "mean"))))
        window_rows.append(row)
    quality = evidence.get("quality") or {}
    quality_rows = [(key, _short(value)) for key, value in sorted(quality.items())]
    scores = (evidence.get("anomaly") or {}).get("scores") or {}
    threshold = (evidence.get("anomaly") or {}).get("threshold")
    anomaly_rows = [(name, f"{fmt(s.get('score'))} (threshold {fmt(threshold)}, "
                           f"{s.get('n_learned', '?')} windows learned)")
                    for name, s in sorted(scores.items())]
    deployment = evidence.get("deployment") or {}
    facts = [
        ("service", str(request.get("service", ""))),
        ("deployment", str(request.get("deployment_id", ""))),
        ("version", f"{deployment.get('version', '?')} → rollback to "
                    f"{request.get('to_version') or 'NO TARGET'}"),
        ("deployed by", str(deployment.get("actor", request.get("deploy_actor", "?")))),
        ("deployed at", _when(deployment.get("deployed_at"))),
        ("decided at", _when(evidence.get("decided_at"))),
        ("expires at", _when(request.get("expires_at"))),
        ("required role", str(request.get("required_role", ""))),
        ("runbook", str(request.get("runbook") or "-")),
        ("policy version", str(request.get("policy_version", ""))[:12] or "-"),
    ]
    reasons = [(str(r.get("code", "")), str(r.get("detail", "")), explain(str(r.get("code", ""))))
               for r in request.get("reasons", [])]
    return EvidenceView(reasons, rows, window_rows, names, quality_rows, anomaly_rows, facts)


def response_command(request: dict[str, Any], verb: str) -> str:
    """The exact CLI command that answers ``request``."""
    return (f"rollguard {verb} {request['request_id']} --service {request.get('service')} "
            "--as <your identity> --key <your .key file> --comment '<why>'")


def _when(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return clock(parse_ts(value))
    except ValueError:
        return str(value)


def _short(value: Any) -> str:
    if isinstance(value, dict):
        parts = [f"{k}={_short(v)}" for k, v in sorted(value.items())]
        return ", ".join(parts) if parts else "-"
    if isinstance(value, list | tuple):
        return ", ".join(_short(v) for v in value) or "-"
    return fmt(value)
