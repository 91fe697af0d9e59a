"""Batch helpers over ``SeriesScorer``: a list of values, or CSV-like (timestamp, value) rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .series import SeriesScorer


def score_series(values: Iterable[float], scorer: SeriesScorer | None = None) -> list[float]:
    """Online scores: each point is scored from past points only, then learned.

    >>> scores = score_series([1.0, 2.0] * 100 + [50.0] + [1.0, 2.0] * 10)
    >>> max(scores[:200]) < 0.1, scores[200] > 0.9
    (True, True)
    """
    model = SeriesScorer() if scorer is None else scorer
    out: list[float] = []
    for v in values:
        x = {"value": v}
        out.append(model.score_one(x))
        model.learn_one(x)
    return out


def score_csv_rows(
    rows: Iterable[tuple[str, float]], scorer: SeriesScorer | None = None
) -> Iterator[tuple[str, float, float]]:
    """``(timestamp, value)`` rows to ``(timestamp, value, anomaly_score)``, lazily, in order.

    Timestamps pass through untouched; the model uses the order of the rows only.

    >>> list(score_csv_rows([("2026-01-01T00:00:00Z", 1.0)]))
    [('2026-01-01T00:00:00Z', 1.0, 0.0)]
    """
    model = SeriesScorer() if scorer is None else scorer
    for ts, v in rows:
        x = {"value": v}
        s = model.score_one(x)
        model.learn_one(x)
        yield ts, v, s
