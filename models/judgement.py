"""``Judgement``: everything one judged window of a deployment under trial is decided from.

Built once per judged window (``Deployment.observe``) and frozen; the rules of
``models.rules`` read it and nothing else, and the evidence of a ruling is built from it
(``models.evidence``). Its derived views (``breached``, ``anomalies``, ...) say once what a
streak means, so that triggers, episodes and blockers agree on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rollguard.models.counts import CountEvidence
from rollguard.models.events import ReasonCode
from rollguard.models.facts import DeploymentFacts, FleetFacts
from rollguard.models.memory import Tail
from rollguard.models.onset import Onset
from rollguard.models.policy import Policy, ServicePolicy
from rollguard.models.quality import Signals
from rollguard.models.scoring import Score
from rollguard.models.sequential import SequentialVerdict
from rollguard.models.thresholds import ThresholdCheck
from rollguard.models.windows import Baseline, WindowSummary

__all__ = ["Finding", "Judgement", "Streaks"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's conclusion: a reason code and the detail that names its numbers."""

    code: ReasonCode
    detail: str


@dataclass(frozen=True, slots=True)
class Streaks:
    """Consecutive observation windows, this one included, in which something held."""

    breach: Mapping[str, int] = field(default_factory=dict)
    """Threshold metric -> windows breaching."""
    confirmed: Mapping[str, int] = field(default_factory=dict)
    """Threshold metric -> breaching windows in which its warm model agreed."""
    anomaly: Mapping[str, int] = field(default_factory=dict)
    """Metric (or ``JOINT``) -> windows its warm model scored anomalous."""
    critical: int = 0
    """Windows with a critical alert firing."""


@dataclass(frozen=True, slots=True)
class Judgement:
    """One judged window of one deployment: facts, window, streaks, scores, fleet, policy."""

    facts: DeploymentFacts
    policy: Policy
    service_policy: ServicePolicy
    fleet: FleetFacts
    summary: WindowSummary
    baseline: Baseline | None = None
    checks: Mapping[str, ThresholdCheck] = field(default_factory=dict)
    scores: Mapping[str, Score] = field(default_factory=dict)
    streaks: Streaks = Streaks()
    critical: tuple[str, ...] = ()
    """Critical alerts firing during the window."""
    signals: Signals | None = None
    """Signal-quality facts (None: not read, e.g. a judgement of the deployment alone)."""
    memory: Mapping[str, Tail] = field(default_factory=dict)
    """Breaching threshold metric -> how rare its departure (the minimum over its breaching
    windows, at most ``need``) is among the service's own healthy windows (warm memory only)."""
    routine: Mapping[str, Tail] = field(default_factory=dict)
    """Threshold metric whose ratio-only breach is routine for the service: not a breach."""
    counts: Mapping[str, CountEvidence] = field(default_factory=dict)
    """Error-rate metric above its limit whose errors the window's requests do not make
    significant (the count test): not a breach."""
    onsets: Mapping[str, Onset] = field(default_factory=dict)
    """Threshold metric (breaching; if none, its sequential test alarming) whose departure began
    before the deploy."""
    sequential: Mapping[str, SequentialVerdict] = field(default_factory=dict)
    """Threshold metric -> its sequential test over the observation so far."""

    @classmethod
    def of_deployment(cls, facts: DeploymentFacts, policy: Policy, fleet: FleetFacts) -> Judgement:
        """A judgement of the deployment, its policy and the fleet alone (no window)."""
        sp = policy.for_service(facts.service)
        empty = WindowSummary(0, facts.deployed_at, facts.deployed_at, {})
        return cls(facts, policy, sp, fleet, empty)

    @property
    def need(self) -> int:
        """Windows in a row that make a trigger (``consecutive_breach_windows``)."""
        return self.service_policy.consecutive_breach_windows

    @property
    def breached(self) -> list[str]:
        """Threshold metrics breaching for ``need`` windows in a row, by name."""
        need = self.need
        return [m for m, n in sorted(self.streaks.breach.items()) if n >= need]

    @property
    def confirmed(self) -> bool:
        """Some metric's breach was confirmed by its model in ``need`` windows."""
        need = self.need
        return any(self.streaks.confirmed.get(m, 0) >= need for m in self.breached)

    @property
    def critical_trigger(self) -> bool:
        """A critical alert has fired for ``need`` windows in a row."""
        return self.streaks.critical >= self.need

    @property
    def need_anomaly(self) -> int:
        """Windows a model departure must last to be a trigger.

        Beside a breach or a critical alert, an anomaly is part of the picture after the same
        count; alone, it must persist longer (``anomaly_only_windows``) before it pages anyone.
        """
        if self.breached or self.critical_trigger:
            return self.need
        return self.service_policy.anomaly_only_windows

    @property
    def anomalies(self) -> list[str]:
        """Metrics (or ``JOINT``) anomalous for ``need_anomaly`` windows in a row."""
        need = self.need_anomaly
        return [k for k, n in sorted(self.streaks.anomaly.items()) if n >= need]

    @property
    def sequential_alarms(self) -> list[str]:
        """Threshold metrics whose sequential test over the bake is above its threshold now,
        after at least ``anomaly_only_windows`` windows (a warm-up is not a regression; an
        alarm now is a subset of an alarm ever, so the test's false-alarm bound holds)."""
        need = self.service_policy.anomaly_only_windows
        return [
            m
            for m, v in sorted(self.sequential.items())
            if v.windows >= need and v.alarming
        ]

    def model_warm(self, metric: str) -> bool:
        """The metric's model has learned enough windows for its score to mean something."""
        s = self.scores.get(metric)
        return s is not None and s.n_learned >= self.service_policy.min_baseline_windows
