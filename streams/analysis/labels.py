"""What rollguard finally did with each deployment, and how that scores against labels (§9).

Decisions are taken in their JSON form (as replay writes them), so a saved ``decisions.jsonl``
scores as well as a live replay.

Final action of a deployment, from its **decisive** decisions (``auto_rollback``,
``request_approval``, ``pass``), in output order: the last one counts — a request followed by an
``auto_rollback`` (``APPROVAL_SUPERSEDED``, a pre-authorisation) is a ``rollback``. An
``auto_rollback`` carrying ``APPROVED`` is the approver's act, not rollguard's: after a request
it leaves the action at ``approval``. No decisive decision at all: ``none``.

>>> d = [{"type": "decision", "deployment_id": "a", "service": "s", "action": "watch",
...       "reasons": ["ANOMALY"], "ts": "2026-11-25T08:01:00Z",
...       "evidence": {"deployment": {"deployed_at": "2026-11-25T08:00:00Z"}}},
...      {"type": "decision", "deployment_id": "a", "service": "s", "action": "auto_rollback",
...       "reasons": ["THRESHOLD_BREACH"], "ts": "2026-11-25T08:02:00Z",
...       "evidence": {"deployment": {"deployed_at": "2026-11-25T08:00:00Z"}}}]
>>> o = final_outcomes(d)["a"]
>>> o.action, o.seconds_to_decision
('rollback', 120.0)
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rollguard.models.events import parse_ts

__all__ = [
    "ACTIONS",
    "LABELS",
    "DeploymentOutcome",
    "Scorecard",
    "final_outcomes",
    "load_labels",
    "nearest_rank",
    "score",
]

Label = Literal["rollback", "approval", "pass"]
Action = Literal["rollback", "approval", "pass", "none"]
LABELS: tuple[Label, ...] = ("rollback", "approval", "pass")
ACTIONS: tuple[Action, ...] = ("rollback", "approval", "pass", "none")
DECISIVE: dict[str, Label] = {
    "auto_rollback": "rollback", "request_approval": "approval", "pass": "pass",
}


@dataclass
class DeploymentOutcome:
    """Every decision about one deployment, and what they add up to."""

    deployment_id: str
    service: str
    decisions: list[Mapping[str, Any]] = field(default_factory=list)
    action: Action = "none"
    final: Mapping[str, Any] | None = None
    """The decisive decision that set ``action`` (None for ``none``)."""
    deployed_at: float | None = None
    first_decisive_ts: float | None = None

    @property
    def seconds_to_decision(self) -> float | None:
        """From deploy start to the first decisive decision."""
        if self.deployed_at is None or self.first_decisive_ts is None:
            return None
        return self.first_decisive_ts - self.deployed_at

    @property
    def reasons(self) -> list[str]:
        """The reasons of the decision that set the final action."""
        return list(self.final.get("reasons", [])) if self.final else []

    def decisive(self) -> list[Mapping[str, Any]]:
        """The decisive decisions, in order (an approver's rollback excluded)."""
        return [d for d in self.decisions if _is_decisive(d)]


def _is_decisive(decision: Mapping[str, Any]) -> bool:
    if decision.get("action") not in DECISIVE:
        return False
    return not (decision["action"] == "auto_rollback" and "APPROVED" in decision.get("reasons", []))


def final_outcomes(decisions: Iterable[Mapping[str, Any]]) -> dict[str, DeploymentOutcome]:
    """Decision records (JSON form, in output order) → one outcome per deployment."""
    out: dict[str, DeploymentOutcome] = {}
    for decision in decisions:
        if decision.get("type", "decision") != "decision":
            continue
        ident = decision["deployment_id"]
        outcome = out.get(ident)
        if outcome is None:
            outcome = out[ident] = DeploymentOutcome(ident, decision.get("service", ""))
        outcome.decisions.append(decision)
        deployed = (decision.get("evidence") or {}).get("deployment", {}).get("deployed_at")
        if outcome.deployed_at is None and deployed is not None:
            outcome.deployed_at = parse_ts(deployed)
        if _is_decisive(decision):
            outcome.action = DECISIVE[decision["action"]]
            outcome.final = decision
            if outcome.first_decisive_ts is None:
                outcome.first_decisive_ts = parse_ts(decision["ts"])
    return out


def load_labels(path: Path) -> dict[str, Label]:
    """A §9 labels file; ValueError naming the file and the bad entry."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JSON labels file ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {{deployment_id: label}}, got {type(data).__name__}")
    for ident, label in data.items():
        if label not in LABELS:
            raise ValueError(f"{path}: {ident}: label {label!r} is not one of "
                             f"{', '.join(LABELS)}")
    return dict(data)


def nearest_rank(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (an observed value); None for no values.

    >>> nearest_rank([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 0.9)
    90.0
    >>> nearest_rank([5.0, 1.0, 3.0], 0.9)
    5.0
    """
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return None
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


@dataclass
class Scorecard:
    """The decisions of one replay against the labels."""

    confusion: dict[str, dict[str, int]]
    """label → action → deployments (every label row and action column present)."""
    false_rollbacks: list[str]
    missed: list[str]
    unlabeled: list[str]
    seconds_to_decision: list[float]
    reason_counts: dict[str, int]
    rows: list[dict[str, Any]]

    @property
    def labeled(self) -> int:
        return sum(sum(row.values()) for row in self.confusion.values())

    @property
    def agreed(self) -> int:
        return sum(self.confusion[label].get(label, 0) for label in self.confusion)

    @property
    def median_seconds(self) -> float | None:
        times = self.seconds_to_decision
        return float(statistics.median(times)) if times else None

    @property
    def p90_seconds(self) -> float | None:
        return nearest_rank(self.seconds_to_decision, 0.9)

    def as_json(self) -> dict[str, Any]:
        """The numbers, for ``--summary-json``."""
        return {
            "labeled": self.labeled,
            "agreed": self.agreed,
            "confusion": self.confusion,
            "false_rollbacks": self.false_rollbacks,
            "missed_bad_deploys": self.missed,
            "unlabeled": self.unlabeled,
            "time_to_decision_seconds": {
                "count": len(self.seconds_to_decision),
                "median": self.median_seconds,
                "p90": self.p90_seconds,
            },
            "reason_counts": self.reason_counts,
            "deployments": self.rows,
        }


def score(outcomes: Mapping[str, DeploymentOutcome], labels: Mapping[str, str]) -> Scorecard:
    """Confusion matrix (rows: label, columns: final action) and the numbers around it.

    - false automatic rollbacks: final action ``rollback`` where the label is not;
    - missed bad deploys: label ``rollback``, final action ``pass`` or ``none``;
    - time to decision: deploy start → first decisive decision, over the labelled deployments
      that had one (median; p90 by nearest rank);
    - reason counts: every reason code of every decisive decision of a labelled deployment.
    """
    confusion: dict[str, dict[str, int]] = {label: dict.fromkeys(ACTIONS, 0) for label in LABELS}
    false_rollbacks: list[str] = []
    missed: list[str] = []
    times: list[float] = []
    reasons: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    for ident in sorted(labels):
        label = labels[ident]
        outcome = outcomes.get(ident) or DeploymentOutcome(ident, "")
        confusion[label][outcome.action] += 1
        if outcome.action == "rollback" and label != "rollback":
            false_rollbacks.append(ident)
        if label == "rollback" and outcome.action in ("pass", "none"):
            missed.append(ident)
        seconds = outcome.seconds_to_decision
        if seconds is not None:
            times.append(seconds)
        for decision in outcome.decisive():
            reasons.update(decision.get("reasons", []))
        rows.append({"deployment_id": ident, "service": outcome.service, "label": label,
                     "action": outcome.action, "reasons": outcome.reasons,
                     "seconds_to_decision": seconds})
    unlabeled = sorted(set(outcomes) - set(labels))
    return Scorecard(confusion, false_rollbacks, missed, unlabeled, times,
                     dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))), rows)
