"""Window arithmetic, aggregation, baselines, and the engine's watermark and late events."""

from __future__ import annotations

import doctest
import importlib
import pickle
from pathlib import Path

import pytest

from rollguard.models.engine import advance, new_state, step
from rollguard.models.windows import (
    WindowAccumulator,
    build_baseline,
    first_window_from,
    fold_metrics,
    ordered_alerts,
    percentile95,
    summarize_window,
    window_bounds,
    window_index,
)
from tests.unit.core_factories import (
    KIT,
    T0,
    alert,
    deploy,
    in_time_order,
    load_policy,
    sample,
    telemetry,
)

POLICY = load_policy()


@pytest.mark.parametrize(
    ("ts", "width", "k", "first"),
    [
        (0.0, 30, 0, 0),  # the epoch starts window 0
        (29.999, 30, 0, 1),  # just before a boundary: still window 0
        (30.0, 30, 1, 1),  # a boundary belongs to the window it starts
        (95.5, 30, 3, 4),  # mid-window: the first window from it is the next one
        (T0 + 5.0, 30, int(T0 // 30), int(T0 // 30) + 1),  # epoch-aligned windows
        (120.0, 60, 2, 2),  # another width
    ],
)
def test_window_index_and_first_window(ts: float, width: int, k: int, first: int) -> None:
    assert window_index(ts, width) == k
    start, end = window_bounds(k, width)
    assert start <= ts < end and end - start == width
    assert first_window_from(ts, width) == first


@pytest.mark.parametrize(
    ("values", "p95"),
    [
        ([5.0], 5.0),  # one value is its own percentile
        ([1.0, 2.0, 3.0], 3.0),  # nearest rank of 3 samples is the largest
        ([float(i) for i in range(1, 21)], 19.0),  # ceil(0.95 * 20) = 19th
        ([float(i) for i in range(1, 101)], 95.0),  # the textbook case
    ],
)
def test_percentile95_is_nearest_rank(values: list[float], p95: float) -> None:
    assert percentile95(values) == p95


def _acc(*samples: tuple[str, str, str | None, float, float]) -> WindowAccumulator:
    acc = WindowAccumulator()
    for name, source, instance, ts, value in samples:
        acc.add_sample(name, source, instance, ts, value)
    return acc


def test_fold_metrics_single_source() -> None:
    acc = _acc(("lat", "prom", None, 12.0, 3.0), ("lat", "prom", None, 2.0, 1.0))
    stats = fold_metrics(acc)["lat"]
    assert (stats.count, stats.mean, stats.p95, stats.max, stats.streams) == (2, 2.0, 3.0, 3.0, 1)
    assert stats.last_seen == {"prom": 12.0}  # newest sample time, not the last added
    assert stats.sources == {}  # per-source stats only when sources can disagree


def test_fold_metrics_keeps_per_source_stats_and_streams() -> None:
    acc = _acc(
        ("err", "prom", "pod-1", 1.0, 0.1),
        ("err", "prom", "pod-2", 2.0, 0.3),
        ("err", "datadog", None, 3.0, 0.01),
    )
    stats = fold_metrics(acc)["err"]
    assert stats.count == 3 and stats.streams == 3
    assert stats.sources["prom"].mean == pytest.approx(0.2)
    assert stats.sources["datadog"].mean == pytest.approx(0.01)
    assert stats.last_seen == {"datadog": 3.0, "prom": 2.0}


def test_empty_window_summary_and_alert_order() -> None:
    assert summarize_window(7, 30, None).metrics == {}
    acc = WindowAccumulator()
    acc.alerts += [alert(T0 + 20, "resolved"), alert(T0 + 5), alert(T0 + 20, "firing")]
    assert [(a.ts - T0, a.status) for a in ordered_alerts(acc)] == [
        (5.0, "firing"),
        (20.0, "firing"),  # same time: ordered by content, not arrival
        (20.0, "resolved"),
    ]


def test_accumulator_pickles() -> None:
    acc = _acc(("lat", "prom", None, 1.0, 2.0))
    acc.alerts.append(alert(T0))
    copy = pickle.loads(pickle.dumps(acc))
    assert copy.samples == acc.samples and copy.alerts == acc.alerts


def test_build_baseline_folds_the_range_only() -> None:
    summaries = [
        summarize_window(k, 30, _acc(("lat", "prom", None, k * 30.0 + 1, value)))
        for k, value in [(1, 100.0), (2, 200.0), (3, 300.0), (4, 9999.0)]
    ]
    summaries.insert(1, summarize_window(5, 30, None))  # an empty window is skipped
    base = build_baseline(summaries, 1, 3)
    lat = base.metrics["lat"]
    assert (base.windows, lat.windows, lat.mean, lat.streams) == (3, 3, 200.0, 1)
    assert lat.cv["mean"] == pytest.approx((20000.0 / 3) ** 0.5 / 200.0)  # population std / mean
    assert base.stat("lat", "max") == 200.0 and base.stat("missing", "mean") is None


def test_baseline_streams_is_the_most_seen_in_one_window() -> None:
    rows = [
        summarize_window(1, 30, _acc(("err", "prom", "a", 31.0, 1.0))),
        summarize_window(
            2, 30, _acc(("err", "prom", "a", 61.0, 1.0), ("err", "prom", "b", 62.0, 1.0))
        ),
    ]
    assert build_baseline(rows, 1, 2).metrics["err"].streams == 2


# ---------------------------------------------------------------------------------------------
# Watermark and late events, through the engine
# ---------------------------------------------------------------------------------------------


def _open_windows(state: object, service: str) -> list[int]:
    return sorted(state.services[service].open)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("clock_offset", "closed"),
    [
        (30.0 + 9.9, False),  # watermark = clock - 10 lateness: not yet at the window's end
        (30.0 + 10.0, True),  # watermark reaches the end: the window closes
    ],
)
def test_window_closes_when_the_watermark_reaches_its_end(
    clock_offset: float, closed: bool
) -> None:
    state = new_state(KIT)
    step(state, sample("search", "error_rate", 0.01, T0 + 1), POLICY)
    step(state, sample("other", "error_rate", 0.01, T0 + clock_offset), POLICY)
    k = int(T0 // 30)
    assert (k not in _open_windows(state, "search")) is closed
    ring = state.services["search"].ring
    assert [s.k for s in ring] == ([k] if closed else [])


def test_late_sample_is_counted_not_aggregated_and_reported() -> None:
    policy = POLICY
    state = new_state(KIT)
    d = T0 + 1500
    events = in_time_order(telemetry("search", T0, d + 60), [deploy(d)])
    for event in events:
        step(state, event, policy)
    svc = state.services["search"]
    before = svc.ring[-1]
    # A sample for a window that has already closed (older than the watermark)
    step(state, sample("search", "error_rate", 0.5, before.start + 1), policy)
    assert svc.late_events == 1 and svc.late_total == 1
    assert svc.ring[-1] is before  # the closed window is not changed
    outputs = []
    for event in telemetry("search", d + 60, d + 700):
        outputs += step(state, event, policy)
    outputs += advance(state, policy, d + 700)
    decisions = [o for o in outputs if o.type == "decision"]
    assert decisions and decisions[0].evidence["late_events"] == 1
    assert svc.late_events == 0  # reported once
    assert all(d.evidence["late_events"] == 0 for d in decisions[1:])


def test_events_within_lateness_are_not_late() -> None:
    state = new_state(KIT)
    step(state, sample("search", "error_rate", 0.01, T0 + 35), POLICY)
    step(state, sample("search", "error_rate", 0.01, T0 + 26), POLICY)  # 9 s behind: on time
    step(state, sample("search", "error_rate", 0.01, T0 + 45), POLICY)  # closes [T0, T0+30)
    svc = state.services["search"]
    assert svc.late_events == 0 and svc.ring[-1].metrics["error_rate"].count == 1


def test_advance_closes_windows_without_events() -> None:
    state = new_state(KIT)
    step(state, sample("search", "error_rate", 0.01, T0 + 1), POLICY)
    assert advance(state, POLICY, T0 + 30) == []
    assert state.services["search"].ring[-1].k == int(T0 // 30)
    assert not state.services["search"].open


def test_memory_stays_flat_in_the_number_of_events() -> None:
    state = new_state(KIT)
    for event in telemetry("search", T0, T0 + 6 * 3600):
        step(state, event, POLICY)
    svc = state.services["search"]
    assert len(svc.ring) == svc.ring.maxlen == 24  # baseline 20 + 2 breach windows + 2
    assert len(svc.open) <= 2
    assert all(len(v) <= 20 for v in svc.rolling.values())


@pytest.mark.parametrize(
    "module",
    ["windows", "alerts", "quality", "decide", "records", "scoring", "trial", "state", "engine"],
)
def test_core_doctests(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples in the core's docstrings run (decide's reads config/policy.yaml)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    result = doctest.testmod(importlib.import_module(f"rollguard.models.{module}"))
    assert result.failed == 0


def test_a_metric_with_and_without_an_instance_folds_into_one() -> None:
    # One stream with no instance and one with an instance, beside a single-stream metric:
    # grouped (never sorted against each other: None and str do not compare).
    acc = WindowAccumulator()
    acc.add_sample("latency_p99_ms", "prom", None, 1.0, 100.0)
    acc.add_sample("latency_p99_ms", "prom", "pod-1", 2.0, 300.0)
    acc.add_sample("error_rate", "prom", None, 1.0, 0.01)
    metrics = fold_metrics(acc)
    assert list(metrics) == ["error_rate", "latency_p99_ms"]
    assert metrics["latency_p99_ms"].count == 2 and metrics["latency_p99_ms"].streams == 2
    assert metrics["latency_p99_ms"].max == 300.0 and metrics["error_rate"].streams == 1
