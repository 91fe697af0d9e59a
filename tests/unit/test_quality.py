"""Each signal-quality check, table-driven, and the window-blocker rules composing them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from rollguard.models.alerts import AlertBook
from rollguard.models.events import ReasonCode
from rollguard.models.facts import DeploymentFacts, FleetFacts
from rollguard.models.judgement import Judgement
from rollguard.models.quality import (
    Signals,
    baseline_instability,
    cold_models,
    coverage,
    expected_samples,
    flapping_alerts,
    low_traffic,
    read_signals,
    relative_gap,
    source_disagreements,
    span_coverage,
    span_windows,
    stale_streams,
    traffic_drain,
)
from rollguard.models.rules import WINDOW_BLOCKERS, evaluate
from rollguard.models.windows import (
    Baseline,
    WindowAccumulator,
    WindowSummary,
    build_baseline,
    summarize_window,
)
from tests.unit.core_factories import alert, load_policy

POLICY = load_policy()
SP = POLICY.for_service("search")


def window(
    k: int = 100,
    rows: Iterable[tuple[str, float] | tuple[str, float, str]] = (),
    per_metric: int = 3,
) -> WindowSummary:
    """A 30-s window with ``per_metric`` samples of each (metric, value[, source])."""
    acc = WindowAccumulator()
    for row in rows:
        name, value = row[0], row[1]
        source = row[2] if len(row) > 2 else "prom"  # type: ignore[misc]
        for i in range(per_metric):
            acc.add_sample(name, source, None, k * 30.0 + 1 + 10 * i, value)
    return summarize_window(k, 30, acc)


HEALTHY_ROWS = [("error_rate", 0.01), ("latency_p99_ms", 200.0), ("request_rate", 100.0)]


def baseline(rows: Iterable[tuple[str, float]] = HEALTHY_ROWS, n: int = 20) -> Baseline:
    rows = list(rows)
    return build_baseline([window(k, rows) for k in range(n)], 0, n - 1)


@pytest.mark.parametrize(
    ("streams", "expected"),
    [
        (None, 3.0),  # no baseline: one stream, 30 s / 10 s
        (1, 3.0),  # one stream in the baseline
        (2, 6.0),  # two instances reporting: twice the samples
    ],
)
def test_expected_samples(streams: int | None, expected: float) -> None:
    base = None
    if streams is not None:
        acc_rows = [window(0, [("error_rate", 0.01)])]
        if streams == 2:
            acc = WindowAccumulator()
            for inst in ("a", "b"):
                acc.add_sample("error_rate", "prom", inst, 1.0, 0.01)
            acc_rows = [summarize_window(0, 30, acc)]
        base = build_baseline(acc_rows, 0, 0)
    assert expected_samples(SP, "error_rate", base) == expected


def test_coverage_counts_every_policy_metric() -> None:
    cov = coverage(window(rows=[("error_rate", 0.01)], per_metric=2), SP, None)
    assert cov == {"error_rate": pytest.approx(2 / 3), "latency_p99_ms": 0.0, "request_rate": 0.0}


@pytest.mark.parametrize(
    ("last", "stale"),
    [
        (3000.0 - 89.0, False),  # 89 s of silence: fresh
        (3000.0 - 90.0, True),  # 90 s: stale (stale_after_seconds)
        (None, True),  # never seen since the baseline: stale
    ],
)
def test_stale_streams(last: float | None, stale: bool) -> None:
    seen = {("error_rate", "prom"): last} if last is not None else {}
    out = stale_streams(seen, baseline(), SP.metrics, 3000.0, SP.stale_after_seconds)
    assert ("error_rate/prom" in out) is stale


def test_stale_ignores_streams_outside_the_baseline_and_without_one() -> None:
    assert stale_streams({}, None, SP.metrics, 3000.0, 90.0) == {}
    base = baseline([("error_rate", 0.01), ("cpu", 0.5)])
    out = stale_streams({}, base, SP.metrics, 3000.0, 90.0)
    assert sorted(out) == ["error_rate/prom"]  # cpu is not a policy metric


@pytest.mark.parametrize(
    ("flips", "flapping"),
    [
        ([610, 620, 630], False),  # three flips: below flap_limit 4
        ([610, 620, 630, 640], True),  # four flips in 300 s
        ([100, 620, 630, 640], False),  # one of the four is outside the flap window
    ],
)
def test_flapping(flips: list[int], flapping: bool) -> None:
    book = AlertBook()
    events = [alert(t, "firing" if i % 2 == 0 else "resolved") for i, t in enumerate(flips)]
    book.record(events, keep_after=0)
    out = flapping_alerts(book, 700.0, SP.flap_window_seconds, SP.flap_limit)
    assert ("HighErrorRate" in out) is flapping


def test_alert_book_flips_and_criticals() -> None:
    book = AlertBook()
    book.record([alert(1), alert(2), alert(3, "resolved")], keep_after=0)
    assert book.flips_since(0) == {"HighErrorRate": 2}  # a re-notification is not a flip
    assert book.resolved_since(3) == {"HighErrorRate": 3}
    assert book.critical_during(2) == ("HighErrorRate",)
    assert book.critical_during(2.5) == ()
    book.record([alert(4, severity="warning", name="Cpu")], keep_after=0)
    book.carry_firing(30)
    assert book.critical_during(30) == ()  # warnings are not critical


@pytest.mark.parametrize(
    ("a", "b", "gap"),
    [(1.0, 2.0, 0.5), (0.0, 0.0, 0.0), (-1.0, 1.0, 2.0), (0.08, 0.004, 0.95)],
)
def test_relative_gap(a: float, b: float, gap: float) -> None:
    assert relative_gap(a, b) == pytest.approx(gap)


@pytest.mark.parametrize(
    ("prom", "dd", "conflict"),
    [
        (0.01, 0.012, False),  # sources agree
        (0.01, 0.006, False),  # 40 % apart: within source_tolerance 0.5
        (0.08, 0.004, True),  # 95 % apart
    ],
)
def test_source_disagreement(prom: float, dd: float, conflict: bool) -> None:
    w = window(rows=[("error_rate", prom, "prom"), ("error_rate", dd, "datadog")])
    assert ("error_rate" in source_disagreements(w, SP)) is conflict


@pytest.mark.parametrize(
    ("traffic", "drained"),
    [(100.0, False), (10.0, False), (9.9, True), (0.1, True)],  # 10 % of the baseline's 100
)
def test_traffic_drain(traffic: float, drained: bool) -> None:
    w = window(rows=[("error_rate", 0.4), ("request_rate", traffic)])
    assert ("request_rate" in traffic_drain(w, SP, baseline())) is drained


@pytest.mark.parametrize(
    ("learned", "cold"),
    [({}, {"error_rate": 0}), ({"error_rate": 9}, {"error_rate": 9}), ({"error_rate": 10}, {})],
)
def test_cold_models(learned: dict[str, int], cold: dict[str, int]) -> None:
    assert cold_models(("error_rate",), learned, SP.min_baseline_windows) == cold


def test_baseline_instability() -> None:
    steady = baseline()
    bursty = build_baseline(
        [window(k, [("error_rate", 0.05 if k % 5 == 0 else 0.001)]) for k in range(20)], 0, 19
    )
    assert baseline_instability(("error_rate",), SP, steady) == {}
    assert baseline_instability(("error_rate",), SP, bursty)["error_rate"] > SP.max_baseline_cv
    assert baseline_instability(("error_rate",), SP, None) == {}


@pytest.mark.parametrize(
    ("means", "low"),
    [
        ({"request_rate": 50.0}, {}),  # busy enough
        ({"request_rate": 0.5}, {"request_rate": 0.5}),  # below min_traffic 1.0
        ({"request_rate": None}, {"request_rate": None}),  # no traffic sample at all
    ],
)
def test_low_traffic(means: dict[str, float | None], low: dict[str, float | None]) -> None:
    assert low_traffic(means, SP.min_traffic) == low


def _judge(
    w: WindowSummary,
    *,
    base: Baseline | None = None,
    last_seen: dict[tuple[str, str], float] | None = None,
    book: AlertBook | None = None,
    breaching: tuple[str, ...] = (),
    learned: dict[str, int] | None = None,
    traffic: float | None = 100.0,
    span: list[dict[str, int]] | None = None,
) -> tuple[dict[ReasonCode, str], Signals]:
    """The window blockers of one window of a deployment of ``search``, and its signals."""
    if last_seen is None:
        last_seen = {(m, "prom"): w.end - 5 for m, _ in HEALTHY_ROWS}
    base = base if base is not None else baseline()
    signals = read_signals(
        w,
        SP,
        base,
        last_seen,
        book or AlertBook(),
        breaching=breaching,
        learned=learned or {m: 20 for m in breaching},
        traffic_means={"request_rate": traffic},
        span=span or [{name: stats.count for name, stats in w.metrics.items()}],
    )
    facts = DeploymentFacts("dep-1", "search", "v2", "v1", "svc:ci", w.start)
    judgement = Judgement(facts, POLICY, SP, FleetFacts(), w, base, signals=signals)
    return evaluate(WINDOW_BLOCKERS, judgement), signals


def _assess(w: WindowSummary, **kw: Any) -> set[ReasonCode]:
    return set(_judge(w, **kw)[0])


def test_assess_healthy_window_has_no_blocker() -> None:
    assert _assess(window(rows=HEALTHY_ROWS)) == set()


def test_assess_stale_metric_is_not_also_incomplete() -> None:
    w = window(rows=[("error_rate", 0.01), ("request_rate", 100.0)])
    seen = {("error_rate", "prom"): w.end - 5, ("request_rate", "prom"): w.end - 5}
    seen[("latency_p99_ms", "prom")] = w.end - 200
    assert _assess(w, last_seen=seen) == {ReasonCode.TELEMETRY_STALE}


def test_assess_missing_scrape_is_incomplete() -> None:
    w = window(rows=[("error_rate", 0.01), ("request_rate", 100.0)])
    w2 = window(rows=[("latency_p99_ms", 200.0)], per_metric=1)
    merged = WindowSummary(w.k, w.start, w.end, {**w.metrics, **w2.metrics})
    assert _assess(merged) == {ReasonCode.TELEMETRY_INCOMPLETE}


def test_assess_breach_while_alert_resolved_conflicts() -> None:
    w = window(rows=[("error_rate", 0.4), ("latency_p99_ms", 200.0), ("request_rate", 100.0)])
    book = AlertBook()
    book.record([alert(w.start - 40), alert(w.start - 20, "resolved")], keep_after=0)
    codes = _assess(w, book=book, breaching=("error_rate",))
    assert codes == {ReasonCode.SIGNALS_CONFLICT}
    # resolved two windows ago: no longer "the same or previous window"
    book2 = AlertBook()
    book2.record([alert(w.start - 70), alert(w.start - 61, "resolved")], keep_after=0)
    assert _assess(w, book=book2, breaching=("error_rate",)) == set()


def test_assess_traffic_drain_conflicts_and_low_traffic() -> None:
    w = window(rows=[("error_rate", 0.4), ("latency_p99_ms", 200.0), ("request_rate", 0.2)])
    codes = _assess(w, breaching=("error_rate",), traffic=0.2)
    assert codes == {ReasonCode.SIGNALS_CONFLICT, ReasonCode.LOW_TRAFFIC}


def test_assess_cold_and_unstable_only_for_breaching_metrics() -> None:
    w = window(rows=HEALTHY_ROWS)
    bursty = build_baseline(
        [
            window(k, [*HEALTHY_ROWS[1:], ("error_rate", 0.05 if k % 5 == 0 else 0.001)])
            for k in range(20)
        ],
        0,
        19,
    )
    assert _assess(w, base=bursty, learned={"error_rate": 3}) == set()
    codes = _assess(w, base=bursty, breaching=("error_rate",), learned={"error_rate": 3})
    assert codes == {ReasonCode.MODEL_COLD, ReasonCode.BASELINE_UNSTABLE}


def test_assess_flapping() -> None:
    w = window(rows=HEALTHY_ROWS)
    book = AlertBook()
    book.record(
        [alert(w.end - 100 + 10 * i, "firing" if i % 2 == 0 else "resolved") for i in range(5)],
        keep_after=0,
    )
    assert _assess(w, book=book) == {ReasonCode.ALERT_FLAPPING}


# ---------------------------------------------------------------------------------------------
# completeness over the decision's span, not one window


def _counts(*per_window: int) -> list[dict[str, int]]:
    return [{m: n for m, _ in HEALTHY_ROWS} for n in per_window]


@pytest.mark.parametrize(
    ("span", "coverage_", "samples", "windows"),
    [
        ([3, 2], 5 / 6, 5, 2),  # one lost scrape in the deciding window: tolerated
        ([2, 3], 5 / 6, 5, 2),
        ([2, 2], 4 / 6, 4, 2),  # two lost scrapes in a minute: incomplete
        ([0, 0, 3, 3], 1.0, 6, 2),  # only the windows of the decision count
        ([2], 2 / 3, 2, 1),  # the first observation window: all there is
    ],
)
def test_span_coverage(span: list[int], coverage_: float, samples: int, windows: int) -> None:
    got = span_coverage(_counts(*span), SP, baseline())["error_rate"]
    assert got["coverage"] == pytest.approx(coverage_)
    assert got["samples"] == samples and got["windows"] == windows
    assert got["expected"] == 3 * windows


def test_span_widens_to_six_expected_samples() -> None:
    assert span_windows(SP, 3.0) == 2
    assert span_windows(SP, 2.0) == 3
    assert span_windows(SP, 1.0) == 6
    assert span_windows(SP, 0.5) == 6  # capped
    long = load_policy(consecutive_breach_windows=4).for_service("search")
    assert span_windows(long, 3.0) == 4


def test_assess_judges_completeness_over_the_span() -> None:
    w = window(rows=[("error_rate", 0.01), ("request_rate", 100.0)])
    w2 = window(rows=[("latency_p99_ms", 200.0)], per_metric=2)
    merged = WindowSummary(w.k, w.start, w.end, {**w.metrics, **w2.metrics})
    last_seen = {(m, "prom"): w.end - 5 for m, _ in HEALTHY_ROWS}

    def judge(span: list[dict[str, int]] | None) -> tuple[dict[ReasonCode, str], Signals]:
        return _judge(merged, last_seen=last_seen, span=span)

    alone, _ = judge(None)
    assert ReasonCode.TELEMETRY_INCOMPLETE in alone
    span = [{"error_rate": 3, "latency_p99_ms": 3, "request_rate": 3}]
    span.append({"error_rate": 3, "latency_p99_ms": 2, "request_rate": 3})
    over, signals = judge(span)
    assert ReasonCode.TELEMETRY_INCOMPLETE not in over
    assert coverage(merged, SP, baseline())["latency_p99_ms"] == pytest.approx(2 / 3)
    assert signals.span["latency_p99_ms"]["coverage"] == pytest.approx(5 / 6)
    span[0]["latency_p99_ms"] = 2
    worse, _ = judge(span)
    assert (
        "latency_p99_ms coverage 0.666667 < 0.8 over the last 2 windows (4 of 6 samples)"
        in (worse[ReasonCode.TELEMETRY_INCOMPLETE])
    )
