"""A fleet being recorded: services publishing telemetry, deploys, alerts, and the labels.

``Fleet`` collects input events (DESIGN §3 shapes, as plain dicts) together with the moment each
would reach Kafka, and ``build`` returns them in that arrival order, which is the order of a
replay file (§9). Event times are epoch seconds rounded to the millisecond.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

from rollguard.streams.scenarios.signals import (
    METRICS,
    Effect,
    ProfileOverrides,
    ServiceProfile,
    Silence,
    scrape,
)

__all__ = ["DEPLOYER", "Fleet", "Label", "Scenario", "SERVICE_POOL"]

Label = Literal["rollback", "approval", "pass"]

DEPLOYER = "svc:ci-deployer"
# Services the policy does not name: they get the defaults. checkout, payments and edge-gateway
# carry their own rules in config/policy.yaml and are used where a scenario needs them.
SERVICE_POOL: tuple[str, ...] = (
    "search",
    "catalog",
    "inventory",
    "recommendations",
    "notifications",
    "user-profile",
    "shipping",
    "cart",
    "reviews",
    "pricing",
)
_WARNING_ALERTS = ("CPUThrottlingHigh", "HighMemoryUsage", "KubePodRestarting")


@dataclass(frozen=True)
class Scenario:
    """A labelled synthetic recording.

    ``events`` are input events in replay-file order; ``labels`` say what a careful operator
    wants for each deployment (``rollback`` | ``approval`` | ``pass``); ``expected_reasons`` the
    reason codes the deciding decision must name; ``expected_authority`` the authority of the
    rollback command, for deployments labelled ``rollback``; ``onsets`` when a bad release's
    regression began (event time), where the recipe knows it (onset-to-decision delay).
    """

    name: str
    events: list[dict[str, Any]]
    labels: dict[str, str]
    expected_reasons: dict[str, list[str]]
    expected_authority: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    start: float = 0.0
    summary: str = ""
    onsets: dict[str, float] = field(default_factory=dict)

    def to_jsonl(self) -> str:
        """The events as a replay file (JSON Lines), deterministic to the byte."""
        return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self.events)

    def deployments(self) -> list[dict[str, Any]]:
        """The ``started`` deploy events, in file order."""
        return [e for e in self.events if e["type"] == "deploy" and e["status"] == "started"]


@dataclass(frozen=True)
class _Pending:
    arrival: float
    seq: int
    event: dict[str, Any]


class Fleet:
    """Collects the events of one scenario run; every random draw comes from ``rng``."""

    def __init__(self, scenario: str, seed: int, start: float) -> None:
        self.scenario = scenario
        self.seed = seed
        self.start = start
        self.rng = random.Random(f"rollguard/simulate/{scenario}/{seed}")
        self._pending: list[_Pending] = []
        self._deploys = 0
        self.labels: dict[str, str] = {}
        self.expected_reasons: dict[str, list[str]] = {}
        self.expected_authority: dict[str, str] = {}
        self.onsets: dict[str, float] = {}
        self._taken: list[str] = []

    # -- services ---------------------------------------------------------------------------

    def pick_services(self, count: int, pool: Sequence[str] = SERVICE_POOL) -> list[str]:
        """``count`` distinct service names not used yet in this scenario."""
        free = [s for s in pool if s not in self._taken]
        chosen = self.rng.sample(free, count)
        self._taken.extend(chosen)
        return chosen

    def claim(self, name: str) -> str:
        """Reserve a named service (checkout, payments, ...) so neighbours avoid it."""
        self._taken.append(name)
        return name

    def profile(self, name: str, **overrides: Unpack[ProfileOverrides]) -> ServiceProfile:
        return ServiceProfile.draw(name, self.rng, **overrides)

    def telemetry(
        self,
        profile: ServiceProfile,
        start: float,
        end: float,
        *,
        effects: Sequence[Effect] = (),
        silences: Sequence[Silence] = (),
        metrics: Sequence[str] = METRICS,
        source: str = "prometheus",
        phase: float | None = None,
        missing_rate: float = 0.01,
        observe: Callable[[str, float], float] | None = None,
    ) -> None:
        """Record every scrape of ``profile`` in [``start``, ``end``) from ``source``.

        ``observe(metric, value)``, if given, maps each value as the exporter reports it (e.g. a
        p99 read off coarse histogram buckets).
        """
        rng = random.Random(self.rng.getrandbits(64))
        for tick in scrape(
            profile,
            start,
            end,
            rng,
            effects=effects,
            silences=silences,
            metrics=metrics,
            phase=phase,
            missing_rate=missing_rate,
        ):
            for offset, (name, value) in enumerate(tick.values.items()):
                self._add(
                    tick.ts + tick.delay + offset * 0.002,
                    {
                        "type": "metric",
                        "service": profile.name,
                        "name": name,
                        "value": observe(name, value) if observe else value,
                        "ts": tick.ts,
                        "source": source,
                    },
                )

    def neighbours(self, start: float, end: float, count: int | None = None) -> list[str]:
        """2-3 healthy services publishing all along, now and then with a warning alert."""
        count = count if count is not None else self.rng.randint(2, 3)
        names = self.pick_services(count)
        for name in names:
            self.telemetry(self.profile(name), start, end)
        if self.rng.random() < 0.3:
            at = self.rng.uniform(start + 300, end - 600)
            self.alert(
                self.rng.choice(names),
                self.rng.choice(_WARNING_ALERTS),
                at,
                resolved_at=at + self.rng.uniform(180, 480),
                severity="warning",
            )
        return names

    # -- deploys and alerts -----------------------------------------------------------------

    def versions(self) -> tuple[str, str]:
        """(new version, previous version)."""
        rng = self.rng
        major, minor, patch = rng.randint(1, 4), rng.randint(0, 30), rng.randint(0, 12)
        previous = f"v{major}.{minor}.{patch}"
        if self.rng.random() < 0.7:
            return f"v{major}.{minor}.{patch + 1}", previous
        return f"v{major}.{minor + 1}.0", previous

    def deploy(
        self,
        service: str,
        at: float,
        version: str,
        previous_version: str | None,
        *,
        rollback_target: str | None | Literal["previous"] = "previous",
        actor: str = DEPLOYER,
        change: dict[str, Any] | None = None,
        status: str = "started",
        deployment_id: str | None = None,
    ) -> str:
        """Record a deploy event; returns its deployment id (a new one unless given)."""
        if deployment_id is None:
            self._deploys += 1
            deployment_id = f"dep-{self.scenario}-{self.seed}-{self._deploys}"
        full_change = {
            "data_writes": False,
            "schema_migration": False,
            "credential_rotation": False,
            "session_invalidation": False,
            "cross_domain_secrets": False,
            "shared_infra": [],
        }
        full_change.update(change or {})
        ts = round(at, 3)
        self._add(
            ts + 0.2,
            {
                "type": "deploy",
                "deployment_id": deployment_id,
                "service": service,
                "version": version,
                "previous_version": previous_version,
                "rollback_target": (
                    previous_version if rollback_target == "previous" else rollback_target
                ),
                "status": status,
                "actor": actor,
                "ts": ts,
                "environment": "prod",
                "change": full_change,
            },
        )
        return deployment_id

    def alert(
        self,
        service: str,
        name: str,
        firing_at: float,
        *,
        resolved_at: float | None = None,
        severity: str = "critical",
        alert_id: str | None = None,
    ) -> str:
        """An alertmanager alert firing at ``firing_at`` (and resolved at ``resolved_at``).

        Returns its id; pass it back to re-fire the same alert (alertmanager's fingerprint of
        one label set stays the same across firings).
        """
        alert_id = alert_id or f"am-{self.rng.getrandbits(32):08x}"
        times = [("firing", firing_at)]
        if resolved_at is not None:
            times.append(("resolved", resolved_at))
        for status, at in times:
            ts = round(at, 3)
            self._add(
                ts + self.rng.uniform(0.1, 1.0),
                {
                    "type": "alert",
                    "alert_id": alert_id,
                    "service": service,
                    "name": name,
                    "severity": severity,
                    "status": status,
                    "ts": ts,
                    "source": "alertmanager",
                },
            )
        return alert_id

    def expect(
        self,
        deployment_id: str,
        label: Label,
        reasons: Sequence[str] = (),
        *,
        authority: str | None = None,
        onset: float | None = None,
    ) -> None:
        """What a careful operator wants for ``deployment_id``, the reasons to name, and when
        its regression began (``onset``, event time) if it is a bad release."""
        self.labels[deployment_id] = label
        if onset is not None:
            self.onsets[deployment_id] = onset
        self.expected_reasons[deployment_id] = list(reasons)
        if label == "rollback":
            self.expected_authority[deployment_id] = authority or "auto"

    # -- result -----------------------------------------------------------------------------

    def build(self, summary: str = "") -> Scenario:
        ordered = sorted(self._pending, key=lambda p: (p.arrival, p.seq))
        return Scenario(
            name=self.scenario,
            events=[p.event for p in ordered],
            labels=dict(self.labels),
            expected_reasons={k: list(v) for k, v in self.expected_reasons.items()},
            expected_authority=dict(self.expected_authority),
            seed=self.seed,
            start=self.start,
            summary=summary,
            onsets=dict(self.onsets),
        )

    def _add(self, arrival: float, event: dict[str, Any]) -> None:
        if not math.isfinite(event["ts"]):
            raise ValueError(f"non-finite event time in {event!r}")
        self._pending.append(_Pending(arrival, len(self._pending), event))
