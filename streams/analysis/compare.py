"""Two policies over the same events: which deployments changed, and the thresholds that did it.

A deployment differs when its final action (``streams.analysis.labels``) or the reasons of the
decision that set it differ. For each, the comparison names the effective policy fields of the
service that differ (``metrics.error_rate.max: 0.05 → 0.02``; fleet limits and
pre-authorisations too) and the per-metric threshold evidence of the two deciding decisions
(value, limits, baseline, breach and streaks) where it differs.

>>> flatten({"a": {"b": 1, "c": [1, 2]}})
{'a.b': 1, 'a.c': [1, 2]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rollguard.models.policy import Policy
from rollguard.streams.analysis.labels import DeploymentOutcome

__all__ = ["Difference", "compare_outcomes", "flatten", "policy_changes"]

THRESHOLD_FIELDS = ("stat", "value", "max", "max_ratio_to_baseline", "baseline", "ratio_limit",
                    "breach", "breach_windows", "confirmed_windows")


@dataclass
class Difference:
    """One deployment decided differently by policy A and policy B."""

    deployment_id: str
    service: str
    action_a: str
    action_b: str
    reasons_a: list[str]
    reasons_b: list[str]
    decided_a: str | None
    decided_b: str | None
    policy: list[tuple[str, Any, Any]] = field(default_factory=list)
    """(effective policy field, A, B) for the fields of this service that differ."""
    thresholds: list[tuple[str, str, Any, Any]] = field(default_factory=list)
    """(metric, evidence field, A, B) where the two deciding decisions' thresholds differ."""

    def as_json(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "service": self.service,
            "a": {"action": self.action_a, "reasons": self.reasons_a, "ts": self.decided_a},
            "b": {"action": self.action_b, "reasons": self.reasons_b, "ts": self.decided_b},
            "policy": [{"field": f, "a": a, "b": b} for f, a, b in self.policy],
            "thresholds": [{"metric": m, "field": f, "a": a, "b": b}
                           for m, f, a, b in self.thresholds],
        }


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → ``{"a.b": leaf}`` (lists are leaves)."""
    if not isinstance(data, Mapping):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, path) if isinstance(value, Mapping) else {path: value})
    return out


def policy_changes(a: Policy, b: Policy, service: str) -> list[tuple[str, Any, Any]]:
    """Effective policy fields of ``service`` (and fleet-wide ones) that differ between A and B."""

    def effective(policy: Policy) -> dict[str, Any]:
        data = flatten(policy.for_service(service).model_dump(mode="json"))
        data.update(flatten(policy.fleet.model_dump(mode="json"), "fleet"))
        data["rollback_authorities"] = list(policy.rollback_authorities)
        data["preauthorizations"] = [r.model_dump(mode="json")
                                     for r in policy.preauthorizations_for(service)]
        return data

    left, right = effective(a), effective(b)
    return [(key, left.get(key), right.get(key)) for key in sorted(set(left) | set(right))
            if left.get(key) != right.get(key)]


def _thresholds(outcome: DeploymentOutcome | None) -> dict[str, Mapping[str, Any]]:
    if outcome is None:
        return {}
    chosen = outcome.final or (outcome.decisions[-1] if outcome.decisions else None)
    if chosen is None:
        return {}
    return dict((chosen.get("evidence") or {}).get("thresholds") or {})


def compare_outcomes(a: Mapping[str, DeploymentOutcome], b: Mapping[str, DeploymentOutcome],
                     policy_a: Policy, policy_b: Policy) -> list[Difference]:
    """Every deployment whose final action or reasons differ between the two runs."""
    out = []
    for ident in sorted(set(a) | set(b)):
        left, right = a.get(ident), b.get(ident)
        action_a = left.action if left else "none"
        action_b = right.action if right else "none"
        reasons_a = left.reasons if left else []
        reasons_b = right.reasons if right else []
        if action_a == action_b and reasons_a == reasons_b:
            continue
        service = (left or b[ident]).service  # ident is a key of a or of b
        diff = Difference(
            ident, service, action_a, action_b, reasons_a, reasons_b,
            str(left.final["ts"]) if left and left.final else None,
            str(right.final["ts"]) if right and right.final else None,
            policy=policy_changes(policy_a, policy_b, service),
        )
        ta, tb = _thresholds(left), _thresholds(right)
        for metric in sorted(set(ta) | set(tb)):
            for name in THRESHOLD_FIELDS:
                va, vb = ta.get(metric, {}).get(name), tb.get(metric, {}).get(name)
                if va != vb:
                    diff.thresholds.append((metric, name, va, vb))
        out.append(diff)
    return out
