"""Issue 11's pure building blocks: long memory, onset attribution, counts, sequential test,
one-sided joint scoring. Table-driven; every case is deterministic (seeded)."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from rollguard.models.anomaly import JointDetector
from rollguard.models.counts import binomial_sf, error_count_test
from rollguard.models.memory import LongMemory, _exceedance, _heaviest
from rollguard.models.onset import attribute_onset
from rollguard.models.sequential import SequentialTest, max_start_quantile

W = 30.0  # window seconds
DAY = 2880  # windows per day


def _service_days(days: int, seed: int, burst_every: int = 360) -> tuple[LongMemory, float]:
    """A p99 of ~200 ms (5 % noise) with a 2.5x burst of two windows every ``burst_every``."""
    rng = random.Random(seed)
    mem = LongMemory()
    ts = 0.0
    for i in range(days * DAY):
        v = 200.0 * math.exp(rng.gauss(0.0, 0.05))
        if i % burst_every in (0, 1):
            v *= rng.uniform(2.3, 2.7)
        mem.learn(v, ts)
        ts += W
    return mem, ts


# -- LongMemory ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "routine", "rare"),
    [
        (210.0, True, False),  # an ordinary window
        (500.0, True, False),  # the service's routine burst (2.3-2.7x, every 3 h)
        (520.0, True, False),  # the upper part of its routine bursts: seen a few times a day
        (650.0, False, True),  # 3.25x: beyond anything in two days
        (900.0, False, True),  # 4.5x
    ],
)
def test_long_memory_knows_the_services_routine_bursts(
    value: float, routine: bool, rare: bool
) -> None:
    mem, ts = _service_days(2, seed=1)
    for hour in range(0, 24, 5):  # at any time of day
        tail = mem.tail(value, ts + 3600.0 * hour)
        assert (tail.routine, tail.rare) == (routine, rare), tail


def _young_memory(seed: int) -> tuple[LongMemory, float]:
    """250 windows (~2 h) of a ~250 ms p99 with 8 % noise: a young memory, no bursts."""
    rng = random.Random(seed)
    mem = LongMemory()
    for i in range(250):
        mem.learn(250.0 * math.exp(rng.gauss(0.0, 0.08)), W * i)
    return mem, W * 250


@pytest.mark.parametrize(
    ("beyond", "rare", "point_rare"),
    [
        (1.04, False, False),  # just above the largest of 250 windows: p = 0.5 / 251
        (1.1, False, True),  # the point estimate of the tail index called this rare (p 7e-4)
        (1.2, True, True),  # 1.45x the baseline, 20 % above anything seen: rare (p 6e-4)
        (1.65, True, True),  # a clear regression (2x the baseline): p 1.8e-6
    ],
)
def test_a_young_memory_extrapolates_with_the_heaviest_tail_its_data_allow(
    beyond: float, rare: bool, point_rare: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Beyond the largest value seen only the Pareto extrapolation can say p < 1/n; its tail
    # index rests on 31 excesses (relative error ~1/sqrt(31)), so it is taken at its upper
    # 95 % confidence bound.
    mem, ts = _young_memory(seed=3)
    value = beyond * max(mem.to_state()["state"]["cur"][1])
    assert mem.tail(value, ts).rare is rare
    monkeypatch.setattr("rollguard.models.memory._heaviest", lambda m: 1.0)
    assert mem.tail(value, ts).rare is point_rare


@pytest.mark.parametrize(("m", "factor"), [(3, 3.669), (31, 1.3812), (1000, 1.0542)])
def test_tail_index_upper_bound_factor(m: int, factor: float) -> None:
    # 2m / (chi2(2m) lower 5 % quantile), from scipy: 6 / 1.635, 62 / 44.89, 2000 / 1897.
    # Wilson-Hilferty is within 1 % at m = 3 (the fewest excesses it is used with).
    assert _heaviest(m) == pytest.approx(factor, rel=1e-2 if m < 10 else 1e-4)


@pytest.mark.parametrize(("gamma", "n"), [(0.2, 250), (0.5, 2880), (0.0, 250)])
def test_extrapolated_tail_rarely_understates_the_true_tail(gamma: float, n: int) -> None:
    # Exact Pareto samples (index gamma; 0: an exponential below zero, the fit for values
    # that are not positive), the top 32 kept: how often the extrapolated p falls below the
    # true P(X >= v) = 1e-4 (the point estimate: ~57 %; the bound: ~6-7.5 %, nominal 5 %).
    rng = random.Random(11)
    v = 1e-4**-gamma if gamma else math.log(1e4) - 100.0
    trials = 300
    under = 0
    for _ in range(trials):
        if gamma:
            sample = [rng.paretovariate(1.0 / gamma) for _ in range(n)]
        else:
            sample = [rng.expovariate(1.0) - 100.0 for _ in range(n)]
        under += _exceedance(v, sorted(sample)[-32:], n) < 1e-4
    assert under / trials < 0.12


def test_a_cold_long_memory_finds_nothing_routine_or_rare() -> None:
    mem = LongMemory()
    for i in range(20):
        mem.learn(200.0 + i, 30.0 * i)
    tail = mem.tail(900.0, 600.0)
    assert not tail.routine and not tail.rare


def test_long_memory_uses_the_time_of_day_once_it_knows_it() -> None:
    # Night (00-06 h) runs at 100 ms, day at 200 ms: 150 ms is rare at night, not at noon.
    mem = LongMemory()
    rng = random.Random(2)
    for i in range(2 * DAY):
        ts = i * W
        night = (ts % 86400.0) < 6 * 3600.0
        mem.learn((100.0 if night else 200.0) * math.exp(rng.gauss(0.0, 0.03)), ts)
    assert mem.tail(150.0, 2 * 86400.0 + 3 * 3600.0).rescaled > 250.0  # 1.5x the night's level
    assert mem.tail(150.0, 2 * 86400.0 + 3 * 3600.0).rare
    assert not mem.tail(150.0, 2 * 86400.0 + 12 * 3600.0).rare


def test_long_memory_state_is_plain_bounded_and_exact() -> None:
    mem, ts = _service_days(3, seed=3)
    state = mem.to_state()
    text = json.dumps(state, allow_nan=False)
    back = LongMemory.from_state(json.loads(text))
    for v in (150.0, 250.0, 480.0, 700.0, 1e6):
        assert back.tail(v, ts) == mem.tail(v, ts)
    assert back.to_state() == state
    # Bounded: two generations of (24 hours x top + the day's 4 x top) values, whatever the age.
    kept = len(state["state"]["cur"][1]) + len(state["state"]["prev"][1])
    assert kept <= 2 * 32
    mem2, _ = _service_days(6, seed=3)
    assert len(json.dumps(mem2.to_state())) <= 1.1 * len(text)


def test_long_memory_is_deterministic() -> None:
    a, ts = _service_days(1, seed=4)
    b, _ = _service_days(1, seed=4)
    assert a.to_state() == b.to_state()


# -- onset attribution ---------------------------------------------------------------------

_R = random.Random(5)
_BASE = [100.0 + _R.gauss(0.0, 3.0) for _ in range(20)]


@pytest.mark.parametrize(
    ("baseline", "observation", "kind"),
    [
        # a shift confined to the last 3 baseline windows, still there after the deploy
        (_BASE[:17] + [180.0, 182.0, 179.0], [181.0, 178.0, 183.0], "shift"),
        # a shift in the last 2 windows only (a CV over 20 windows barely notices it)
        (_BASE[:18] + [150.0, 151.0], [152.0, 149.0, 150.0, 151.0], "shift"),
        # the release itself: clean baseline, departure from the first observation window
        (_BASE, [180.0, 182.0, 179.0, 181.0], "none"),
        # a trend under way through the baseline, continuing
        ([100.0 + 2.0 * i + _R.gauss(0.0, 1.0) for i in range(20)], [141.0, 143.0, 146.0], "trend"),
        # an improvement is never attributed (nothing bad departed)
        (_BASE[:17] + [60.0, 61.0, 59.0], [60.0, 58.0], "none"),
        # a lone high baseline window is not a shift
        (_BASE[:19] + [130.0], [180.0, 182.0, 179.0], "none"),
        # too short a baseline to say anything
        ([100.0, 101.0, 180.0], [181.0], "none"),
    ],
)
def test_onset_attribution(baseline: list[float], observation: list[float], kind: str) -> None:
    onset = attribute_onset(baseline, observation)
    assert onset.kind == kind, onset
    assert onset.before_deploy is (kind != "none")
    if kind == "shift":
        assert onset.windows_before >= 1 and "before the deploy" in onset.detail


def test_onset_direction_down() -> None:
    base = _BASE[:17] + [40.0, 41.0, 39.0]
    assert attribute_onset(base, [40.0, 42.0], direction="down").kind == "shift"
    assert attribute_onset(base, [40.0, 42.0], direction="up").kind == "none"


# -- counts, not ratios --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "requests", "baseline", "limit", "verdict"),
    [
        (2 / 45, 45, 0.004, 0.012, "low_traffic"),  # 2 errors at 1.5 req/s: "3x", but 45 requests
        (0.0, 0, 0.004, 0.012, "low_traffic"),  # no requests at all
        (0.10, 6000, 0.004, 0.012, "breach"),  # 10 % of 200 req/s: overwhelming
        (0.02, 6000, 0.004, 0.012, "breach"),  # 120 errors where 24 are expected
        # 900 requests: a rate at the 1.2 % limit (11 errors where 3.6 are expected) has
        # p 0.0012, so the window cannot tell a breach from the baseline at 1e-3
        (0.014, 900, 0.004, 0.012, "low_traffic"),
        (0.014, 1500, 0.004, 0.012, "breach"),  # 21 of 1,500 where 6 are expected
        (0.005, 6000, 0.004, 0.012, "within"),  # below the limit
    ],
)
def test_error_count_test(
    rate: float, requests: int, baseline: float, limit: float, verdict: str
) -> None:
    got = error_count_test(rate, requests, baseline, limit)
    assert got.verdict == verdict, got.detail


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 10, 0.1), (1, 10, 0.1), (3, 10, 0.1), (5, 20, 0.3), (10, 10, 0.5)]
)
def test_binomial_sf_is_exact(k: int, n: int, p: float) -> None:
    exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert binomial_sf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-12)


# -- the sequential test -------------------------------------------------------------------


def _bakes(
    seeds: range, factor: float, noise: float, heavy: bool = False, windows: int = 20
) -> list[bool]:
    """For each seed: did the test alarm over a bake of ``windows`` windows?"""
    out = []
    for seed in seeds:
        rng = random.Random(seed)

        def draw(rng: random.Random = rng) -> float:
            e = rng.gauss(0.0, noise)
            if heavy and rng.random() < 0.05:
                e += abs(rng.gauss(0.0, 4 * noise))  # a p99 spike
            return 200.0 * math.exp(e)

        test = SequentialTest.from_baseline([draw() for _ in range(20)])
        out.append(any(test.update(factor * draw()).alarm for _ in range(windows)))
    return out


@pytest.mark.parametrize(
    ("factor", "noise", "heavy", "low", "high"),
    [
        (1.0, 0.1, False, 0.0, 0.02),  # healthy: false-alarm probability <= alpha (0.01) + slack
        (1.05, 0.1, True, 0.0, 0.03),  # healthy, a little worse, with p99 spikes
        (0.6, 0.1, False, 0.0, 0.0),  # an improvement never alarms
        (1.5, 0.15, True, 0.95, 1.0),  # a sustained moderate regression on a noisy series
        (1.3, 0.1, False, 0.95, 1.0),  # smaller, on a calmer one
    ],
)
def test_sequential_test_rates(
    factor: float, noise: float, heavy: bool, low: float, high: float
) -> None:
    alarms = _bakes(range(400), factor, noise, heavy)
    rate = sum(alarms) / len(alarms)
    assert low <= rate <= high, rate


def test_sequential_test_state_round_trip_and_persistence() -> None:
    test = SequentialTest.from_baseline([200.0, 205.0, 195.0, 210.0, 190.0, 200.0])
    for v in (260.0, 250.0):
        test.update(v)
    back = SequentialTest.from_state(json.loads(json.dumps(test.to_state())))
    assert back.update(270.0) == test.update(270.0)
    assert test.verdict().alarm
    test.update(180.0)
    assert test.verdict().alarm  # an alarm, once raised, stays


# -- one-sided joint detector ----------------------------------------------------------------


def _joint(up: list[str] | None) -> JointDetector:
    rng = random.Random(5)
    det = JointDetector(context=["rps"], up=up)
    for _ in range(40):
        load = rng.gauss(0, 1)
        det.learn_one({
            "rps": 100 + 10 * load,
            "latency": 200 + 20 * load + rng.gauss(0, 3),
            "errors": 0.01 + rng.gauss(0, 0.001),
        })  # fmt: skip
    return det


@pytest.mark.parametrize(
    ("window", "two_sided_high", "one_sided_high"),
    [
        # latency falls far below what the (dipping) traffic predicts: an improvement
        ({"rps": 85.0, "latency": 150.0, "errors": 0.01}, False, False),
        # errors fall to a third: an improvement, which the two-sided model calls anomalous
        ({"rps": 100.0, "latency": 200.0, "errors": 0.003}, True, False),
        # quieter yet slower: still a departure
        ({"rps": 90.0, "latency": 220.0, "errors": 0.01}, True, True),
        # errors up
        ({"rps": 100.0, "latency": 200.0, "errors": 0.017}, True, True),
    ],
)
def test_joint_detector_is_one_sided_for_bad_up_metrics(
    window: dict[str, float], two_sided_high: bool, one_sided_high: bool
) -> None:
    assert (_joint(None).score_one(window) > 0.9) is two_sided_high
    one_sided = _joint(["errors", "latency"])
    assert (one_sided.score_one(window) > 0.9) is one_sided_high
    if not one_sided_high:
        assert one_sided.score_one(window) < 0.1
    back = JointDetector.from_state(json.loads(json.dumps(one_sided.to_state())))
    assert back.score_one(window) == one_sided.score_one(window)


def _late_bakes(seeds: range, factor: float, noise: float, late: int) -> list[bool]:
    """Bakes of 20 windows whose first ``late`` windows are healthy; the test as the engine
    builds it (4 starts, a horizon of 20)."""
    out = []
    for seed in seeds:
        rng = random.Random(seed)

        def draw(rng: random.Random = rng) -> float:
            return 200.0 * math.exp(rng.gauss(0.0, noise))

        test = SequentialTest.from_baseline(
            [draw() for _ in range(20)], margin=0.2, clip=2.0, starts=4, horizon=20
        )
        values = [draw() * (1.0 if i < late else factor) for i in range(20)]
        out.append(any(test.update(v).alarming for v in values))
    return out


@pytest.mark.parametrize(
    ("factor", "noise", "late", "low", "high"),
    [
        (1.0, 0.15, 0, 0.0, 0.02),  # healthy: the starts and the horizon test keep alpha
        (1.1, 0.15, 0, 0.0, 0.03),  # healthy, within the margin
        (1.45, 0.15, 3, 0.9, 1.0),  # a moderate regression from the fourth window on
    ],
)
def test_late_starts_and_horizon_keep_alpha(
    factor: float, noise: float, late: int, low: float, high: float
) -> None:
    alarms = _late_bakes(range(400), factor, noise, late)
    rate = sum(alarms) / len(alarms)
    assert low <= rate <= high, rate


def test_sequential_state_round_trip_with_starts_and_horizon() -> None:
    test = SequentialTest.from_baseline([200.0, 205.0, 195.0, 210.0], starts=3, horizon=5)
    for v in (190.0, 260.0, 250.0, 255.0):
        test.update(v)
    back = SequentialTest.from_state(json.loads(json.dumps(test.to_state())))
    assert back.update(270.0) == test.update(270.0)


@pytest.mark.parametrize(("n", "starts", "alpha"), [(20, 4, 0.005), (12, 3, 0.02)])
def test_max_start_quantile_matches_simulation(n: int, starts: int, alpha: float) -> None:
    # The largest standardised sum of the tests starting at each of the first ``starts``
    # windows exceeds the quantile with probability alpha (20,000 simulated N(0, 1) bakes).
    q = max_start_quantile(n, starts, alpha)
    rng = random.Random(11)
    hits = 0
    for _ in range(20_000):
        steps = [rng.gauss(0.0, 1.0) for _ in range(n)]
        total = sum(steps)
        best, dropped = -math.inf, 0.0
        for k in range(starts):
            best = max(best, (total - dropped) / math.sqrt(n - k))
            dropped += steps[k]
        hits += best >= q
    assert hits / 20_000 == pytest.approx(alpha, rel=0.3)
    assert q < statistics.NormalDist().inv_cdf(1.0 - alpha / starts)  # sharper than Bonferroni
