"""Unit tests of the anomaly models (models/anomaly): range, online-ness, detection, state."""

from __future__ import annotations

import doctest
import json
import math
import pickle
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rollguard.models.anomaly as anomaly
from rollguard.models.anomaly import (
    JointDetector,
    SeriesScorer,
    WindowDetector,
    _base,
    _period,
    batch,
    joint,
    score_csv_rows,
    score_series,
    series,
    window,
)

ROOT = Path(__file__).resolve().parents[2]

finite = st.floats(allow_nan=False, allow_infinity=False)
# Fast enough for hypothesis while still crossing the grace period and a season check.
small_scorer = {"window": 50, "grace_period": 8, "max_period": 16, "relearn_after": 5}


# ----------------------------------------------------------------------------------------------
# factories


def noise(n: int, seed: int, sd: float = 1.0, level: float = 0.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sd) for _ in range(n)]


def daily(n: int, seed: int, period: int = 288, noise_sd: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [
        100 + 20 * math.sin(2 * math.pi * i / period) + rng.gauss(0.0, noise_sd) for i in range(n)
    ]


def healthy_windows(n: int, seed: int) -> Iterator[dict[str, float]]:
    rng = random.Random(seed)
    for _ in range(n):
        yield {"mean": rng.gauss(0.005, 0.002), "p95": rng.gauss(0.009, 0.003)}


def latency_windows(n: int, seed: int) -> Iterator[dict[str, float]]:
    rng = random.Random(seed)
    for _ in range(n):
        m = rng.gauss(200, 30)
        yield {"mean": m, "p95": m * 1.5 + rng.gauss(0, 20), "max": m * 2 + rng.gauss(0, 40)}


def false_alarm_rate(scores: list[float], skip: int, threshold: float = 0.5) -> float:
    tail = scores[skip:]
    return sum(s >= threshold for s in tail) / len(tail)


# ----------------------------------------------------------------------------------------------
# the river estimator contract


@pytest.mark.parametrize(
    "make",
    [
        # defaults
        lambda: SeriesScorer(),
        lambda: WindowDetector(),
        lambda: JointDetector(),
        # every argument given
        lambda: SeriesScorer(500, 10, 0.8, 12, False, 2, 100, 50),
        lambda: WindowDetector(history=30, direction="up", rel_floor=0.1, abs_floor=0.0),
        lambda: JointDetector(metrics=["a", "b"], history=40),
        lambda: JointDetector(history=40, context=["request_rate"]),
    ],
)
def test_init_stores_only_its_arguments(make: Callable[[], Any]) -> None:
    det = make()
    params = det._get_params()
    assert set(vars(det)) == set(params)  # nothing built before the first learn_one
    assert det.clone()._get_params() == params
    assert det.learn_one({"value": 1.0} if isinstance(det, SeriesScorer) else {"a": 1.0}) is None


def test_window_detector_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        WindowDetector(direction="sideways")


def test_series_scorer_wants_one_value() -> None:
    with pytest.raises(ValueError, match="single key"):
        SeriesScorer().score_one({"a": 1.0, "b": 2.0})
    det = SeriesScorer(grace_period=0)
    det.learn_one({"cpu": 1.0})  # any single key will do
    assert det.score_one({"cpu": 1.0}) < 0.1


@pytest.mark.parametrize("module", [anomaly, _base, _period, batch, series, window, joint])
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# ----------------------------------------------------------------------------------------------
# range: any finite input gives a score in [0, 1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(finite, min_size=1, max_size=120))
def test_series_scores_in_unit_interval(values: list[float]) -> None:
    scores = score_series(values, SeriesScorer(**small_scorer))
    assert len(scores) == len(values)
    assert all(0.0 <= s <= 1.0 for s in scores)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(["mean", "p95", "max", "coverage"]), finite, min_size=1),
        min_size=1,
        max_size=40,
    ),
    st.dictionaries(st.sampled_from(["mean", "p95", "max", "coverage"]), finite),
)
def test_window_and_joint_scores_in_unit_interval(
    history: list[dict[str, float]], probe: dict[str, float]
) -> None:
    w, j = WindowDetector(), JointDetector(metrics=["mean", "p95", "max"])
    for h in history:
        assert 0.0 <= w.score_one(h) <= 1.0
        assert 0.0 <= j.score_one(h) <= 1.0
        w.learn_one(h)
        j.learn_one(h)
    assert 0.0 <= w.score_one(probe) <= 1.0
    assert 0.0 <= j.score_one(probe) <= 1.0


