"""Issue 11's wiring, table-driven: the rules that read the long memory, the onset, the error
counts and the sequential test, and ``Deployment.temper`` that clears the breaches that are not
departures. Each case is one judgement or one window; the building blocks themselves are
tested in ``tests/unit/test_noise_blocks.py``."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import orjson
import pytest

from rollguard.models.counts import error_count_test
from rollguard.models.engine import new_state
from rollguard.models.events import ReasonCode
from rollguard.models.facts import DeploymentFacts
from rollguard.models.judgement import Judgement, Streaks
from rollguard.models.memory import LongMemory
from rollguard.models.onset import attribute_onset
from rollguard.models.rules import anomaly, baseline_unstable, breach_unconfirmed, low_traffic_rule
from rollguard.models.scoring import Score
from rollguard.models.sequential import SequentialVerdict
from rollguard.models.state import ServiceState
from rollguard.models.thresholds import ThresholdCheck
from rollguard.models.trial import Deployment, is_error_rate
from rollguard.models.windows import MetricStats, WindowSummary
from rollguard.streams.checkpoint import CODEC
from tests.unit.core_factories import (
    HEALTHY,
    KIT,
    T0,
    actions,
    after,
    deploy,
    in_time_order,
    load_policy,
    run,
    telemetry,
)
from tests.unit.test_rules import judgement

R = ReasonCode
POLICY = load_policy()
SP = POLICY.for_service("search")
FACTS = DeploymentFacts("dep-1", "search", "v2", "v1", "svc:ci-deployer", T0)
LAT = "latency_p99_ms"
SHIFT = attribute_onset([100.0, 101.0, 99.0, 100.0, 102.0, 98.0, 100.0] + [130.0] * 4, [131.0])
ALARM = SequentialVerdict(9.0, 4.6, True, 6, 2.0)
EARLY = SequentialVerdict(9.0, 4.6, True, 2, 3.0)  # above threshold, but after 2 windows only
QUIET = SequentialVerdict(1.0, 4.6, True, 8, 0.5)  # alarmed once, not above it now
LOW_COUNT = error_count_test(0.04, requests=45, baseline_rate=0.005, limit_rate=0.015)


def _j(**kw: Any) -> Judgement:
    extra = {k: kw.pop(k) for k in ("onsets", "counts", "sequential", "memory") if k in kw}
    return replace(judgement(**kw), **extra)


@pytest.mark.parametrize(
    ("rule", "j", "code", "names"),
    [
        # A departure that began before the deploy is BASELINE_UNSTABLE, with the onset named.
        (baseline_unstable, _j(onsets={LAT: SHIFT}), R.BASELINE_UNSTABLE, "level shift began"),
        (baseline_unstable, _j(), None, ""),
        # An error rate above its limit on too few requests: LOW_TRAFFIC with the count.
        (
            low_traffic_rule,
            _j(
                counts={"error_rate": LOW_COUNT},
                checks={"error_rate": ThresholdCheck("mean", 0.04, 0.05, 3.0, 0.005, False)},
            ),
            R.LOW_TRAFFIC,
            "45 requests",
        ),
        (low_traffic_rule, _j(), None, ""),
        # The sequential test: a trigger once above its threshold after anomaly_persist_windows.
        (anomaly, _j(sequential={LAT: ALARM}), R.ANOMALY, "sequential test over 6 windows"),
        (anomaly, _j(sequential={LAT: EARLY}), None, ""),
        (anomaly, _j(sequential={LAT: QUIET}), None, ""),
        # ... that asks a human: no written threshold crossed.
        (breach_unconfirmed, _j(sequential={LAT: ALARM}), R.BREACH_UNCONFIRMED, "sequential"),
    ],
)
def test_noise_rules(rule: Any, j: Judgement, code: ReasonCode | None, names: str) -> None:
    found = rule(j)
    assert (None if found is None else found.code) == code
    assert found is None or names in found.detail


def test_a_confirmed_breach_the_memory_does_not_find_rare_is_unconfirmed() -> None:
    mem = LongMemory(min_windows=10)
    for i in range(200):
        mem.learn(200.0 * (3.0 if i % 40 in (0, 1) else 1.0 + 0.01 * (i % 7)), 30.0 * i)
    tail = mem.tail(550.0, 0.0)
    assert tail.routine and not tail.rare
    breach = ThresholdCheck("mean", 600.0, 1000.0, 2.0, 200.0, True)
    hot = Score(0.99, 30, "s")
    j = _j(
        checks={LAT: breach},
        scores={LAT: hot},
        streaks=Streaks(breach={LAT: 2}, confirmed={LAT: 0}),
        memory={LAT: tail},
    )
    found = breach_unconfirmed(j)
    assert found is not None and "not rare for the service" in found.detail


# ---------------------------------------------------------------------------------------------
# Deployment.temper: which breaches are departures
# ---------------------------------------------------------------------------------------------


def _stats(mean: float) -> MetricStats:
    return MetricStats(3, mean, mean, mean, 1, {"prom": T0})


def _memory(burst: float) -> LongMemory:
    """Two hours of a p99 of ~200 with a ``burst`` x burst of two windows every 40 windows."""
    mem = LongMemory()
    for i in range(240):
        mem.learn(200.0 * (burst if i % 40 in (0, 1) else 1.0 + 0.02 * (i % 5)), T0 + 30.0 * i)
    return mem


@pytest.mark.parametrize(
    ("value", "top", "burst", "breach"),
    [
        (500.0, 1000.0, 2.6, False),  # ratio-only, at the level of the service's own bursts
        (500.0, 1000.0, 1.0, True),  # ratio-only, never seen by this service: rare
        (1200.0, 1000.0, 6.5, True),  # above the written max: always a breach
    ],
)
def test_temper_routine_ratio_breach(value: float, top: float, burst: float, breach: bool) -> None:
    dep = Deployment.open(FACTS, SP)
    check = ThresholdCheck("mean", value, top, 2.0, 200.0, True)
    summary = WindowSummary(100, T0 + 3000.0, T0 + 3030.0, {LAT: _stats(value)})
    dep.obs_values[LAT] = [value]
    out, routine, _ = dep.temper(summary, {LAT: check}, SP, {LAT: _memory(burst)})
    assert out[LAT].breach is breach
    assert (LAT in routine) is not breach or value > top


@pytest.mark.parametrize(
    ("rate", "traffic", "breach"),
    [
        (0.04, 1.5, False),  # 45 requests: two errors are "8x" and mean nothing
        (0.04, 200.0, True),  # 6,000 requests: 240 errors against 30 expected
        (0.04, 0.05, True),  # a drain (< 10 % of baseline traffic): left to the drain conflict
    ],
)
def test_temper_error_counts(rate: float, traffic: float, breach: bool) -> None:
    dep = Deployment.open(FACTS, SP)
    base_traffic = 1.5 if traffic < 100 else 200.0
    dep.baseline = _baseline(base_traffic)
    check = ThresholdCheck("mean", rate, 0.05, 3.0, 0.005, True)
    summary = WindowSummary(
        100, T0, T0 + 30.0, {"error_rate": _stats(rate), "request_rate": _stats(traffic)}
    )
    out, _, counts = dep.temper(summary, {"error_rate": check}, SP, {})
    assert out["error_rate"].breach is breach
    assert ("error_rate" in counts) is not breach


def _baseline(traffic: float) -> Any:
    from rollguard.models.windows import build_baseline

    rows = [
        WindowSummary(k, T0 + 30.0 * k, T0 + 30.0 * k + 30.0, {"request_rate": _stats(traffic)})
        for k in range(20)
    ]
    return build_baseline(rows, 0, 19)


def test_error_rate_metrics_are_named() -> None:
    assert is_error_rate("error_rate") and is_error_rate("http_errors_ratio")
    assert not is_error_rate("latency_p99_ms")


def test_sequential_is_read_until_a_request() -> None:
    dep = Deployment.open(FACTS, SP)
    dep.base_values[LAT] = [200.0, 210.0, 190.0, 205.0, 195.0, 200.0, 202.0, 198.0]
    dep.obs_values[LAT] = [320.0] * 6
    assert dep.sequential(SP)[LAT].log_lr >= dep.sequential(SP)[LAT].threshold
    quantised = Deployment.open(FACTS, SP)
    quantised.base_values[LAT] = [100.0] * 16 + [150.0] * 4
    quantised.obs_values[LAT] = [150.0] * 6  # one bucket up: a step of the quantiser
    assert quantised.sequential(SP)[LAT].log_lr < quantised.sequential(SP)[LAT].threshold


def test_long_memory_survives_the_state_codec() -> None:
    svc = ServiceState("search", 30, 10.0)
    svc.memory[LAT] = _memory(2.6)
    back = CODEC.decode(ServiceState, orjson.loads(orjson.dumps(CODEC.encode(ServiceState, svc))))
    assert isinstance(back.memory[LAT], LongMemory)
    assert back.memory[LAT].to_state() == svc.memory[LAT].to_state()
    assert not math.isnan(back.memory[LAT].tail(500.0, T0).p_value)


# noise-pre-deploy-trend seed 1003 (tuning set 1000-1039): a p99 climbing since 6-8 min
# before the deploy, to x3. The trend test finds it after 5-6 observation windows, not after 7.
TREND = [296.0, 291.0, 252.0, 277.0, 244.0, 259.0, 259.0, 245.0, 278.0, 298.0,
         314.0, 317.0, 364.0, 351.0, 370.0, 502.0, 416.0, 454.0, 446.0, 459.0]  # fmt: skip
CLIMB = [558.0, 615.0, 625.0, 659.0, 708.0, 749.0]


@pytest.mark.parametrize(
    ("found", "later", "attributed"),
    [
        # Found while the climb was under way; it goes on, levelling off: on its own no longer
        # attributed, the finding stands.
        (CLIMB, [710.0], True),
        (CLIMB, [710.0, 737.0, 686.0], True),
        # bad-deploy seed 97: a "trend" found when only the latest window had the release's
        # step (the observation's median still below it): about a smaller departure, not kept.
        ([460.0, 470.0, 1400.0], [1450.0, 1420.0], False),
    ],
)
def test_a_pre_deploy_onset_stays_attributed(
    found: list[float], later: list[float], attributed: bool
) -> None:
    # noise-pre-deploy-trend seeds 1003, 1024, 1032 were rolled back automatically: the request
    # named BASELINE_UNSTABLE, a later window's attribution flickered off, every blocker
    # cleared and a rollback superseded the request.
    dep = Deployment.open(FACTS, SP)
    dep.base_values[LAT] = list(TREND)
    dep.obs_values[LAT] = list(found)
    assert LAT in dep.onsets([LAT])
    dep.obs_values[LAT] = found + later
    assert not attribute_onset(TREND, dep.obs_values[LAT]).before_deploy
    assert (LAT in dep.onsets([LAT])) is attributed


def test_a_pre_deploy_onset_survives_the_state_codec() -> None:
    dep = Deployment.open(FACTS, SP)
    dep.base_values[LAT] = list(TREND)
    dep.obs_values[LAT] = list(CLIMB)
    found = dep.onsets([LAT])
    back = CODEC.decode(Deployment, orjson.loads(orjson.dumps(CODEC.encode(Deployment, dep))))
    assert back.pre_deploy == found


@pytest.mark.parametrize(
    ("metric", "base", "value", "counts"),
    [
        # noise-scale seed 1014: a 2k-20k req/s service's error rate wandered +29 % for four
        # windows; its model scored it 0.92 and a human was asked. Not half-way to 3x: no.
        ("error_rate", 0.00323, 0.004163, False),
        # Half-way to the written 3x and beyond: a departure.
        ("error_rate", 0.00323, 0.0070, True),
        # noise-daily-cycle seed 1008: a p99 +23 % on the morning ramp; not half-way to 2x.
        (LAT, 234.6, 288.7, False),
        (LAT, 234.6, 360.0, True),
        # Without a value this window the model's word is all there is.
        (LAT, 234.6, math.nan, True),
    ],
)
def test_a_model_only_departure_must_go_part_way_to_the_limit(
    metric: str, base: float, value: float, counts: bool
) -> None:
    dep = Deployment.open(FACTS, SP)
    dep.base_values[metric] = [base * (1.0 + 0.01 * (i % 3 - 1)) for i in range(20)]
    dep.obs_values[metric] = [value]
    assert dep.departs(metric, SP) is counts
    scores = {metric: Score(0.99, 40, "s")}
    streaks = dep.streak({}, scores, SP, False)
    assert streaks.anomaly[metric] == (1 if counts else 0)


# noise-moderate-regression seeds 113 and 114 (the two misses before): p99 x1.5-1.8 from 30-60 s
# after the deploy on a noisy 3-4.5 req/s service; the windows as the engine kept them.
MISSES = {
    113: (
        [147.6, 144.6, 207.0, 163.8, 184.4, 170.7, 184.9, 166.3, 186.5, 145.8,
         197.1, 196.3, 203.7, 167.7, 137.9, 166.2, 150.3, 165.1, 176.0, 146.1],
        [158.5, 153.1, 234.8, 238.1, 227.3, 189.3, 222.3, 262.0, 244.7, 197.5,
         192.0, 169.9, 208.7, 242.1, 251.0, 272.7, 303.2, 256.6, 221.6, 252.4],
    ),
    114: (
        [228.8, 277.8, 251.7, 213.4, 266.5, 255.3, 242.5, 284.0, 240.5, 242.4,
         246.4, 250.4, 287.0, 211.0, 163.3, 213.9, 305.7, 234.5, 187.7, 304.6],
        [216.0, 229.6, 267.5, 393.6, 310.8, 315.9, 512.5, 270.8, 325.4, 430.5,
         438.0, 241.8, 281.1, 312.3, 323.5, 264.4, 302.7, 340.2, 380.5, 317.4],
    ),
}  # fmt: skip


@pytest.mark.parametrize("seed", sorted(MISSES))
def test_a_moderate_regression_with_a_late_onset_asks_by_the_end_of_the_bake(seed: int) -> None:
    # The windows before the onset pulled the sum from the first window down, and the
    # open-ended boundary needed more than 20 windows: both ended `pass` (log LR 3.95 and
    # -0.02 against 4.61). Starting at the onset, with the bake's length known, the last
    # window of the bake alarms (113: the mSPRT; 114: the horizon test, z 2.97 >= 2.76).
    base, bake = MISSES[seed]
    dep = Deployment.open(FACTS, SP)
    dep.base_values[LAT] = list(base)
    for n in range(1, len(bake) + 1):
        dep.obs_values[LAT] = bake[:n]
        verdict = dep.sequential(SP)[LAT]
        assert verdict.alarming is (n == len(bake)), n
    assert verdict.start > 0  # the start that carries the evidence skips the windows before
    found = anomaly(_j(sequential={LAT: verdict}))
    assert found is not None and "sequential test" in found.detail


def test_a_release_rolled_back_is_not_learned_until_the_rollback_lands() -> None:
    # The fleet timeline (tests/scenarios/test_partitioned.py): after slow-burn's rollback its
    # release kept running, notifications' long memory learned its 10 % error windows, and a
    # later bad release there (14 %) was not rare: it asked instead of rolling back.
    policy = load_policy()
    deployed, end = T0 + 1200.0, T0 + 3000.0  # 40 healthy windows, the bake, 30 more
    errors = {**HEALTHY, "error_rate": after(deployed + 30.0, 0.15, 0.01)}
    state = new_state(KIT)
    out = run(
        in_time_order(
            [deploy(deployed)], telemetry("search", T0, end, errors), telemetry("other", T0, end)
        ),
        policy,
        state=state,
    )
    assert "auto_rollback" in [action for action, _ in actions(out)]
    svc = state.services["search"]
    assert svc.suspect and svc.memory["error_rate"].n_learned <= 40  # the healthy windows only
    back = CODEC.decode(ServiceState, orjson.loads(orjson.dumps(CODEC.encode(ServiceState, svc))))
    assert back.suspect  # a restarted worker does not learn them either
    # The rollback lands: the windows after it are the service's own again.
    later = end + 600.0
    run(
        in_time_order(
            [deploy(end, status="rolled_back")],
            telemetry("search", end, later, seed=1),
            telemetry("other", end, later, seed=1),
        ),
        policy,
        state=state,
    )
    assert not svc.suspect and svc.memory["error_rate"].n_learned >= 55
