"""What a release does to its service's telemetry: healthy, bad, or bad in a particular way.

Each function draws its parameters from the fleet's random stream, records the alerts that the
alertmanager would send, and returns the ``Release``: effects on the true levels and the spans
in which some exporter is silent. The timings are the policy's (config/policy.yaml defaults):
30-s windows, two consecutive breaching windows, 90 s to stale, a 600-s bake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from rollguard.streams.scenarios.fleet import Fleet
from rollguard.streams.scenarios.signals import (
    ERROR_RATE,
    LATENCY,
    REQUEST_RATE,
    Climb,
    Effect,
    ServiceProfile,
    Shift,
    Silence,
)

__all__ = [
    "BAKE_SECONDS",
    "WINDOW_SECONDS",
    "BadKind",
    "Release",
    "bad_release",
    "blip",
    "flapping_alert",
    "healthy_release",
    "slow_burn",
    "traffic_drain",
]

BAKE_SECONDS = 600.0
WINDOW_SECONDS = 30.0

BadKind = Literal["errors", "errors+latency", "latency"]

# A breach that must be seen *together with* a stale exporter starts late enough that, when its
# second breaching window closes, the exporter has been silent longer than stale_after_seconds
# (90 s): the first window holding a bad sample starts after onset - 31 s, the second ends
# 60 s later, and the last sample before the deploy is older than the deploy.
STALE_ONSET = (66.0, 80.0)


@dataclass
class Release:
    """Effects on the deployed service's true levels, and spans where exporters are silent."""

    effects: list[Effect] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    onset: float | None = None


def healthy_release(fleet: Fleet, deployed_at: float) -> Release:
    """A good release: slightly different error and latency levels, maybe a short warm-up."""
    rng = fleet.rng
    settle = deployed_at + rng.uniform(20.0, 60.0)
    effects: list[Effect] = [
        Shift(ERROR_RATE, settle, factor=rng.uniform(0.85, 1.15), ramp=60.0),
        Shift(LATENCY, settle, factor=rng.uniform(0.95, 1.08), ramp=60.0),
    ]
    if rng.random() < 0.5:
        # Fresh pods: cold caches and JIT make the p99 a little worse for a minute or so.
        warm = deployed_at + rng.uniform(5.0, 30.0)
        effects.append(
            Shift(LATENCY, warm, warm + rng.uniform(45.0, 90.0), factor=rng.uniform(1.05, 1.2))
        )
    return Release(effects)


def bad_release(
    fleet: Fleet,
    service: str,
    deployed_at: float,
    *,
    kind: BadKind = "errors",
    onset: tuple[float, float] = (30.0, 60.0),
    until: float = math.inf,
) -> Release:
    """A bad release: 8-15 % errors and/or p99 x2.7-3.5, sustained from 30-60 s after deploy.

    The alertmanager fires a critical ``HighErrorRate`` (``HighLatencyP99``) a minute later;
    clients retry, so traffic rises a little. With ``until`` the release is rolled back then,
    and the alerts resolve a minute or two after.
    """
    rng = fleet.rng
    at = deployed_at + rng.uniform(*onset)
    effects: list[Effect] = []
    resolved = until + rng.uniform(60.0, 100.0) if math.isfinite(until) else None
    if kind in ("errors", "errors+latency"):
        effects.append(
            Shift(ERROR_RATE, at, until, level=rng.uniform(0.08, 0.15), ramp=rng.uniform(5, 20))
        )
        fleet.alert(service, "HighErrorRate", at + rng.uniform(55.0, 75.0), resolved_at=resolved)
    if kind in ("latency", "errors+latency"):
        effects.append(
            Shift(LATENCY, at, until, factor=rng.uniform(2.7, 3.5), ramp=rng.uniform(5, 20))
        )
        fleet.alert(service, "HighLatencyP99", at + rng.uniform(55.0, 75.0), resolved_at=resolved)
    effects.append(Shift(REQUEST_RATE, at, until, factor=rng.uniform(1.03, 1.2), ramp=30.0))
    return Release(effects, onset=at)


def blip(fleet: Fleet, deployed_at: float) -> Shift:
    """Errors at 8-15 % for exactly the three samples of one 30-s window, mid-bake."""
    rng = fleet.rng
    when = deployed_at + rng.uniform(90.0, 420.0)
    window = math.ceil(when / WINDOW_SECONDS) * WINDOW_SECONDS
    return Shift(ERROR_RATE, window, window + WINDOW_SECONDS, level=rng.uniform(0.08, 0.15))


def slow_burn(fleet: Fleet, profile: ServiceProfile, deployed_at: float) -> Release:
    """Errors climb steadily from the deploy, crossing 5 % after about five minutes."""
    rng = fleet.rng
    at = deployed_at + rng.uniform(20.0, 40.0)
    to_five_percent = rng.uniform(270.0, 330.0)
    per_second = (0.05 - profile.error_rate) / to_five_percent
    # HighErrorRate is "error_rate > 5 % for 1m".
    fleet.alert(profile.name, "HighErrorRate", at + to_five_percent + rng.uniform(55.0, 75.0))
    return Release([Climb(ERROR_RATE, at, per_second, ceiling=rng.uniform(0.12, 0.16))], onset=at)


def traffic_drain(fleet: Fleet, service: str, deployed_at: float) -> Release:
    """The load balancer drains the service: traffic falls to ~0, then what is left fails.

    The drain takes a few seconds and the errors rise only after it, so every sample with
    elevated errors already has the drained traffic beside it.
    """
    rng = fleet.rng
    at = deployed_at + rng.uniform(30.0, 60.0)
    drained = at + rng.uniform(2.0, 5.0)
    effects: list[Effect] = [
        Shift(REQUEST_RATE, at, level=rng.uniform(0.05, 0.3), ramp=drained - at),
        Shift(ERROR_RATE, drained, level=rng.uniform(0.3, 0.6), ramp=rng.uniform(5.0, 10.0)),
    ]
    fleet.alert(service, "HighErrorRate", drained + rng.uniform(55.0, 75.0))
    return Release(effects, onset=at)


def flapping_alert(fleet: Fleet, service: str, start: float, end: float) -> None:
    """A critical alert firing for ~20 s then resolving, again and again, every ~40 s."""
    rng = fleet.rng
    at, alert_id = start, None
    while at + 23.0 < end:  # each firing resolves before ``end``
        alert_id = fleet.alert(
            service,
            "KubePodNotReady",
            at,
            resolved_at=at + rng.uniform(17.0, 23.0),
            alert_id=alert_id,
        )
        at += rng.uniform(37.0, 43.0)
