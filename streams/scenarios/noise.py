"""A realistic-noise corpus (issue 11): the telemetry that real services have and the clean
scenarios do not, healthy and bad, labelled.

Each recipe records the deployed service with one kind of real-world noise, a deploy, the bake
and healthy neighbours, like the recipes of ``catalog.py``. The labels are what a careful
operator wants; docs/scenarios.md ("Realistic noise") lists each recipe and what today's rules
do with it.

- heavy-tailed p99 **bursts** the service has every 12-30 minutes (2.3-3.2x for 65-95 s), with
  2-2.5 hours of history so that a long memory can know them, and one inside the bake;
- frequent **heavy-tailed** (Pareto) p99 spikes on a noisy service;
- a **daily cycle** at its steepest during the bake (traffic +10-20 %, p99 following the load);
- **quantised** values (a p99 read off 50-ms histogram buckets);
- **low-traffic** error rates (2.0-2.6 req/s: one or two errors are a large ratio);
- a **pre-deploy** level shift (60-110 s before the deploy) or trend (from 6-8 minutes before);
- an **improvement** (p99 falls while traffic dips);
- a **sustained moderate** regression (p99 x1.5-1.8) on a noisy low-traffic p99, and a bad
  release on a bursty one;
- what a held-out real series has and the above lack: **gaps** (3-6 % of scrapes lost, and a
  dark spell of 20-40 s in the bake), **heavy-tailed traffic** (Pareto bursts of 1.3-4x for
  20-60 s, the p99 following the load), and services at **other scales** (a 4-15 ms p99 read
  off 1-ms buckets at 2,000-20,000 req/s, or a quiet 5-20 req/s one), healthy and bad.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rollguard.streams.scenarios.fleet import SERVICE_POOL, Fleet
from rollguard.streams.scenarios.releases import (
    BAKE_SECONDS,
    BadKind,
    bad_release,
    healthy_release,
)
from rollguard.streams.scenarios.signals import (
    ERROR_RATE,
    LATENCY,
    METRICS,
    REQUEST_RATE,
    Climb,
    Effect,
    ProfileOverrides,
    ServiceProfile,
    Shift,
    Silence,
)

__all__ = ["NOISE_RECIPES"]

HISTORY = (1260.0, 1500.0)  # 21-25 min: the 20-window baseline is full
LONG_HISTORY = (7200.0, 9000.0)  # 2-2.5 h: several routine bursts before the deploy
AFTER_BAKE = (150.0, 210.0)

Observe = Callable[[str, float], float]


def _record(
    fleet: Fleet,
    effects: Callable[[ServiceProfile, float], list[Effect]],
    *,
    history: tuple[float, float] = HISTORY,
    profile: ProfileOverrides | None = None,
    observe: Observe | None = None,
    missing_rate: float = 0.01,
    silences: Callable[[float], list[Silence]] | None = None,
) -> tuple[str, float]:
    """History, one deploy, the service's ``effects(profile, deployed_at)``, two neighbours;
    ``missing_rate`` of its scrapes lost and its exporters dark in ``silences(deployed_at)``."""
    rng = fleet.rng
    service = fleet.pick_services(1, SERVICE_POOL)[0]
    deployed_at = fleet.start + rng.uniform(*history)
    end = deployed_at + BAKE_SECONDS + rng.uniform(*AFTER_BAKE)
    svc = fleet.profile(service, **(profile or {}))
    version, previous = fleet.versions()
    deployment = fleet.deploy(service, deployed_at, version, previous)
    fleet.telemetry(
        svc, fleet.start, end, effects=effects(svc, deployed_at), observe=observe,
        missing_rate=missing_rate, silences=silences(deployed_at) if silences else (),
    )  # fmt: skip
    fleet.neighbours(fleet.start, end, 2)
    return deployment, deployed_at


def _healthy(fleet: Fleet, deployed_at: float) -> list[Effect]:
    return list(healthy_release(fleet, deployed_at).effects)


def _bursts(fleet: Fleet, start: float, until: float, every: tuple[float, float]) -> list[Effect]:
    """Routine p99 bursts (2.3-3.2x for 65-95 s) every ``every`` seconds."""
    rng = fleet.rng
    out: list[Effect] = []
    t = start + rng.uniform(*every) * rng.random()
    while t < until:
        out.append(Shift(LATENCY, t, t + rng.uniform(65.0, 95.0), factor=rng.uniform(2.3, 3.2)))
        t += rng.uniform(*every)
    return out


# -- healthy: what the service always does ------------------------------------------------


def routine_burst(fleet: Fleet) -> None:
    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        out = _bursts(fleet, fleet.start, deployed_at - 300.0, (720.0, 1800.0))
        at = deployed_at + fleet.rng.uniform(120.0, 420.0)  # this one lands in the bake
        out.append(Shift(LATENCY, at, at + fleet.rng.uniform(65.0, 95.0),
                         factor=fleet.rng.uniform(2.3, 3.2)))  # fmt: skip
        return _healthy(fleet, deployed_at) + out

    deployment, _ = _record(fleet, effects, history=LONG_HISTORY)
    fleet.expect(deployment, "pass")


def heavy_tail(fleet: Fleet) -> None:
    rng = fleet.rng

    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        out: list[Effect] = []
        t = fleet.start + rng.uniform(30.0, 240.0)
        end = deployed_at + BAKE_SECONDS + 300.0
        while t < end:
            # Pareto(2.5) excess: most spikes are small, a few are 2-3x, for 10-25 s.
            factor = min(3.0, 1.0 + 0.25 * rng.paretovariate(2.5))
            out.append(Shift(LATENCY, t, t + rng.uniform(10.0, 25.0), factor=factor))
            t += rng.uniform(120.0, 360.0)
        return _healthy(fleet, deployed_at) + out

    deployment, _ = _record(fleet, effects, profile={"noisy": 1.8})
    fleet.expect(deployment, "pass")


def daily_cycle(fleet: Fleet) -> None:
    rng = fleet.rng

    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        # The morning ramp: from ~5 min before the deploy, traffic climbs 10-20 % over 15 min
        # and the p99 follows the load (+6-12 %).
        at = deployed_at - rng.uniform(240.0, 360.0)
        rise = rng.uniform(0.10, 0.20) * svc.traffic
        slow = rng.uniform(0.06, 0.12) * svc.latency_ms
        return _healthy(fleet, deployed_at) + [
            Climb(REQUEST_RATE, at, rise / 900.0, ceiling=svc.traffic * 1.6),
            Climb(LATENCY, at, slow / 900.0, ceiling=svc.latency_ms * 1.5),
        ]

    deployment, _ = _record(fleet, effects)
    fleet.expect(deployment, "pass")


def quantised(fleet: Fleet) -> None:
    def observe(metric: str, value: float) -> float:
        return float(50 * max(1, round(value / 50.0))) if metric == LATENCY else value

    deployment, _ = _record(fleet, lambda svc, at: _healthy(fleet, at), observe=observe)
    fleet.expect(deployment, "pass")


def low_traffic_errors(fleet: Fleet) -> None:
    # 2.0-2.6 req/s: with the daily cycle (+-25 %) and the wander, the bake's mean traffic
    # stays above the policy's min_traffic (1.0), under which LOW_TRAFFIC is the contract's
    # answer (1.3-1.7 req/s dipped under it on some seeds: a label error, not a rule's).
    profile: ProfileOverrides = {
        "traffic": round(fleet.rng.uniform(2.0, 2.6), 2),
        "error_rate": round(fleet.rng.uniform(0.003, 0.005), 4),
        "error_bumps": False,
    }
    deployment, _ = _record(fleet, lambda svc, at: _healthy(fleet, at), profile=profile)
    fleet.expect(deployment, "pass")


def improvement(fleet: Fleet) -> None:
    rng = fleet.rng

    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        at = deployed_at + rng.uniform(30.0, 60.0)
        return [
            Shift(LATENCY, at, factor=rng.uniform(0.55, 0.7), ramp=rng.uniform(10.0, 30.0)),
            Shift(REQUEST_RATE, at, factor=rng.uniform(0.75, 0.85), ramp=30.0),
        ]

    deployment, _ = _record(fleet, effects)
    fleet.expect(deployment, "pass")


# -- the departure began before the deploy --------------------------------------------------


def pre_deploy_shift(fleet: Fleet) -> None:
    rng = fleet.rng

    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        at = deployed_at - rng.uniform(60.0, 110.0)
        if rng.random() < 0.5:
            shift = Shift(LATENCY, at, factor=rng.uniform(2.6, 3.2), ramp=rng.uniform(5.0, 20.0))
        else:
            shift = Shift(ERROR_RATE, at, level=rng.uniform(0.08, 0.15), ramp=rng.uniform(5, 20))
        return _healthy(fleet, deployed_at) + [shift]

    deployment, _ = _record(fleet, effects)
    fleet.expect(deployment, "approval", ["BASELINE_UNSTABLE"])


def pre_deploy_trend(fleet: Fleet) -> None:
    rng = fleet.rng

    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        at = deployed_at - rng.uniform(360.0, 480.0)
        to_triple = rng.uniform(600.0, 800.0)  # p99 x3 after 10-13 min, then holds
        return _healthy(fleet, deployed_at) + [
            Climb(LATENCY, at, 2.0 * svc.latency_ms / to_triple, ceiling=3.2 * svc.latency_ms)
        ]

    deployment, _ = _record(fleet, effects)
    fleet.expect(deployment, "approval", ["BASELINE_UNSTABLE"])


# -- bad releases on noisy series -----------------------------------------------------------


def moderate_regression(fleet: Fleet) -> None:
    rng = fleet.rng
    onset: list[float] = []

    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        onset.append(deployed_at + rng.uniform(30.0, 60.0))
        return [
            Shift(LATENCY, onset[0], factor=rng.uniform(1.5, 1.8), ramp=rng.uniform(10.0, 30.0))
        ]

    # A p99 over 3-4.5 req/s is little more than the slowest of a few requests: very noisy.
    profile: ProfileOverrides = {"traffic": round(rng.uniform(3.0, 4.5), 2), "noisy": 1.6}
    deployment, _ = _record(fleet, effects, profile=profile)
    # Below the written 2x limit most of the time: not for automation, but a human must look.
    fleet.expect(deployment, "approval", onset=onset[0])


def bursty_bad_deploy(fleet: Fleet) -> None:
    rng = fleet.rng
    onset: list[float] = []

    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        out = _bursts(fleet, fleet.start, deployed_at - 300.0, (720.0, 1800.0))
        kinds: tuple[BadKind, ...] = ("errors", "errors+latency", "latency")
        kind = rng.choice(kinds)
        bad = bad_release(fleet, svc.name, deployed_at, kind=kind)
        onset.append(bad.onset if bad.onset is not None else deployed_at)
        return out + bad.effects

    deployment, _ = _record(fleet, effects, history=LONG_HISTORY, profile={"noisy": 1.5})
    fleet.expect(deployment, "rollback", ["THRESHOLD_BREACH"], onset=onset[0])


# -- what real series have besides: gaps, heavy-tailed traffic, other scales ---------------


def gappy(fleet: Fleet) -> None:
    rng = fleet.rng
    # Coverage stays above the policy's min_coverage (0.8) over the bake: below it the
    # contract's answer is INSUFFICIENT_EVIDENCE, not a pass.
    missing = rng.uniform(0.03, 0.06)

    def dark(deployed_at: float) -> list[Silence]:
        at = deployed_at + rng.uniform(90.0, 480.0)
        return [Silence(METRICS, at, at + rng.uniform(20.0, 40.0))]

    deployment, _ = _record(
        fleet, lambda svc, at: _healthy(fleet, at), missing_rate=missing, silences=dark
    )
    fleet.expect(deployment, "pass")


def traffic_spikes(fleet: Fleet) -> None:
    rng = fleet.rng

    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        out: list[Effect] = []
        t = fleet.start + rng.uniform(60.0, 300.0)
        end = deployed_at + BAKE_SECONDS + 300.0
        while t < end:
            # Pareto(2) excess: a crawler, a retry storm upstream, a marketing push.
            factor = min(4.0, 1.3 + 0.3 * rng.paretovariate(2.0))
            out.append(Shift(REQUEST_RATE, t, t + rng.uniform(20.0, 60.0), factor=factor))
            t += rng.uniform(180.0, 480.0)
        return _healthy(fleet, deployed_at) + out

    deployment, _ = _record(fleet, effects)
    fleet.expect(deployment, "pass")


def _scaled(fleet: Fleet) -> tuple[ProfileOverrides, Observe | None]:
    """A service at another scale: a fast cache (a 4-15 ms p99 on 1-ms buckets, 2,000-20,000
    req/s: errors counted on 100x the usual requests) or a quiet API (5-20 req/s)."""
    rng = fleet.rng
    if rng.random() < 0.5:
        profile: ProfileOverrides = {
            "latency_ms": round(rng.uniform(4.0, 15.0), 2),
            "traffic": round(math.exp(rng.uniform(math.log(2000.0), math.log(20000.0))), 1),
        }

        def observe(metric: str, value: float) -> float:
            return float(max(1, round(value))) if metric == LATENCY else value

        return profile, observe
    return {"latency_ms": round(rng.uniform(150.0, 400.0), 1),
            "traffic": round(rng.uniform(5.0, 20.0), 2)}, None  # fmt: skip


def scale(fleet: Fleet) -> None:
    profile, observe = _scaled(fleet)
    deployment, _ = _record(
        fleet, lambda svc, at: _healthy(fleet, at), profile=profile, observe=observe
    )
    fleet.expect(deployment, "pass")


def scale_bad_deploy(fleet: Fleet) -> None:
    rng = fleet.rng
    profile, observe = _scaled(fleet)
    onset: list[float] = []

    def effects(svc: ServiceProfile, deployed_at: float) -> list[Effect]:
        kinds: tuple[BadKind, ...] = ("errors", "errors+latency", "latency")
        bad = bad_release(fleet, svc.name, deployed_at, kind=rng.choice(kinds))
        onset.append(bad.onset if bad.onset is not None else deployed_at)
        return bad.effects

    deployment, _ = _record(fleet, effects, profile=profile, observe=observe)
    fleet.expect(deployment, "rollback", ["THRESHOLD_BREACH"], onset=onset[0])


#: (name, recipe, summary) in the order of docs/scenarios.md.
NOISE_RECIPES: tuple[tuple[str, Callable[[Fleet], None], str], ...] = (
    ("noise-routine-burst", routine_burst,
     "good release; the p99 bursts 2.3-3.2x every 12-30 min, once in the bake"),
    ("noise-heavy-tail", heavy_tail, "good release; frequent Pareto p99 spikes, noisy service"),
    ("noise-daily-cycle", daily_cycle, "good release on the morning ramp: traffic +10-20 %"),
    ("noise-quantised", quantised, "good release; p99 read off 50-ms histogram buckets"),
    ("noise-low-traffic-errors", low_traffic_errors,
     "good release of a 1.3-1.7 req/s service: two errors are a big ratio"),
    ("noise-improvement", improvement, "the release makes p99 x0.55-0.7 while traffic dips"),
    ("noise-pre-deploy-shift", pre_deploy_shift,
     "p99 x3 or errors 8-15 % from 60-110 s BEFORE a good release"),
    ("noise-pre-deploy-trend", pre_deploy_trend,
     "p99 climbing since 6-8 min before a good release"),
    ("noise-moderate-regression", moderate_regression,
     "p99 x1.5-1.8 sustained on a noisy, quiet (3-4.5 req/s) service"),
    ("noise-bursty-bad-deploy", bursty_bad_deploy,
     "bad release of a service with routine p99 bursts"),
    ("noise-gappy", gappy, "good release; 3-6 % of scrapes lost and a 20-40 s dark spell"),
    ("noise-traffic-spikes", traffic_spikes,
     "good release; heavy-tailed traffic bursts 1.3-4x for 20-60 s every 3-8 min"),
    ("noise-scale", scale,
     "good release of a 4-15 ms / 2k-20k req/s service or a slow 5-20 req/s one"),
    ("noise-scale-bad-deploy", scale_bad_deploy,
     "bad release of a service at another scale (errors and/or p99 x2.7-3.5)"),
)  # fmt: skip