@pytest.mark.parametrize(
    "values",
    [
        [1e300, -1e300] * 100,  # huge alternating values
        [1e-300 * (i % 7) for i in range(300)],  # tiny values
        [5.0] * 300,  # constant
        [0.0] * 150 + [1e308] + [0.0] * 150,  # a huge spike on zeros
    ],
)
def test_series_extremes_stay_finite_and_bounded(values: list[float]) -> None:
    det = SeriesScorer()
    scores = score_series(values, det)
    assert all(0.0 <= s <= 1.0 for s in scores)
    json.dumps(det.to_state(), allow_nan=False)  # still JSON-safe


def test_non_finite_values_are_ignored() -> None:
    det = SeriesScorer(grace_period=4)
    for v in (1.0, 2.0, 1.0, 2.0, 1.0):
        det.learn_one({"value": v})
    before = det.to_state()
    assert det.score_one({"value": math.nan}) == 0.0
    det.learn_one({"value": math.inf})
    assert det.to_state() == before


# ----------------------------------------------------------------------------------------------
# online-ness


@settings(max_examples=25, deadline=None)
@given(st.lists(finite, min_size=2, max_size=120), st.data())
def test_changing_a_future_point_never_changes_a_past_score(
    values: list[float], data: st.DataObject
) -> None:
    k = data.draw(st.integers(min_value=0, max_value=len(values) - 1))
    changed = list(values)
    changed[k] = data.draw(finite)
    a = score_series(values, SeriesScorer(**small_scorer))
    b = score_series(changed, SeriesScorer(**small_scorer))
    assert a[:k] == b[:k]  # scores before point k never see it


def test_score_one_learns_nothing() -> None:
    det = SeriesScorer()
    score_series(daily(1500, seed=1), det)
    w = WindowDetector()
    j = JointDetector()
    for f in latency_windows(30, seed=2):
        w.learn_one(f)
        j.learn_one(f)
    states = [d.to_state() for d in (det, w, j)]
    det.score_one({"value": 1e6})
    w.score_one({"mean": 1e6})
    j.score_one({"mean": 1e6})
    assert [d.to_state() for d in (det, w, j)] == states


