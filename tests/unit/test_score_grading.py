"""Issue 11, item 7: ``score-series`` scores are graded (no saturation ties at the top) and a
noiseless periodic or flat series gets no runs of maximal scores."""

from __future__ import annotations

import math

import pytest

from rollguard.models.anomaly import SeriesScorer, score_series

N = 3000


def _square(i: int) -> float:
    return 10.0 if (i % 144) < 72 else 20.0


def _steps(i: int) -> float:
    # flat at 3, one point in ~100 one unit higher (deterministic, irregular)
    return 4.0 if (i * 7919) % 997 < 10 else 3.0


SERIES = {
    "square": [_square(i) for i in range(N)],
    "sine": [10.0 + 5.0 * math.sin(2 * math.pi * i / 50) for i in range(N)],
    "sawtooth": [float(i % 288) for i in range(N)],
    "steps": [_steps(i) for i in range(N)],
    "constant": [7.0] * N,
}


def _longest_run(scores: list[float], at_least: float) -> int:
    run = best = 0
    for s in scores:
        run = run + 1 if s >= at_least else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("name", sorted(SERIES))
def test_no_saturation_and_no_runs_on_noiseless_series(name: str) -> None:
    scores = score_series(SERIES[name])
    assert max(scores) < 1.0  # never saturated
    # a periodic or flat series is not anomalous for long: no run of high scores
    assert _longest_run(scores, 0.9) <= 3, name
    assert sum(1 for s in scores if s >= 0.9) <= 10, name


@pytest.mark.parametrize("name", ["square", "sine", "steps", "constant"])
def test_top_scores_are_graded_not_tied(name: str) -> None:
    # Departures of growing size from a noiseless series: each scores higher than the one
    # before and below 1.0, so the top of a corpus keeps its order (one threshold can be
    # selective); the old logistic gave 1.0 to all of them.
    scorer = SeriesScorer()
    for v in SERIES[name][:2000]:
        scorer.learn_one({"value": v})
    nxt = SERIES[name][2000]
    top = [scorer.score_one({"value": nxt + 10.0 * 4**k}) for k in range(6)]
    assert top == sorted(top) and len(set(top)) == len(top), top
    assert top[0] > 0.9 and top[-1] < 1.0
