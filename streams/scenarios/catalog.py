"""The labelled scenarios: one recipe each, and ``generate`` to run one for a seed.

Every recipe records a fleet (the deployed service and 2-3 healthy neighbours, all publishing
every 10 s), ~21-25 minutes of history, the deploy, and the bake period plus two minutes or
more, and says what a careful operator wants for each deployment (DESIGN §1, §9). The table in
docs/scenarios.md explains each one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rollguard.streams.scenarios.fleet import DEPLOYER, SERVICE_POOL, Fleet, Scenario
from rollguard.streams.scenarios.noise import NOISE_RECIPES
from rollguard.streams.scenarios.releases import (
    BAKE_SECONDS,
    STALE_ONSET,
    BadKind,
    Release,
    bad_release,
    blip,
    flapping_alert,
    healthy_release,
    slow_burn,
    traffic_drain,
)
from rollguard.streams.scenarios.signals import (
    ERROR_RATE,
    LATENCY,
    METRICS,
    ProfileOverrides,
    ServiceProfile,
    Shift,
    Silence,
)

__all__ = ["DEFAULT_START", "NOISE_SCENARIOS", "SCENARIOS", "generate", "generate_all"]

DEFAULT_START = datetime(2026, 11, 25, 6, 0, tzinfo=UTC).timestamp()  # 1795586400
# The pre-authorisation chg-2026-311 in config/policy.yaml is valid through 2027-01-31.
PREAUTH_END = datetime(2027, 2, 1, tzinfo=UTC).timestamp()
AFTER_PREAUTH = datetime(2027, 2, 15, 6, 0, tzinfo=UTC).timestamp()
PREAUTH_RULE = "chg-2026-311"

HISTORY = (1260.0, 1500.0)  # 21-25 min before the deploy: the 20-window baseline is full
AFTER_BAKE = (150.0, 210.0)  # telemetry continues this long after the bake ends
COLD_HISTORY = (170.0, 190.0)  # a brand-new service: ~3 minutes, six windows
BUSY_POOL: tuple[str, ...] = (*SERVICE_POOL, "checkout")
THRESHOLD_BREACH = "THRESHOLD_BREACH"


@dataclass(frozen=True)
class Timeline:
    start: float
    deploy: float
    end: float


ReleaseFn = Callable[[Fleet, ServiceProfile, float], Release]


def _deploy_one(
    fleet: Fleet,
    service: str,
    release: ReleaseFn,
    *,
    profile: ProfileOverrides | None = None,
    rollback_target: str | None = "previous",
    actor: str = DEPLOYER,
    change: dict[str, Any] | None = None,
    history: tuple[float, float] | None = None,
    neighbours: int | None = None,
) -> tuple[str, Timeline, ServiceProfile]:
    """The common shape: history, one deploy of ``service``, its release, healthy neighbours."""
    rng = fleet.rng
    deployed_at = fleet.start + rng.uniform(*HISTORY)
    timeline = Timeline(
        fleet.start, deployed_at, deployed_at + BAKE_SECONDS + rng.uniform(*AFTER_BAKE)
    )
    fleet.claim(service)
    svc = fleet.profile(service, **(profile or {}))
    version, previous = fleet.versions()
    deployment = fleet.deploy(
        service,
        deployed_at,
        version,
        previous,
        rollback_target=rollback_target,
        actor=actor,
        change=change,
    )
    effects = release(fleet, svc, deployed_at)
    # A service with a short ``history`` (seconds before the deploy) is brand new.
    first = deployed_at - rng.uniform(*history) if history else fleet.start
    fleet.telemetry(svc, first, timeline.end, effects=effects.effects, silences=effects.silences)
    fleet.neighbours(fleet.start, timeline.end, neighbours)
    return deployment, timeline, svc


def _bad(kind: BadKind = "errors", onset: tuple[float, float] = (30.0, 60.0)) -> ReleaseFn:
    def release(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
        return bad_release(fleet, svc.name, deployed_at, kind=kind, onset=onset)

    return release


def _bad_any(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
    kind: BadKind = fleet.rng.choice(("errors", "errors", "errors+latency", "latency"))
    return bad_release(fleet, svc.name, deployed_at, kind=kind)


def _bad_errors(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
    kind: BadKind = fleet.rng.choice(("errors", "errors+latency"))
    return bad_release(fleet, svc.name, deployed_at, kind=kind)


def _bad_stale(recovers_after: tuple[float, float] | None = None) -> ReleaseFn:
    """A bad release whose latency exporter dies with the deploy (and maybe comes back)."""

    def release(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
        bad = bad_release(fleet, svc.name, deployed_at, onset=STALE_ONSET)
        end = deployed_at + fleet.rng.uniform(*recovers_after) if recovers_after else math.inf
        bad.silences.append(Silence((LATENCY,), deployed_at, end))
        return bad

    return release


def _healthy(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
    return healthy_release(fleet, deployed_at)


def _blocked(
    reason: str,
    *,
    service: str | None = None,
    release: ReleaseFn | None = None,
    **deploy_options: Any,
) -> Callable[[Fleet], None]:
    """A bad release that one blocker keeps from automation: approval, naming ``reason``."""

    def recipe(fleet: Fleet) -> None:
        name = service or fleet.pick_services(1)[0]
        deployment, _, _ = _deploy_one(fleet, name, release or _bad_errors, **deploy_options)
        fleet.expect(deployment, "approval", [reason])

    return recipe


# -- the recipes ------------------------------------------------------------------------------


def healthy(fleet: Fleet) -> None:
    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1, BUSY_POOL)[0], _healthy)
    fleet.expect(deployment, "pass")


def bad_deploy(fleet: Fleet) -> None:
    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1, BUSY_POOL)[0], _bad_any)
    fleet.expect(deployment, "rollback", [THRESHOLD_BREACH])


def one_window_blip(fleet: Fleet) -> None:
    def release(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
        good = healthy_release(fleet, deployed_at)
        good.effects.append(blip(fleet, deployed_at))
        return good

    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1)[0], release)
    fleet.expect(deployment, "pass")


def slow_burn_recipe(fleet: Fleet) -> None:
    def release(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
        return slow_burn(fleet, svc, deployed_at)

    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1)[0], release)
    fleet.expect(deployment, "rollback", [THRESHOLD_BREACH])


def stale_exporter(fleet: Fleet) -> None:
    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1)[0], _bad_stale())
    fleet.expect(deployment, "approval", ["TELEMETRY_STALE"])


def silent_bake(fleet: Fleet) -> None:
    def release(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
        # The new pods never register with Prometheus: nothing at all after the deploy.
        return Release(silences=[Silence(METRICS, deployed_at)])

    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1)[0], release)
    fleet.expect(deployment, "approval", ["INSUFFICIENT_EVIDENCE"])


def low_traffic(fleet: Fleet) -> None:
    profile: ProfileOverrides = {
        "traffic": round(fleet.rng.uniform(0.15, 0.25), 3),
        "error_rate": 0.0,
        "error_bumps": False,
    }
    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1)[0], _healthy, profile=profile)
    fleet.expect(deployment, "approval", ["LOW_TRAFFIC"])


def flapping_alerts(fleet: Fleet) -> None:
    service = fleet.pick_services(1)[0]
    deployment, timeline, _ = _deploy_one(fleet, service, _bad("errors"))
    # A critical alert of the service has been flapping for a few minutes when the release
    # lands, and goes on flapping: whenever the release's breach is judged, the alert is
    # evidently flapping (>= flap_limit flips in the last flap_window_seconds).
    began = timeline.deploy - fleet.rng.uniform(150.0, 210.0)
    flapping_alert(fleet, service, began, timeline.end)
    fleet.expect(deployment, "approval", ["ALERT_FLAPPING"])


def conflicting_sources(fleet: Fleet) -> None:
    deployment, timeline, svc = _deploy_one(fleet, fleet.pick_services(1)[0], _bad("errors"))
    # Datadog's agent measures the same error rate all along and never sees the jump.
    phase = svc.scrape_phase + 3.0 if svc.scrape_phase <= 5.0 else svc.scrape_phase - 3.0
    fleet.telemetry(
        svc, timeline.start, timeline.end, metrics=(ERROR_RATE,), source="datadog", phase=phase
    )
    fleet.expect(deployment, "approval", ["SIGNALS_CONFLICT"])


def traffic_drain_recipe(fleet: Fleet) -> None:
    def release(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
        return traffic_drain(fleet, svc.name, deployed_at)

    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1)[0], release)
    fleet.expect(deployment, "approval", ["SIGNALS_CONFLICT"])


def fleet_wide(fleet: Fleet) -> None:
    rng = fleet.rng
    cause: dict[str, float] = {}

    def release(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
        # A shared dependency fails shortly after the deploy; it hits everyone at once.
        cause["at"] = deployed_at + rng.uniform(30.0, 60.0)
        return _shared_cause(fleet, svc, cause["at"])

    deployment, timeline, _ = _deploy_one(fleet, fleet.pick_services(1)[0], release, neighbours=2)
    for name in fleet.pick_services(3):
        hit = fleet.profile(name)
        effects = _shared_cause(fleet, hit, cause["at"]).effects
        fleet.telemetry(hit, timeline.start, timeline.end, effects=effects)
    fleet.expect(deployment, "approval", ["FLEET_WIDE_ANOMALY"])


def _shared_cause(fleet: Fleet, svc: ServiceProfile, at: float) -> Release:
    rng = fleet.rng
    onset = at + rng.uniform(0.0, 8.0)
    fleet.alert(svc.name, "HighErrorRate", onset + rng.uniform(55.0, 75.0))
    return Release(
        [Shift(ERROR_RATE, onset, level=rng.uniform(0.08, 0.15), ramp=rng.uniform(5.0, 15.0))],
        onset=onset,
    )


def noisy_baseline(fleet: Fleet) -> None:
    def release(fleet: Fleet, svc: ServiceProfile, deployed_at: float) -> Release:
        rng = fleet.rng
        bad = bad_release(fleet, svc.name, deployed_at)
        # Mostly ~0.1 % errors, but a burst of ~5 % for 20-40 s every few minutes; at least
        # four of them inside the 20 windows of the baseline, so its CV is well above 1.
        bursts = [deployed_at - 600.0 + 150.0 * i + rng.uniform(10.0, 120.0) for i in range(4)]
        t = fleet.start + rng.uniform(60.0, 180.0)
        while t < deployed_at - 660.0:
            bursts.append(t)
            t += rng.uniform(150.0, 300.0)
        for at in sorted(bursts):
            bad.effects.insert(
                0,
                Shift(ERROR_RATE, at, at + rng.uniform(20.0, 40.0), level=rng.uniform(0.03, 0.06)),
            )
        return bad

    profile: ProfileOverrides = {"error_rate": 0.001, "error_bumps": False}
    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1)[0], release, profile=profile)
    fleet.expect(deployment, "approval", ["BASELINE_UNSTABLE"])


def cold_start(fleet: Fleet) -> None:
    deployment, _, _ = _deploy_one(
        fleet, fleet.pick_services(1)[0], _bad_errors, history=COLD_HISTORY
    )
    fleet.expect(deployment, "approval", ["MODEL_COLD"])


def preauthorized(fleet: Fleet) -> None:
    deployment, _, _ = _deploy_one(fleet, "checkout", _bad_stale())
    fleet.expect(
        deployment, "rollback", [THRESHOLD_BREACH], authority=f"preauthorized:{PREAUTH_RULE}"
    )


def preauth_expired(fleet: Fleet) -> None:
    deployment, _, _ = _deploy_one(fleet, "checkout", _bad_stale())
    fleet.expect(deployment, "approval", ["TELEMETRY_STALE"])


def approval_superseded(fleet: Fleet) -> None:
    release = _bad_stale(recovers_after=(170.0, 200.0))
    deployment, _, _ = _deploy_one(fleet, fleet.pick_services(1)[0], release)
    fleet.expect(deployment, "rollback", ["APPROVAL_SUPERSEDED"])


def budget_exhausted(fleet: Fleet) -> None:
    """Two bad deploys of one service within the hour: the second finds the budget spent."""
    rng = fleet.rng
    service = fleet.pick_services(1)[0]
    svc = fleet.profile(service)
    first_at = fleet.start + rng.uniform(*HISTORY)
    # The executor restores the rollback target ~5 minutes in; errors stop with it.
    restored_at = first_at + rng.uniform(270.0, 330.0)
    # The second deploy waits until a clean 20-window baseline has built up again.
    second_at = restored_at + rng.uniform(1200.0, 1380.0)
    end = second_at + BAKE_SECONDS + rng.uniform(*AFTER_BAKE)

    bad_version, good_version = fleet.versions()
    first = fleet.deploy(service, first_at, bad_version, good_version)
    fleet.deploy(
        service,
        restored_at,
        bad_version,
        good_version,
        status="rolled_back",
        deployment_id=first,
    )
    fixed_version = _next_patch(bad_version)
    second = fleet.deploy(service, second_at, fixed_version, good_version)
    effects = bad_release(fleet, service, first_at, until=restored_at).effects
    effects += bad_release(fleet, service, second_at).effects
    fleet.telemetry(svc, fleet.start, end, effects=effects)
    fleet.neighbours(fleet.start, end)
    fleet.expect(first, "rollback", [THRESHOLD_BREACH])
    fleet.expect(second, "approval", ["RATE_LIMITED"])


def _next_patch(version: str) -> str:
    head, _, patch = version.rpartition(".")
    return f"{head}.{int(patch) + 1}"


# -- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    name: str
    build: Callable[[Fleet], None]
    summary: str
    default_start: float = DEFAULT_START
    valid_start: Callable[[float], bool] | None = None
    start_rule: str = ""


def _before_preauth_end(start: float) -> bool:
    # The whole recording, at most ~40 minutes, must fall inside the rule's validity.
    return start + 3600.0 < PREAUTH_END


def _after_preauth_end(start: float) -> bool:
    return start >= PREAUTH_END


_RECIPES: tuple[Recipe, ...] = (
    Recipe("healthy", healthy, "a good release; realistic noise, no breach"),
    Recipe("bad-deploy", bad_deploy, "errors 8-15 % and/or p99 x3 from 30-60 s after deploy"),
    Recipe("one-window-blip", one_window_blip, "one 30-s window of 8-15 % errors mid-bake"),
    Recipe("slow-burn", slow_burn_recipe, "errors climb steadily, crossing 5 % after ~5 min"),
    Recipe(
        "no-rollback-target",
        _blocked("NO_ROLLBACK_TARGET", rollback_target=None),
        "bad release whose deploy names no rollback target",
    ),
    Recipe(
        "data-writes",
        _blocked("DATA_WRITES", change={"data_writes": True}),
        "bad release that writes data",
    ),
    Recipe(
        "schema-migration",
        _blocked("SCHEMA_MIGRATION", change={"schema_migration": True}),
        "bad release with a schema migration",
    ),
    Recipe(
        "credential-rotation",
        _blocked("CREDENTIAL_ROTATION", change={"credential_rotation": True}),
        "bad release that rotated credentials",
    ),
    Recipe(
        "session-invalidation",
        _blocked("SESSION_INVALIDATION", change={"session_invalidation": True}),
        "bad release that invalidated sessions",
    ),
    Recipe(
        "shared-infra",
        _blocked("SHARED_INFRA", change={"shared_infra": ["postgres-main"]}),
        "bad release that depends on shared infrastructure (postgres-main)",
    ),
    Recipe(
        "shared-tier",
        _blocked(
            "BLAST_RADIUS",
            service="edge-gateway",
            profile={"traffic": 280.0},
            release=_bad("errors+latency"),
        ),
        "bad release of edge-gateway (tier: shared)",
    ),
    Recipe(
        "approval-only-service",
        _blocked("POLICY_REQUIRES_APPROVAL", service="payments"),
        "bad release of payments (auto_rollback: false)",
    ),
    Recipe(
        "same-identity",
        _blocked("SAME_IDENTITY", actor="svc:rollguard"),
        "bad release deployed by svc:rollguard, the rollback authority itself",
    ),
    Recipe(
        "stale-exporter",
        stale_exporter,
        "bad release; the latency exporter dies with the deploy",
    ),
    Recipe("silent-bake", silent_bake, "no telemetry at all from the service after the deploy"),
    Recipe("low-traffic", low_traffic, "clean release of a service serving ~0.2 req/s"),
    Recipe(
        "flapping-alerts",
        flapping_alerts,
        "bad release; a critical alert flips firing/resolved every ~40 s",
    ),
    Recipe(
        "conflicting-sources",
        conflicting_sources,
        "prometheus says ~10 % errors, datadog says ~0.4 %",
    ),
    Recipe(
        "traffic-drain",
        traffic_drain_recipe,
        "traffic drains to ~0 req/s while errors spike",
    ),
    Recipe("fleet-wide", fleet_wide, "four services breach at once: a shared cause"),
    Recipe(
        "noisy-baseline",
        noisy_baseline,
        "bad release on a service whose error baseline bursts (CV > 1)",
    ),
    Recipe("cold-start", cold_start, "bad release of a service with ~3 minutes of history"),
    Recipe(
        "preauthorized",
        preauthorized,
        "checkout bad release with a dead latency exporter, under chg-2026-311",
        valid_start=_before_preauth_end,
        start_rule="must end before 2027-02-01 (chg-2026-311 expires 2027-01-31)",
    ),
    Recipe(
        "preauth-expired",
        preauth_expired,
        "the same, after chg-2026-311 expired",
        default_start=AFTER_PREAUTH,
        valid_start=_after_preauth_end,
        start_rule="must start on or after 2027-02-01 (chg-2026-311 expired 2027-01-31)",
    ),
    Recipe(
        "approval-superseded",
        approval_superseded,
        "bad release; latency exporter silent ~3 min, then back while the breach holds",
    ),
    Recipe(
        "budget-exhausted",
        budget_exhausted,
        "two bad releases of one service within the hour",
    ),
)

# The realistic-noise corpus (issue 11, streams/scenarios/noise.py): generated by the same
# ``generate``, but not part of SCENARIOS (the acceptance corpus every rule already meets).
_NOISE = tuple(Recipe(name, build, summary) for name, build, summary in NOISE_RECIPES)
RECIPES: dict[str, Recipe] = {r.name: r for r in (*_RECIPES, *_NOISE)}
SCENARIOS: tuple[str, ...] = tuple(r.name for r in _RECIPES)
NOISE_SCENARIOS: tuple[str, ...] = tuple(r.name for r in _NOISE)


def generate(scenario: str, seed: int = 0, start: float | None = None) -> Scenario:
    """Record ``scenario`` for ``seed``: the same arguments always give the same events.

    ``start`` (epoch seconds) is when the recording begins; by default 2026-11-25T06:00:00Z,
    or 2027-02-15T06:00:00Z for ``preauth-expired``.

    >>> s = generate("healthy", seed=3)
    >>> list(s.labels.values()), s.events == generate("healthy", seed=3).events
    (['pass'], True)
    """
    try:
        recipe = RECIPES[scenario]
    except KeyError:
        raise ValueError(f"unknown scenario {scenario!r}; one of: {', '.join(SCENARIOS)}") from None
    begin = recipe.default_start if start is None else float(start)
    if not math.isfinite(begin) or begin < 0:
        raise ValueError(f"start must be finite epoch seconds, got {start!r}")
    if recipe.valid_start is not None and not recipe.valid_start(begin):
        raise ValueError(f"scenario {scenario!r}: start {begin} {recipe.start_rule}")
    fleet = Fleet(scenario, seed, begin)
    recipe.build(fleet)
    return fleet.build(recipe.summary)


def generate_all(seed: int = 0) -> list[Scenario]:
    """Every scenario, in ``SCENARIOS`` order, for one seed."""
    return [generate(name, seed) for name in SCENARIOS]
