"""The plain facts a judgement is made of: the deployment, the fleet, a window's findings.

They live apart from ``decide`` so that the rule registry (``models.rules``) and ``decide`` can
both use them without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from rollguard.models.events import ChangeSet, ReasonCode

__all__ = ["BakeEvidence", "DeploymentFacts", "Findings", "FleetFacts", "Stage"]


class Stage(StrEnum):
    """Where a deployment's trial stands."""

    OBSERVING = "observing"
    """Nothing said yet."""
    WATCHING = "watching"
    """A ``watch`` decision was emitted for a trigger episode."""
    PENDING = "pending"
    """A trigger-based approval request awaits an answer; triggers are still watched."""
    INCONCLUSIVE = "inconclusive"
    """An inconclusive bake's request awaits an answer; nothing more is judged."""


@dataclass(frozen=True, slots=True)
class DeploymentFacts:
    """What the deploy event says about the release under trial."""

    deployment_id: str
    service: str
    version: str
    rollback_target: str | None
    actor: str
    deployed_at: float
    change: ChangeSet = ChangeSet()


@dataclass(frozen=True, slots=True)
class BakeEvidence:
    """How well the bake was covered by telemetry (judged when it ends)."""

    coverage: Mapping[str, float]
    """Per threshold metric: samples over the bake / samples expected."""
    traffic_mean: Mapping[str, float | None]
    """Per traffic metric: mean over the bake (None: no sample)."""
    samples: int
    """Samples of any metric after the deploy."""


@dataclass(frozen=True, slots=True)
class FleetFacts:
    """The fleet around the deployment: concurrent breaches and spent rollback budget."""

    breaching_services: tuple[str, ...] = ()
    service_rollbacks: int = 0
    """Rollback commands for this service in the last hour of event time."""
    fleet_rollbacks: int = 0
    """Rollback commands fleet-wide in the last hour of event time."""


@dataclass(frozen=True, slots=True)
class Findings:
    """What one window close showed about a deployment under trial."""

    triggers: Mapping[ReasonCode, str] = field(default_factory=dict)
    """Actionable triggers (THRESHOLD_BREACH, ANOMALY, CRITICAL_ALERT) with their details."""
    confirmed: bool = False
    """A THRESHOLD_BREACH whose metric's model agreed in every breaching window."""
    blockers: Mapping[ReasonCode, str] = field(default_factory=dict)
    """Signal-quality blockers (and BREACH_UNCONFIRMED) with their details."""
    episode: Mapping[ReasonCode, str] = field(default_factory=dict)
    """Would-be triggers under way but not yet actionable (e.g. one breaching window)."""
    clear_windows: int = 0
    """Consecutive windows with nothing breaching, anomalous or critical."""
    trigger_windows: int = 0
    """Observation windows so far with an actionable trigger (this one included)."""
    bake_over: bool = False
    bake: BakeEvidence | None = None