def test_score_csv_rows_matches_score_series() -> None:
    values = daily(600, seed=3)
    rows = [(f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z", v) for i, v in enumerate(values)]
    out = list(score_csv_rows(rows))
    assert [r[0] for r in out] == [r[0] for r in rows]
    assert [r[1] for r in out] == values
    assert [r[2] for r in out] == score_series(values)


# ----------------------------------------------------------------------------------------------
# detection on series


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quiet_on_gaussian_noise(seed: int) -> None:
    scores = score_series(noise(4000, seed, sd=3.0, level=50.0))
    assert false_alarm_rate(scores, skip=300) <= 0.002
    assert sorted(scores)[len(scores) // 2] < 0.05  # near 0 most of the time


@pytest.mark.parametrize(
    "values",
    [
        daily(4000, seed=4),  # daily season, 288 points a day, noisy
        daily(3000, seed=5, period=24, noise_sd=0.0),  # clean hourly-sampled sinusoid
        [10.0 + 5.0 * ((i % 96) >= 48) + random.Random(i).gauss(0, 0.3) for i in range(3000)],
    ],
)
def test_quiet_on_seasonal_series(values: list[float]) -> None:
    scores = score_series(values)
    assert false_alarm_rate(scores, skip=600) <= 0.003


@pytest.mark.parametrize(
    "base, at, bump",
    [
        (noise(3000, 6), 2000, 8.0),  # spike on noise
        (daily(3000, 7), 2500, -10.0),  # dip against the daily season
        (noise(3000, 8, sd=1000.0, level=1e6), 1500, 9000.0),  # another scale
    ],
)
def test_detects_a_spike(base: list[float], at: int, bump: float) -> None:
    values = list(base)
    values[at] += bump
    scores = score_series(values)
    assert scores[at] > 0.9
    assert max(scores[at + 2 : at + 50]) < 0.5  # the spike is not learned as normal


@pytest.mark.parametrize("shift", [6.0, -6.0])
def test_detects_a_level_shift_and_then_relearns_it(shift: float) -> None:
    values = [v + (shift if i >= 2000 else 0.0) for i, v in enumerate(noise(4000, 9))]
    scores = score_series(values)
    assert max(scores[2000:2003]) > 0.9
    assert false_alarm_rate(scores, skip=2100) <= 0.002  # the new level is normal again


def test_detects_a_season_break() -> None:
    values = daily(4000, seed=10)
    for i in range(3000, 3150):
        values[i] = 100.0 + random.Random(i).gauss(0, 1)  # flat where a daily wave belongs
    scores = score_series(values)
    assert max(scores[3000:3150]) > 0.9


# ----------------------------------------------------------------------------------------------
# WindowDetector


@pytest.mark.parametrize("n_baseline", [20, 40])
def test_window_detector_separates_healthy_from_bad(n_baseline: int) -> None:
    rates, lats = [], []
    for seed in range(20):
        err, lat = WindowDetector(), WindowDetector()
        for f in healthy_windows(n_baseline, seed):
            err.learn_one(f)
        for f in latency_windows(n_baseline, seed):
            lat.learn_one(f)
        assert err.n_learned == lat.n_learned == n_baseline
        healthy = [err.score_one(f) for f in healthy_windows(10, 100 + seed)]
        healthy += [lat.score_one(f) for f in latency_windows(10, 100 + seed)]
        rates.append(sum(s < 0.3 for s in healthy) / len(healthy))
        bad_err = {k: 5 * v for k, v in next(healthy_windows(1, 200 + seed)).items()}
        bad_lat = {k: 3 * v for k, v in next(latency_windows(1, 200 + seed)).items()}
        lats.append(min(err.score_one(bad_err), lat.score_one(bad_lat)))
    assert sum(rates) / len(rates) >= 0.95  # healthy noise scores low
    assert min(lats) > 0.9  # error rate x5 and latency x3 score high


def test_window_detector_near_constant_history() -> None:
    det = WindowDetector()
    for i in range(30):
        det.learn_one({"mean": 200.0, "coverage": 1.0 - 1e-9 * (i % 2)})
    assert det.score_one({"mean": 201.0, "coverage": 1.0}) < 0.3  # a tiny wiggle
    assert det.score_one({"mean": 600.0, "coverage": 1.0}) > 0.9
    zero = WindowDetector()
    for _ in range(30):
        zero.learn_one({"mean": 0.0})
    assert zero.score_one({"mean": 0.0}) < 0.3


@pytest.mark.parametrize(
    "direction, value, high",
    [
        ("up", 2.0, True),  # an increase, watched
        ("up", 0.0, False),  # a decrease, ignored
        ("down", 0.0, True),  # a decrease, watched
        ("both", 0.0, True),
    ],
)
def test_window_detector_direction(direction: str, value: float, high: bool) -> None:
    det = WindowDetector(direction=direction)
    rng = random.Random(11)
    for _ in range(30):
        det.learn_one({"mean": 1.0 + rng.gauss(0, 0.05)})
    assert (det.score_one({"mean": value}) > 0.9) is high


def test_window_detector_is_cold_until_it_has_history() -> None:
    det = WindowDetector()
    assert det.n_learned == 0
    assert det.score_one({"mean": 1e9}) == 0.0
    det.learn_one({"mean": 1.0})
    assert det.score_one({"mean": 1e9}) == 0.0  # one window is no baseline


# ----------------------------------------------------------------------------------------------
# JointDetector


def service_windows(n: int, seed: int) -> Iterator[dict[str, float]]:
    rng = random.Random(seed)
    for _ in range(n):
        load = rng.gauss(0, 1)
        yield {
            "request_rate": 100 + 10 * load,
            "latency_p99_ms": 200 + 20 * load + rng.gauss(0, 4),
            "error_rate": 0.005 + rng.gauss(0, 0.001),
        }


def test_joint_detector_catches_unusual_combinations() -> None:
    det = JointDetector()
    for f in service_windows(40, seed=12):
        det.learn_one(f)
    assert det.n_learned == 40
    healthy = [det.score_one(f) for f in service_windows(50, seed=13)]
    assert sum(s < 0.3 for s in healthy) >= 46
    # Less traffic yet slower: each value is within its usual range, the pair is not.
    odd = {"request_rate": 90.0, "latency_p99_ms": 220.0, "error_rate": 0.005}
    assert det.score_one(odd) > 0.9
    assert det.score_one({"request_rate": 100.0, "error_rate": 0.05}) > 0.9  # missing metric


def test_joint_detector_with_context_scores_the_others_given_it() -> None:
    plain = JointDetector()
    det = JointDetector(context=["request_rate"])
    for f in service_windows(40, seed=12):
        plain.learn_one(f)
        det.learn_one(f)
    healthy = [det.score_one(f) for f in service_windows(50, seed=13)]
    assert sum(s < 0.3 for s in healthy) >= 46
    # Traffic far beyond anything learned (a daily cycle past a short history), the others as
    # usual for it: the plain model calls the level itself anomalous, the conditional one not.
    for rate in (180.0, 40.0):  # 8 and 6 standard deviations away
        usual = {"request_rate": rate, "latency_p99_ms": 2 * rate, "error_rate": 0.005}
        assert plain.score_one(usual) > 0.9
        assert det.score_one(usual) < 0.3
    # Less traffic yet slower still departs from what this traffic predicts.
    odd = {"request_rate": 90.0, "latency_p99_ms": 220.0, "error_rate": 0.005}
    assert det.score_one(odd) > 0.9
    assert det.score_one({"request_rate": 100.0, "error_rate": 0.05}) > 0.9


def test_joint_detector_context_only_scores_nothing() -> None:
    det = JointDetector(context=["request_rate"])
    for f in service_windows(30, seed=3):
        det.learn_one({"request_rate": f["request_rate"]})
    assert det.score_one({"request_rate": 1e6}) == 0.0


def test_joint_detector_without_context_is_unchanged() -> None:
    a, b = JointDetector(), JointDetector(context=[])
    xs = list(service_windows(60, seed=21))
    assert _drive(a, xs) == _drive(b, xs)
    assert a.to_state()["state"] == b.to_state()["state"]


def test_joint_detector_skips_incomplete_windows() -> None:
    det = JointDetector(metrics=["a", "b"])
    det.learn_one({"a": 1.0})
    det.learn_one({"a": 1.0, "b": math.nan})
    assert det.n_learned == 0


def test_joint_detector_speed_budget() -> None:
    import time

    det = JointDetector()
    rows = list(service_windows(2000, seed=14))
    t0 = time.perf_counter()
    for f in rows:
        det.score_one(f)
        det.learn_one(f)
    per_call = (time.perf_counter() - t0) / len(rows)
    assert per_call < 200e-6  # budget 50 us; slack for slow CI machines


# ----------------------------------------------------------------------------------------------
# state


def _series_stream() -> list[float]:
    values = daily(3000, seed=15, period=96)
    values[1800] += 30.0
    for i in range(2200, 3000):
        values[i] += 15.0  # a level shift, re-learned mid-stream
    return values


def _window_stream() -> list[dict[str, float]]:
    return list(latency_windows(150, seed=16))


def _joint_stream() -> list[dict[str, float]]:
    return list(service_windows(300, seed=17))


def _drive(det: Any, xs: list[Any]) -> list[float]:
    out = []
    for x in xs:
        out.append(det.score_one(x))
        det.learn_one(x)
    return out


@pytest.mark.parametrize(
    "make, stream, cut",
    [
        (SeriesScorer, lambda: [{"value": v} for v in _series_stream()], 2210),
        (SeriesScorer, lambda: [{"value": v} for v in _series_stream()], 30),
        (WindowDetector, _window_stream, 70),
        (JointDetector, _joint_stream, 135),
        (lambda: JointDetector(context=["request_rate"]), _joint_stream, 90),
    ],
)
def test_restored_detector_scores_identically(
    make: Callable[[], Any], stream: Callable[[], list[Any]], cut: int
) -> None:
    xs = stream()
    straight = make()
    expected = _drive(straight, xs)
    first = make()
    _drive(first, xs[:cut])
    text = json.dumps(first.to_state(), allow_nan=False)  # the changelog round trip
    restored = type(first).from_state(json.loads(text))
    assert restored.snapshot_id() == first.snapshot_id()
    got = _drive(restored, xs[cut:])
    assert repr(got) == repr(expected[cut:])  # byte-identical
    assert restored.to_state() == straight.to_state()
    unpickled = pickle.loads(pickle.dumps(straight))
    assert unpickled.snapshot_id() == straight.snapshot_id()
    assert _drive(unpickled, xs[:50]) == _drive(straight, xs[:50])


def test_from_state_of_an_unlearned_detector() -> None:
    for cls in (SeriesScorer, WindowDetector, JointDetector):
        det = cls.from_state(cls().to_state())
        assert det.to_state()["state"] is None


def test_from_state_refuses_another_kind() -> None:
    with pytest.raises(ValueError, match="WindowDetector"):
        SeriesScorer.from_state(WindowDetector().to_state())


def test_snapshot_id_is_short_stable_and_tracks_learning() -> None:
    det = WindowDetector()
    a = det.snapshot_id()
    assert len(a) == 12 and int(a, 16) >= 0
    assert a == WindowDetector().snapshot_id()
    det.learn_one({"mean": 1.0})
    assert det.snapshot_id() != a


_SUBPROCESS = """
import json, sys
sys.path.insert(0, {root!r})
from rollguard.models.anomaly import JointDetector, SeriesScorer, WindowDetector, score_series
import tests.unit.test_anomaly as t
s = SeriesScorer()
scores = score_series(t._series_stream(), s)
w, j = WindowDetector(), JointDetector()
t._drive(w, t._window_stream())
t._drive(j, t._joint_stream())
print(json.dumps([repr(scores), s.snapshot_id(), w.snapshot_id(), j.snapshot_id()]))
"""


def test_same_input_same_output_across_processes() -> None:
    s = SeriesScorer()
    scores = score_series(_series_stream(), s)
    w, j = WindowDetector(), JointDetector()
    _drive(w, _window_stream())
    _drive(j, _joint_stream())
    mine = [repr(scores), s.snapshot_id(), w.snapshot_id(), j.snapshot_id()]
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS.format(root=str(ROOT))],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"},
            cwd=ROOT,
        )
        assert json.loads(out.stdout) == mine
