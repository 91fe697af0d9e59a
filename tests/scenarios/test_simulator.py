"""The scenario simulator: pure, deterministic, schema-true, and each scenario means what it says.

The first half checks the form of every scenario (DESIGN §3 shapes, §9 replay order, labels for
every deployment). The second half checks, without the decision core, that each scenario's
telemetry really is what its label claims: a healthy release never crosses a policy threshold,
a bad one always does, a noisy baseline is noisy, a stale exporter is stale, and so on. Window
arithmetic here is the contract's (§5: tumbling 30-s windows aligned to the epoch, baseline =
the last 20 windows before the deploy), written out independently of models/.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from rollguard.models.events import InputEvent, ReasonCode
from rollguard.models.policy import Policy, ServicePolicy
from rollguard.streams.simulate import SCENARIOS, Scenario, generate, generate_all

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_mapping(
    yaml.safe_load((REPO / "config" / "policy.yaml").read_text()), version="test"
)
ADAPTER: TypeAdapter[Any] = TypeAdapter(InputEvent)
SEEDS = (0, 1, 2)
WINDOW = 30.0
BAKE = 600.0
LATENESS = 5.0  # out-of-order arrival never exceeds this (the engine allows 10 s)
DEFAULT_START = 1795586400.0  # 2026-11-25T06:00:00Z
PREAUTH_END = 1801440000.0  # 2027-02-01T00:00:00Z

SHAPES = {
    "metric": ["type", "service", "name", "value", "ts", "source"],
    "alert": ["type", "alert_id", "service", "name", "severity", "status", "ts", "source"],
    "deploy": [
        "type",
        "deployment_id",
        "service",
        "version",
        "previous_version",
        "rollback_target",
        "status",
        "actor",
        "ts",
        "environment",
        "change",
    ],
}
CHANGE_KEYS = [
    "data_writes",
    "schema_migration",
    "credential_rotation",
    "session_invalidation",
    "cross_domain_secrets",
    "shared_infra",
]


@pytest.fixture(scope="module")
def corpus() -> dict[tuple[str, int], Scenario]:
    return {(name, seed): generate(name, seed) for name in SCENARIOS for seed in SEEDS}


def cases() -> Iterable[Any]:
    return [pytest.param(n, s, id=f"{n}-{s}") for n in SCENARIOS for s in SEEDS]


# --------------------------------------------------------------------------------------------
# Window arithmetic of DESIGN §5, independent of models/
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricView:
    """Window means of one metric stream of one service, and what the policy makes of them."""

    means: dict[float, float]  # window start -> mean
    baseline: list[float]  # the last 20 window means before the deploy
    observed: list[tuple[float, float]]  # (window start, mean) from the deploy to bake end

    @property
    def baseline_mean(self) -> float:
        return statistics.fmean(self.baseline)

    @property
    def baseline_cv(self) -> float:
        mean = self.baseline_mean
        return statistics.pstdev(self.baseline) / mean if mean else 0.0

    def breaching(self, policy: ServicePolicy, metric: str) -> list[tuple[float, bool]]:
        rule = policy.metrics[metric]
        assert rule.max is not None and rule.max_ratio_to_baseline is not None
        limit = min(rule.max, rule.max_ratio_to_baseline * self.baseline_mean)
        return [(k, mean > limit) for k, mean in self.observed]

    def longest_breach(self, policy: ServicePolicy, metric: str) -> int:
        runs = itertools.groupby(self.breaching(policy, metric), key=lambda kb: kb[1])
        return max((len(list(run)) for breach, run in runs if breach), default=0)


def samples(
    scenario: Scenario, service: str, metric: str, source: str = "prometheus"
) -> list[tuple[float, float]]:
    return sorted(
        (e["ts"], e["value"])
        for e in scenario.events
        if e["type"] == "metric"
        and e["service"] == service
        and e["name"] == metric
        and e["source"] == source
    )


def view(
    scenario: Scenario, deploy: dict[str, Any], metric: str, source: str = "prometheus"
) -> MetricView:
    by_window: dict[float, list[float]] = defaultdict(list)
    for ts, value in samples(scenario, deploy["service"], metric, source):
        by_window[math.floor(ts / WINDOW) * WINDOW].append(value)
    means = {k: statistics.fmean(v) for k, v in sorted(by_window.items())}
    at = deploy["ts"]
    baseline = [m for k, m in means.items() if k + WINDOW <= at][-20:]
    first = math.floor(at / WINDOW) * WINDOW
    observed = [(k, m) for k, m in means.items() if first <= k < at + BAKE]
    return MetricView(means, baseline, observed)


def started(scenario: Scenario) -> list[dict[str, Any]]:
    return scenario.deployments()


def only_deploy(scenario: Scenario) -> dict[str, Any]:
    (deploy,) = started(scenario)
    return deploy


def services(scenario: Scenario) -> set[str]:
    return {e["service"] for e in scenario.events if e["type"] == "metric"}


def policy_of(deploy: dict[str, Any]) -> ServicePolicy:
    return POLICY.for_service(deploy["service"])


# --------------------------------------------------------------------------------------------
# Form: every scenario, seeds 0..2
# --------------------------------------------------------------------------------------------


def test_the_catalogue_is_the_documented_one() -> None:
    assert len(SCENARIOS) == len(set(SCENARIOS)) == 26
    assert SCENARIOS[:2] == ("healthy", "bad-deploy")
    assert [s.name for s in generate_all(0)] == list(SCENARIOS)
    docs = (REPO / "docs" / "scenarios.md").read_text()
    missing = [name for name in SCENARIOS if f"`{name}`" not in docs]
    assert not missing, f"docs/scenarios.md does not describe {missing}"


def test_unknown_scenario_and_bad_start_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'; one of: healthy"):
        generate("nope")
    with pytest.raises(ValueError, match="2027-02-01"):
        generate("preauth-expired", start=DEFAULT_START)
    with pytest.raises(ValueError, match="before 2027-02-01"):
        generate("preauthorized", start=PREAUTH_END)
    with pytest.raises(ValueError, match="finite"):
        generate("healthy", start=math.nan)


@pytest.mark.parametrize("name", SCENARIOS)
def test_same_seed_same_bytes_other_seed_other_bytes(name: str) -> None:
    first = generate(name, seed=7)
    again = generate(name, seed=7)
    other = generate(name, seed=8)
    assert first.to_jsonl() == again.to_jsonl()
    assert json.dumps(first.labels) == json.dumps(again.labels)
    assert first.to_jsonl() != other.to_jsonl()
    assert set(first.labels) != set(other.labels)  # ids name the seed


@pytest.mark.parametrize("name", SCENARIOS)
def test_start_moves_the_recording(name: str) -> None:
    base = generate(name, seed=1)
    shifted = generate(name, seed=1, start=base.start + 86400.0)
    assert shifted.events[0]["ts"] == pytest.approx(base.events[0]["ts"] + 86400.0, abs=11)
    assert min(e["ts"] for e in shifted.events) >= base.start + 86400.0 - 1.0


@pytest.mark.parametrize(("name", "seed"), cases())
def test_events_are_the_contract_shapes_and_validate(
    corpus: dict[tuple[str, int], Scenario], name: str, seed: int
) -> None:
    scenario = corpus[(name, seed)]
    assert scenario.name == name and scenario.seed == seed
    assert scenario.events, "a scenario has events"
    for event in scenario.events:
        assert list(event) == SHAPES[event["type"]], event
        assert isinstance(event["ts"], float) and round(event["ts"], 3) == event["ts"], event
        if event["type"] == "deploy":
            assert list(event["change"]) == CHANGE_KEYS
        if event["type"] == "metric":
            assert math.isfinite(event["value"]) and event["value"] >= 0, event
        record = ADAPTER.validate_python(event)
        assert record.type == event["type"]
        assert record.ts == event["ts"]
    # The JSON Lines dump is what `rollguard replay` reads: every line validates as JSON too.
    for line in scenario.to_jsonl().splitlines():
        ADAPTER.validate_json(line)


@pytest.mark.parametrize(("name", "seed"), cases())
def test_timestamps_are_ordered_up_to_the_allowed_jitter(
    corpus: dict[tuple[str, int], Scenario], name: str, seed: int
) -> None:
    newest = -math.inf
    for event in corpus[(name, seed)].events:
        assert event["ts"] >= newest - LATENESS, f"{event} arrives after {newest}"
        newest = max(newest, event["ts"])


@pytest.mark.parametrize(("name", "seed"), cases())
def test_history_before_and_telemetry_after_each_deploy(
    corpus: dict[tuple[str, int], Scenario], name: str, seed: int
) -> None:
    scenario = corpus[(name, seed)]
    last = max(e["ts"] for e in scenario.events)
    for deploy in started(scenario):
        own = [ts for ts, _ in samples(scenario, deploy["service"], "request_rate")]
        history = deploy["ts"] - own[0]
        if name == "cold-start":
            assert 150 <= history <= 200, "a brand-new service: about three minutes"
        else:
            assert history >= 15 * 60, f"only {history:.0f} s of history"
            assert len(view(scenario, deploy, "error_rate").baseline) == 20
        assert last >= deploy["ts"] + BAKE + 120, "the bake period plus two minutes"


@pytest.mark.parametrize(("name", "seed"), cases())
def test_labels_and_reasons_cover_every_deployment(
    corpus: dict[tuple[str, int], Scenario], name: str, seed: int
) -> None:
    scenario = corpus[(name, seed)]
    ids = [d["deployment_id"] for d in started(scenario)]
    assert len(ids) == len(set(ids)) >= 1
    assert all(i.startswith(f"dep-{name}-{seed}-") for i in ids)
    assert list(scenario.labels) == ids
    assert list(scenario.expected_reasons) == ids
    assert set(scenario.labels.values()) <= {"rollback", "approval", "pass"}
    codes = {c.value for c in ReasonCode}
    for deployment, reasons in scenario.expected_reasons.items():
        assert set(reasons) <= codes, reasons
        if scenario.labels[deployment] != "pass":
            assert reasons, f"{deployment}: a rollback or approval names its reason"
    assert set(scenario.expected_authority) == {
        d for d, label in scenario.labels.items() if label == "rollback"
    }
    # Every deploy-status event refers to a deployment of this scenario.
    for event in scenario.events:
        if event["type"] == "deploy":
            assert event["deployment_id"] in scenario.labels


def test_deployment_ids_are_unique_across_seeds() -> None:
    ids = [d for seed in range(5) for d in generate("budget-exhausted", seed).labels]
    assert len(ids) == len(set(ids)) == 10


@pytest.mark.parametrize(("name", "seed"), cases())
def test_deploy_events_say_what_the_scenario_needs(
    corpus: dict[tuple[str, int], Scenario], name: str, seed: int
) -> None:
    for deploy in started(corpus[(name, seed)]):
        assert deploy["environment"] == "prod"
        expected_actor = "svc:rollguard" if name == "same-identity" else "svc:ci-deployer"
        assert deploy["actor"] == expected_actor
        assert deploy["previous_version"] and deploy["version"] != deploy["previous_version"]
        if name == "no-rollback-target":
            assert deploy["rollback_target"] is None
        else:
            assert deploy["rollback_target"] == deploy["previous_version"]
        change = deploy["change"]
        flags = {k for k in CHANGE_KEYS[:-1] if change[k]}
        expected_flag = name.replace("-", "_")
        assert flags == ({expected_flag} if expected_flag in CHANGE_KEYS[:-1] else set())
        assert change["shared_infra"] == (["postgres-main"] if name == "shared-infra" else [])
        assert deploy["service"] == {
            "shared-tier": "edge-gateway",
            "approval-only-service": "payments",
            "preauthorized": "checkout",
            "preauth-expired": "checkout",
        }.get(name, deploy["service"])
        if name not in (
            "shared-tier",
            "approval-only-service",
            "preauthorized",
            "preauth-expired",
            "healthy",
            "bad-deploy",
        ):
            assert deploy["service"] not in ("checkout", "payments", "edge-gateway")


@pytest.mark.parametrize(("name", "seed"), cases())
def test_a_fleet_of_healthy_neighbours_publishes_all_along(
    corpus: dict[tuple[str, int], Scenario], name: str, seed: int
) -> None:
    scenario = corpus[(name, seed)]
    deployed = {d["service"] for d in started(scenario)}
    first, last = scenario.events[0]["ts"], max(e["ts"] for e in scenario.events)
    healthy_neighbours = 0
    for service in sorted(services(scenario) - deployed):
        times = [ts for ts, _ in samples(scenario, service, "request_rate")]
        assert times[0] - first < 20 and last - times[-1] < 20, f"{service} covers the span"
        errors = [v for _, v in samples(scenario, service, "error_rate")]
        if max(errors) < 0.03:
            healthy_neighbours += 1
    assert 2 <= healthy_neighbours <= 3


@pytest.mark.parametrize(("name", "seed"), cases())
def test_scrapes_every_ten_seconds_with_jitter_and_rare_losses(
    corpus: dict[tuple[str, int], Scenario], name: str, seed: int
) -> None:
    scenario = corpus[(name, seed)]
    deployed = {d["service"] for d in started(scenario)}
    lost = expected = 0
    for service in sorted(services(scenario) - deployed):
        for metric in ("error_rate", "latency_p99_ms", "request_rate"):
            times = [ts for ts, _ in samples(scenario, service, metric)]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert all(8.0 <= g for g in gaps), "no double scrapes; jitter is +-1 s"
            # A sample never crosses a 10-s slot: each 30-s window holds exactly three.
            slots = [math.floor(t / 10) for t in times]
            assert len(slots) == len(set(slots))
            expected += round((times[-1] - times[0]) / 10) + 1
            lost += round((times[-1] - times[0]) / 10) + 1 - len(times)
    assert lost / expected < 0.03, f"{lost}/{expected} samples lost"


def test_out_of_order_arrivals_and_losses_do_happen() -> None:
    late = lost = 0
    for seed in range(5):
        scenario = generate("healthy", seed)
        newest = -math.inf
        for event in scenario.events:
            late += event["ts"] < newest - 1.0
            newest = max(newest, event["ts"])
        for service in services(scenario):
            times = [ts for ts, _ in samples(scenario, service, "latency_p99_ms")]
            lost += sum(1 for a, b in itertools.pairwise(times) if b - a > 15)
    assert late > 0 and lost > 0


def test_generation_is_pure() -> None:
    """No clock, no I/O, no Kafka, no global random state: only seeded random.Random."""
    forbidden_modules = {
        "time",
        "os",
        "io",
        "socket",
        "faust",
        "aiokafka",
        "orjson",
        "pathlib",
        "subprocess",
        "datetime.now",
        "rollguard.streams.simulate_io",
    }
    package = REPO / "streams" / "scenarios"
    for path in [*package.glob("*.py"), REPO / "streams" / "simulate.py"]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            assert not set(names) & forbidden_modules, f"{path.name} imports {names}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                target = node.func.value
                if isinstance(target, ast.Name) and target.id in ("random", "datetime", "time"):
                    assert node.func.attr not in (
                        "random",
                        "uniform",
                        "gauss",
                        "now",
                        "time",
                        "seed",
                        "choice",
                        "randint",
                        "utcnow",
                    ), f"{path.name}:{node.lineno} uses the global {target.id}.{node.func.attr}"
            if isinstance(node, ast.Name):
                assert node.id not in ("open", "print"), f"{path.name}:{node.lineno} does I/O"


# --------------------------------------------------------------------------------------------
# Meaning: each scenario's telemetry is what its label claims (no decision core involved)
# --------------------------------------------------------------------------------------------


def breach_runs(scenario: Scenario, deploy: dict[str, Any]) -> dict[str, int]:
    policy = policy_of(deploy)
    return {
        m: view(scenario, deploy, m).longest_breach(policy, m)
        for m in ("error_rate", "latency_p99_ms")
    }


def firing(scenario: Scenario, service: str, severity: str = "critical") -> list[dict[str, Any]]:
    return [
        e
        for e in scenario.events
        if e["type"] == "alert"
        and e["service"] == service
        and e["severity"] == severity
        and e["status"] == "firing"
    ]


def assert_clean(scenario: Scenario, deploy: dict[str, Any]) -> None:
    """Not one window of the bake crosses a threshold of the policy."""
    policy = policy_of(deploy)
    for metric in ("error_rate", "latency_p99_ms"):
        m = view(scenario, deploy, metric)
        assert not any(b for _, b in m.breaching(policy, metric)), (metric, m.observed)
        assert m.baseline_cv < 0.5
    assert not firing(scenario, deploy["service"])


def assert_bad(
    scenario: Scenario,
    deploy: dict[str, Any],
    *,
    within: float = 150.0,
    until: float = math.inf,
    hold: int = 10,
) -> None:
    """Breaching from shortly after the deploy until the bake ends (or ``until``)."""
    policy = policy_of(deploy)
    held = []
    for metric in ("error_rate", "latency_p99_ms"):
        m = view(scenario, deploy, metric)
        marks = [(k, b) for k, b in m.breaching(policy, metric) if k + WINDOW <= until]
        if not marks:
            continue
        first = next((k for k, b in marks if b), None)
        if first is None:
            continue
        assert first - deploy["ts"] <= within, f"{metric} breaches {first - deploy['ts']:.0f} s in"
        after = [b for k, b in marks if k >= first + WINDOW]
        held.append(all(after) and len(after) >= hold)
    assert any(held), "a bad release breaches and keeps breaching"
    assert firing(scenario, deploy["service"]), "the alertmanager notices"


@pytest.mark.parametrize("seed", range(60))
def test_healthy_never_crosses_a_threshold(seed: int) -> None:
    scenario = generate("healthy", seed)
    assert_clean(scenario, only_deploy(scenario))


@pytest.mark.parametrize("seed", range(60))
def test_bad_deploy_always_breaches_soon_and_for_good(seed: int) -> None:
    scenario = generate("bad-deploy", seed)
    deploy = only_deploy(scenario)
    assert_bad(scenario, deploy)
    runs = breach_runs(scenario, deploy)
    assert max(runs.values()) >= 10
    # Realistic, not absurd: 8-15 % errors, or p99 about three times the baseline.
    errors = view(scenario, deploy, "error_rate")
    latency = view(scenario, deploy, "latency_p99_ms")
    assert max(m for _, m in errors.observed) < 0.2
    assert max(m for _, m in latency.observed) / latency.baseline_mean < 5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["healthy", "bad-deploy"])
def test_two_hundred_seeds_are_unambiguous(name: str) -> None:
    for seed in range(200):
        scenario = generate(name, seed)
        deploy = only_deploy(scenario)
        if name == "healthy":
            assert_clean(scenario, deploy)
        else:
            assert_bad(scenario, deploy)


def test_healthy_is_not_flat() -> None:
    scenario = generate("healthy", 0)
    deploy = only_deploy(scenario)
    for metric in ("error_rate", "latency_p99_ms", "request_rate"):
        values = [v for _, v in samples(scenario, deploy["service"], metric)]
        assert len(set(values)) > len(values) * 0.8
        assert statistics.pstdev(values) / statistics.fmean(values) > 0.03


BLOCKED = (
    "no-rollback-target",
    "data-writes",
    "schema-migration",
    "credential-rotation",
    "session-invalidation",
    "shared-infra",
    "shared-tier",
    "approval-only-service",
    "same-identity",
    "stale-exporter",
    "flapping-alerts",
    "conflicting-sources",
    "noisy-baseline",
    "cold-start",
    "preauthorized",
    "preauth-expired",
    "approval-superseded",
    "slow-burn",
)


@pytest.mark.parametrize(("name", "seed"), [(n, s) for n in BLOCKED for s in SEEDS])
def test_every_blocked_release_is_really_bad(name: str, seed: int) -> None:
    scenario = generate(name, seed)
    deploy = only_deploy(scenario)
    if name == "cold-start":
        errors = view(scenario, deploy, "error_rate")
        assert len(errors.baseline) <= 7
        assert max(m for _, m in errors.observed) > 0.05
        return
    assert_bad(scenario, deploy, within=400.0 if name == "slow-burn" else 150.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_one_window_blip_is_exactly_one_window(seed: int) -> None:
    scenario = generate("one-window-blip", seed)
    deploy = only_deploy(scenario)
    marks = view(scenario, deploy, "error_rate").breaching(policy_of(deploy), "error_rate")
    assert sum(b for _, b in marks) == 1
    assert not any(
        b
        for _, b in view(scenario, deploy, "latency_p99_ms").breaching(
            policy_of(deploy), "latency_p99_ms"
        )
    )
    assert not firing(scenario, deploy["service"])


@pytest.mark.parametrize("seed", SEEDS)
def test_slow_burn_crosses_five_percent_after_about_five_minutes(seed: int) -> None:
    scenario = generate("slow-burn", seed)
    deploy = only_deploy(scenario)
    errors = view(scenario, deploy, "error_rate")
    crossing = next(k for k, m in errors.observed if m > 0.05) - deploy["ts"]
    assert 240 <= crossing <= 420
    means = [m for _, m in errors.observed]
    assert means[-1] > 0.08 and means[len(means) // 2] > means[2]


def silent_after(scenario: Scenario, service: str, metric: str, at: float) -> list[float]:
    return [ts for ts, _ in samples(scenario, service, metric) if ts > at + 1.0]


@pytest.mark.parametrize(
    ("name", "seed"),
    [(n, s) for n in ("stale-exporter", "preauthorized", "preauth-expired") for s in SEEDS],
)
def test_the_latency_exporter_dies_with_the_deploy(name: str, seed: int) -> None:
    scenario = generate(name, seed)
    deploy = only_deploy(scenario)
    assert not silent_after(scenario, deploy["service"], "latency_p99_ms", deploy["ts"])
    assert silent_after(scenario, deploy["service"], "error_rate", deploy["ts"])
    # The second breaching window closes only after the exporter has been quiet for > 90 s.
    errors = view(scenario, deploy, "error_rate").breaching(policy_of(deploy), "error_rate")
    first = next(k for k, b in errors if b)
    last_latency = samples(scenario, deploy["service"], "latency_p99_ms")[-1][0]
    assert first + 2 * WINDOW - last_latency > 90
    if name == "stale-exporter":
        assert deploy["service"] != "checkout"
    if name.startswith("preauth"):
        assert (deploy["ts"] < PREAUTH_END) == (name == "preauthorized")
    if name == "preauthorized":
        assert deploy["service"] == "checkout"
        assert (
            min(m for k, m in view(scenario, deploy, "error_rate").observed if k >= first + WINDOW)
            > 0.02
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_approval_superseded_exporter_comes_back_while_the_breach_holds(seed: int) -> None:
    scenario = generate("approval-superseded", seed)
    deploy = only_deploy(scenario)
    resumed = silent_after(scenario, deploy["service"], "latency_p99_ms", deploy["ts"])
    assert 160 <= resumed[0] - deploy["ts"] <= 210
    errors = view(scenario, deploy, "error_rate")
    assert all(m > 0.05 for k, m in errors.observed if k >= resumed[0])


@pytest.mark.parametrize("seed", SEEDS)
def test_silent_bake_has_nothing_from_the_service_after_the_deploy(seed: int) -> None:
    scenario = generate("silent-bake", seed)
    deploy = only_deploy(scenario)
    after = [
        e
        for e in scenario.events
        if e["service"] == deploy["service"] and e["ts"] > deploy["ts"] + 1.0
    ]
    assert after == []
    neighbours = services(scenario) - {deploy["service"]}
    for service in neighbours:
        assert silent_after(scenario, service, "request_rate", deploy["ts"] + BAKE)


@pytest.mark.parametrize("seed", SEEDS)
def test_low_traffic_is_clean_and_thin(seed: int) -> None:
    scenario = generate("low-traffic", seed)
    deploy = only_deploy(scenario)
    traffic = view(scenario, deploy, "request_rate")
    assert max(traffic.means.values()) < POLICY.for_service(deploy["service"]).min_traffic / 2
    assert all(v == 0.0 for _, v in samples(scenario, deploy["service"], "error_rate"))
    assert not firing(scenario, deploy["service"])


@pytest.mark.parametrize("seed", SEEDS)
def test_flapping_alert_is_evidently_flapping_at_every_window_of_the_bake(seed: int) -> None:
    scenario = generate("flapping-alerts", seed)
    deploy = only_deploy(scenario)
    policy = policy_of(deploy)
    flaps = sorted(
        (e for e in scenario.events if e["type"] == "alert" and e["name"] == "KubePodNotReady"),
        key=lambda e: e["ts"],
    )
    assert {e["severity"] for e in flaps} == {"critical"}
    statuses = [e["status"] for e in flaps]
    assert statuses[0] == "firing"
    assert all(a != b for a, b in itertools.pairwise(statuses)), "every event is a flip"
    firings = [e["ts"] for e in flaps if e["status"] == "firing"]
    assert 37 <= statistics.fmean(b - a for a, b in itertools.pairwise(firings)) <= 43
    first_end = math.ceil(deploy["ts"] / WINDOW) * WINDOW
    for end in range(int(first_end), int(deploy["ts"] + BAKE), int(WINDOW)):
        recent = [e for e in flaps if end - policy.flap_window_seconds < e["ts"] <= end]
        assert len(recent) >= policy.flap_limit, f"only {len(recent)} flips before {end}"
    assert_bad(scenario, deploy)


@pytest.mark.parametrize("seed", SEEDS)
def test_conflicting_sources_agree_before_and_disagree_after(seed: int) -> None:
    scenario = generate("conflicting-sources", seed)
    deploy = only_deploy(scenario)
    tolerance = policy_of(deploy).source_tolerance
    prom = view(scenario, deploy, "error_rate")
    dd = view(scenario, deploy, "error_rate", source="datadog")
    base_gap = abs(prom.baseline_mean - dd.baseline_mean) / max(
        prom.baseline_mean, dd.baseline_mean
    )
    assert base_gap < tolerance / 2
    late = [(prom.means[k], dd.means[k]) for k, _ in prom.observed[6:]]
    assert all(p > 0.05 and d < 0.015 for p, d in late)


@pytest.mark.parametrize("seed", SEEDS)
def test_traffic_drains_while_errors_spike(seed: int) -> None:
    scenario = generate("traffic-drain", seed)
    deploy = only_deploy(scenario)
    traffic = view(scenario, deploy, "request_rate")
    errors = view(scenario, deploy, "error_rate")
    assert min(traffic.baseline) > 40
    later = [k for k, _ in traffic.observed[5:]]
    assert all(traffic.means[k] < 1.0 for k in later)
    assert all(errors.means[k] > 0.05 for k in later if k in errors.means)
    # The drain comes first: every scrape with raised errors already has drained traffic.
    traffic_at = dict(samples(scenario, deploy["service"], "request_rate"))
    for ts, value in samples(scenario, deploy["service"], "error_rate"):
        if value > 3 * errors.baseline_mean:
            assert traffic_at[ts] < 1.0, (ts - deploy["ts"], value, traffic_at[ts])


@pytest.mark.parametrize("seed", SEEDS)
def test_fleet_wide_four_services_breach_together(seed: int) -> None:
    scenario = generate("fleet-wide", seed)
    deploy = only_deploy(scenario)
    breaching_by_window: dict[float, set[str]] = defaultdict(set)
    for service in services(scenario):
        fake = {**deploy, "service": service}
        marks = view(scenario, fake, "error_rate").breaching(
            POLICY.for_service(service), "error_rate"
        )
        for k, b in marks:
            if b:
                breaching_by_window[k].add(service)
    together = [k for k, s in breaching_by_window.items() if len(s) == 4]
    assert len(together) >= 10
    assert all(deploy["service"] in breaching_by_window[k] for k in together)
    assert len(services(scenario)) == 6
    assert len(firing(scenario, deploy["service"])) == 1
    assert sum(len(firing(scenario, s)) for s in services(scenario)) == 4


@pytest.mark.parametrize("seed", range(20))
def test_noisy_baseline_is_unstable(seed: int) -> None:
    scenario = generate("noisy-baseline", seed)
    deploy = only_deploy(scenario)
    errors = view(scenario, deploy, "error_rate")
    assert errors.baseline_cv > 1.2 > policy_of(deploy).max_baseline_cv
    assert statistics.median(errors.baseline) < 0.003


@pytest.mark.parametrize("seed", SEEDS)
def test_budget_exhausted_second_release_within_the_hour(seed: int) -> None:
    scenario = generate("budget-exhausted", seed)
    first, second = started(scenario)
    assert first["service"] == second["service"]
    assert 0 < second["ts"] - first["ts"] < 3600 - 300
    rolled_back = [
        e for e in scenario.events if e["type"] == "deploy" and e["status"] == "rolled_back"
    ]
    assert [e["deployment_id"] for e in rolled_back] == [first["deployment_id"]]
    assert first["ts"] + 200 < rolled_back[0]["ts"] < second["ts"]
    assert second["previous_version"] == first["rollback_target"]
    assert second["version"] not in (first["version"], first["previous_version"])
    assert_bad(scenario, first, until=rolled_back[0]["ts"], hold=4)
    assert_bad(scenario, second)
    # The second baseline is clean again: the first release's errors are long gone.
    errors = view(scenario, second, "error_rate")
    assert max(errors.baseline) < 0.02
    labels = scenario.labels
    assert list(labels.values()) == ["rollback", "approval"]
