"""The anomaly models as the engine uses them: one small interface, features, lazy learning.

The detectors themselves live in ``models.anomaly`` (``WindowDetector`` per service and metric,
``JointDetector`` per service). The engine only needs ``score_one``, ``learn_one``,
``n_learned`` and ``snapshot_id``; ``DetectorKit`` says how to make them, so tests can pass a
stand-in.

Learning is lazy: a closed window is marked ``learnable`` when it is healthy (outside every bake,
no breach) and stays in the service's ring of recent summaries; the detectors learn the
learnable windows they have not seen yet, in window order, the first time they are consulted.
The result is the same as learning at every close, except that healthy windows that scroll out
of the ring before any consultation are never learned (see docs/core.md): it keeps the cost of a
quiet service's window close to a few microseconds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from rollguard.models.policy import ServicePolicy
from rollguard.models.windows import MetricStats, Stat, WindowSummary, stat_of

__all__ = [
    "JOINT",
    "Detector",
    "DetectorKit",
    "ServiceModels",
    "Score",
    "default_kit",
    "joint_features",
    "window_features",
]

JOINT = "*joint*"
"""Key of the joint detector among a service's scores."""


class Detector(Protocol):
    """The slice of the river-style detector contract that the engine relies on."""

    @property
    def n_learned(self) -> int:
        """Windows learned so far."""
        ...

    def score_one(self, x: Mapping[str, float]) -> float:
        """Anomaly score in [0, 1]; never learns."""
        ...

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Learn one healthy window."""
        ...

    def snapshot_id(self) -> str:
        """A short id of the detector's current state."""
        ...


@dataclass(frozen=True, slots=True)
class DetectorKit:
    """How to make detectors: ``window(direction=...)`` per metric, ``joint(context=...)`` per
    service.

    Both must be picklable (module-level classes or functions), since the kit lives in the
    engine state.
    """

    window: Callable[..., Detector]
    joint: Callable[..., Detector]

    def window_detector(self, direction: str) -> Detector:
        """A fresh per-metric detector; ``direction`` is ``up`` or ``both``."""
        return self.window(direction=direction)

    def joint_detector(self, context: list[str], up: list[str] | None = None) -> Detector:
        """A fresh joint detector; ``context`` names the metrics it conditions on (traffic),
        ``up`` those only bad going up (the policy's threshold metrics)."""
        if up is None:
            return self.joint(context=context)
        return self.joint(context=context, up=up)


def default_kit() -> DetectorKit:
    """The kit of ``models.anomaly`` (imported lazily, so the core loads without it)."""
    anomaly = importlib.import_module("rollguard.models.anomaly")
    return DetectorKit(window=anomaly.WindowDetector, joint=anomaly.JointDetector)


def window_features(stats: MetricStats, stat: Stat = "mean") -> dict[str, float]:
    """What a per-metric detector sees of one window: the statistic its policy compares.

    Only that one: a p99 exporter's lone spikes make a 3-sample window's ``max`` and ``p95``
    jumpy, and the model is there to confirm the departure the threshold measures.
    """
    return {stat: stat_of(stats, stat)}


def _stat(policy: ServicePolicy, metric: str) -> Stat:
    rule = policy.metrics.get(metric)
    return rule.stat if rule is not None else "mean"


def joint_features(summary: WindowSummary, policy: ServicePolicy) -> dict[str, float]:
    """What the joint detector sees: each metric's policy stat (``mean`` if unnamed)."""
    return {
        name: stat_of(summary.metrics[name], _stat(policy, name))
        for name in sorted(summary.metrics)
    }


@dataclass(frozen=True, slots=True)
class Score:
    """One detector's verdict on one window."""

    score: float
    n_learned: int
    snapshot_id: str


@dataclass(slots=True)
class ServiceModels:
    """The detectors of one service and how far through its windows they have learned."""

    window: dict[str, Detector] = field(default_factory=dict)
    joint: Detector | None = None
    learned_through: int | None = None
    """Index of the newest window already offered for learning."""

    def _window_detector(self, kit: DetectorKit, metric: str, policy: ServicePolicy) -> Detector:
        det = self.window.get(metric)
        if det is None:
            rule = policy.metrics.get(metric)
            # A threshold metric is only bad going up; anything else may go wrong either way.
            direction = "up" if rule is not None and rule.role == "threshold" else "both"
            det = self.window[metric] = kit.window_detector(direction)
        return det

    def _joint_detector(self, kit: DetectorKit, policy: ServicePolicy) -> Detector:
        if self.joint is None:
            # Traffic is the condition the service runs under, not a symptom of the release:
            # the joint model scores the other metrics given it (docs/core.md).
            # Threshold metrics are only bad going up: an improvement never scores (issue 11).
            self.joint = kit.joint_detector(
                sorted(policy.traffic_metrics()), up=sorted(policy.threshold_metrics())
            )
        return self.joint

    def catch_up(
        self,
        kit: DetectorKit,
        summaries: Iterable[WindowSummary],
        policy: ServicePolicy,
        through: int,
    ) -> int:
        """Learn the learnable windows up to index ``through`` not offered yet; return count."""
        learned = 0
        for summary in summaries:
            if summary.k > through:
                break
            if self.learned_through is not None and summary.k <= self.learned_through:
                continue
            self.learned_through = summary.k
            if not summary.learnable or not summary.metrics:
                continue
            for name in sorted(summary.metrics):
                det = self._window_detector(kit, name, policy)
                det.learn_one(window_features(summary.metrics[name], _stat(policy, name)))
            self._joint_detector(kit, policy).learn_one(joint_features(summary, policy))
            learned += 1
        if self.learned_through is None or through > self.learned_through:
            self.learned_through = through
        return learned

    def score(
        self, kit: DetectorKit, summary: WindowSummary, policy: ServicePolicy
    ) -> dict[str, Score]:
        """Score every metric of a window and the joint vector (key ``JOINT``)."""
        out: dict[str, Score] = {}
        for name in sorted(summary.metrics):
            det = self._window_detector(kit, name, policy)
            value = det.score_one(window_features(summary.metrics[name], _stat(policy, name)))
            out[name] = Score(value, det.n_learned, det.snapshot_id())
        if summary.metrics:
            joint = self._joint_detector(kit, policy)
            value = joint.score_one(joint_features(summary, policy))
            out[JOINT] = Score(value, joint.n_learned, joint.snapshot_id())
        return out

    def learned(self) -> dict[str, int]:
        """Windows learned per metric detector (and ``JOINT``)."""
        out = {name: det.n_learned for name, det in sorted(self.window.items())}
        if self.joint is not None:
            out[JOINT] = self.joint.n_learned
        return out
