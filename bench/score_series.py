"""``rollguard score-series`` against river's detectors and a trailing-window Gaussian, NAB-style.

The corpus (all labelled, nothing downloaded):

- **synthetic** (``bench/anomaly_speed.py``'s generator): 11 kinds of operations-like series
  (noise, Student-t noise, daily, business hours, weekly, random walk, trend, Poisson counts,
  sawtooth, cron spikes, quantised) with 0-3 injected anomalies of 8 kinds, any scale;
- **noiseless** series (square wave, sine, sawtooth, a flat quantised level with rare steps)
  with the same anomalies: the series on which a score saturates or alarms for long runs;
- **real**: river's bundled ``WaterFlow`` (hourly water flow of a pipeline branch, 1,268
  points). Its documentation names four anomalous segments (three low-value moments, one small
  peak after the first two); the labels are derived from that description by a fixed rule
  (the first point of each drop below 90 l/s, and the highest point between the second and
  third drop), not by eye.

Scoring follows NAB (``anomaly_speed.nab_score``: a window of 10 % of the length / anomalies
centred on each onset, the first detection in a window earns a scaled sigmoid of its position,
every detection outside a window costs ``fp_weight``, a missed window costs ``fn_weight``, 0 =
never fires, 100 = perfect). Each detector gets **one threshold for the whole corpus**, chosen
the same way for every detector: the best NAB score on the training seeds among the values of
its own pooled training scores at fixed quantile levels (so detectors whose scores are not in
[0, 1] are treated alike), then applied unchanged to the held-out seeds and the real series.

Detectors: ``SeriesScorer`` (``score_series``); river's out-of-the-box univariate detectors
(``HalfSpaceTrees`` behind a ``MinMaxScaler``, ``GaussianScorer``,
``StandardAbsoluteDeviation``, ``OneClassSVM`` behind a ``StandardScaler``,
``PredictiveAnomalyDetection`` with ``SNARIMAX(1, 0, 0)``), the best of which is reported; and
NAB's trailing-window Gaussian (window 6,400). Also printed per detector (``tied``, ``run``):
of the alarming points (score >= its threshold), the share that tie with another point at their
series' maximum score, and the longest run of maximal scores: saturation no threshold can split.

    python bench/score_series.py                       # train seeds 0-4, test 100-109
    python bench/score_series.py --train 0-9 --test 100-119 --river hst,gauss
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly_speed import (  # noqa: E402
    ANOMALIES,
    PROFILES,
    LabelledSeries,
    _inject,
    _scaled_sigmoid,
    make_corpus,
    nab_windows,
    parse_seeds,
    windowed_gaussian,
)

from rollguard.models.anomaly import score_series  # noqa: E402

Scores = list[float]

# -- corpus -----------------------------------------------------------------------------------

NOISELESS = ("square", "sine", "saw", "steps")


def make_noiseless(seed: int, index: int) -> LabelledSeries:
    """A noiseless periodic (or flat, quantised) series with 0-2 injected anomalies."""
    rng = np.random.default_rng([seed, index, 7])
    kind = NOISELESS[index % len(NOISELESS)]
    n = int(rng.choice([2000, 4000]))
    t = np.arange(n, dtype=float)
    period = int(rng.choice([24, 50, 144, 288]))
    if kind == "square":
        y = np.where((t % period) < period // 2, 10.0, 20.0)
    elif kind == "sine":
        y = 10.0 + 5.0 * np.sin(2 * math.pi * t / period)
    elif kind == "saw":
        y = (t % period) * 1.0
    else:  # a flat level that steps by one unit now and then, back the next point
        y = np.full(n, 3.0)
        y[rng.random(n) < 0.01] += 1.0
    spread = float(np.std(y)) or 1.0
    k = int(rng.integers(0, 3))
    onsets: list[int] = []
    kinds: list[str] = []
    start = int(0.3 * n)
    for j in range(k):
        lo = start + j * (n - start) // k
        at = int(rng.integers(lo, lo + (n - start) // k - int(0.1 * n / k)))
        kind_a = ANOMALIES[int(rng.integers(len(ANOMALIES)))]
        _inject(y, kind_a, at, 0.2 * spread, rng, "daily")
        onsets.append(at)
        kinds.append(kind_a)
    return LabelledSeries(f"{kind}:{'+'.join(kinds) or 'clean'}:seed{seed}/{index}", y.tolist(),
                          onsets)  # fmt: skip


def water_flow() -> LabelledSeries | None:
    """river's WaterFlow with the documented anomalies (see the module doc), or None."""
    try:
        from river.datasets import WaterFlow
    except ImportError:
        return None
    path = Path(WaterFlow().path)
    with path.open() as f:
        values = [float(r[1]) for r in list(csv.reader(f))[1:]]
    drops = [i for i, v in enumerate(values) if v < 90.0 and (i == 0 or values[i - 1] >= 90.0)]
    # One onset per documented low-value moment: drops more than a day apart.
    lows: list[int] = []
    for i in drops:
        if not lows or i - lows[-1] > 24:
            lows.append(i)
    onsets = sorted(lows[:3])
    if len(onsets) >= 3:
        a, b = onsets[1], onsets[2]
        onsets.append(max(range(a + 24, b - 24), key=lambda i: values[i]))
    return LabelledSeries("real:WaterFlow", values, sorted(onsets))


def corpus(seeds: Sequence[int]) -> list[LabelledSeries]:
    return make_corpus(seeds) + [make_noiseless(s, i) for s in seeds for i in range(4)]


# -- detectors --------------------------------------------------------------------------------


def _river(make: Callable[[], object], supervised: bool) -> Callable[[Sequence[float]], Scores]:
    def run(values: Sequence[float]) -> Scores:
        model = make()
        out: Scores = []
        for v in values:
            x = {"value": v}
            if supervised:  # river's univariate detectors score the target y
                s = model.score_one(None, v)  # type: ignore[attr-defined]
                model.learn_one(None, v)  # type: ignore[attr-defined]
            else:
                s = model.score_one(x)  # type: ignore[attr-defined]
                model.learn_one(x)  # type: ignore[attr-defined]
            out.append(float(s) if math.isfinite(s) else 1e300)
        return out

    return run


def river_detectors() -> dict[str, Callable[[Sequence[float]], Scores]]:
    from river import anomaly, preprocessing, stats, time_series

    return {
        "hst": _river(
            lambda: preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42), False
        ),
        "gauss": _river(lambda: anomaly.GaussianScorer(), True),
        "sad": _river(lambda: anomaly.StandardAbsoluteDeviation(sub_stat=stats.Mean()), True),
        "ocsvm": _river(lambda: preprocessing.StandardScaler() | anomaly.OneClassSVM(), False),
        "pad": _river(
            lambda: anomaly.PredictiveAnomalyDetection(
                time_series.SNARIMAX(p=1, d=0, q=0), horizon=1, n_std=3.0, warmup_period=15
            ),
            True,
        ),
    }


# -- one threshold per detector, chosen the same way ------------------------------------------

LEVELS = [1.0 - 10.0 ** (-k / 16.0) for k in range(16, 97)]  # 0.9 .. 0.999999


def candidates(scores: Sequence[Scores]) -> list[float]:
    """The detector's own pooled training scores at fixed quantile levels (and just above each,
    so that a value tied over many points can be left out)."""
    pooled = np.concatenate([np.asarray(s, dtype=float) for s in scores])
    qs = np.quantile(pooled, LEVELS)
    return sorted({float(q) for q in qs} | {float(np.nextafter(q, np.inf)) for q in qs})


def nab_fast(
    scores: Sequence[Scores], series: Sequence[LabelledSeries], threshold: float
) -> dict[str, float]:
    """``anomaly_speed.nab_score`` (standard profile), vectorised over the firing points."""
    prof = PROFILES["standard"]
    raw = null = perfect = 0.0
    det = fps = wins = points = 0
    for sc, s in zip(scores, series, strict=True):
        n = len(sc)
        fired = np.flatnonzero(np.asarray(sc) >= threshold)
        fired = fired[fired >= int(0.15 * n)]
        windows = nab_windows(n, s.onsets)
        ends = np.array([b for _, b in windows]) if windows else np.zeros(0, dtype=int)
        hit = 0
        in_any = np.zeros(len(fired), dtype=bool)
        for a, b in windows:
            inside = fired[(fired >= a) & (fired <= b)]
            in_any |= (fired >= a) & (fired <= b)
            if len(inside):
                pos = -(b - int(inside[0]) + 1) / (b - a + 1)
                raw += prof.tp_weight * _scaled_sigmoid(pos)
                hit += 1
        for i in fired[~in_any]:
            k = int(np.searchsorted(ends, i)) - 1  # the last window ending before i
            if k < 0:
                raw -= prof.fp_weight
            else:
                a, b = windows[k]
                raw += prof.fp_weight * _scaled_sigmoid(abs(int(i) - b) / max(1, b - a))
        fps += int((~in_any).sum())
        raw -= prof.fn_weight * (len(windows) - hit)
        null -= prof.fn_weight * len(windows)
        perfect += prof.tp_weight * len(windows) * _scaled_sigmoid(-1.0)
        det += hit
        wins += len(windows)
        points += n
    return {
        "nab": 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0,
        "detected": det, "windows": wins, "fp": fps, "fp_per_10k": 1e4 * fps / max(1, points),
    }  # fmt: skip


def best_threshold(scores: Sequence[Scores], series: Sequence[LabelledSeries]) -> float:
    return max(candidates(scores), key=lambda t: nab_fast(scores, series, t)["nab"])


def saturation(scores: Sequence[Scores], threshold: float) -> tuple[float, int]:
    """Ties at the top: over the series that alarm (max >= ``threshold``), the share of their
    alarming points that share the series' maximum score with another point, and the longest
    run of maximal scores."""
    tied = alarms = longest = 0
    for s in scores:
        top = max(s)
        if top < threshold:
            continue
        run = 0
        for v in s:
            run = run + 1 if v >= top else 0
            longest = max(longest, run)
        at_top = sum(1 for v in s if v >= top)
        tied += at_top if at_top > 1 else 0
        alarms += sum(1 for v in s if v >= threshold)
    return tied / max(1, alarms), longest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", default="0-4")
    parser.add_argument("--test", default="100-109")
    parser.add_argument("--river", default="hst,gauss,sad,ocsvm,pad")
    args = parser.parse_args(argv)
    train, test = corpus(parse_seeds(args.train)), corpus(parse_seeds(args.test))
    real = [s for s in [water_flow()] if s is not None]
    print(
        f"train {len(train)} series / {sum(len(s.values) for s in train)} points / "
        f"{sum(len(s.onsets) for s in train)} anomalies; test {len(test)} / "
        f"{sum(len(s.values) for s in test)} / {sum(len(s.onsets) for s in test)}; real "
        + ", ".join(f"{s.name} ({len(s.values)} points, {len(s.onsets)} anomalies)" for s in real)
    )
    river = river_detectors()
    detectors: dict[str, Callable[[Sequence[float]], Scores]] = {
        "SeriesScorer": lambda v: score_series(v),
        "trailing Gaussian": windowed_gaussian,
        **{f"river {k}": river[k] for k in args.river.split(",") if k},
    }
    results: dict[str, dict[str, float]] = {}
    print(
        f"{'detector':20s} {'thr':>10s} {'train':>6s} {'test':>6s} {'real':>6s} "
        f"{'test+real':>9s} {'det':>9s} {'FP/10k':>7s} {'tied':>8s} {'run':>5s} {'s':>5s}"
    )
    for name, fn in detectors.items():
        t0 = time.perf_counter()
        s_tr = [fn(s.values) for s in train]
        s_te = [fn(s.values) for s in test]
        s_re = [fn(s.values) for s in real]
        dt = time.perf_counter() - t0
        thr = best_threshold(s_tr, train)
        a = nab_fast(s_tr, train, thr)
        b = nab_fast(s_te, test, thr)
        r = nab_fast(s_re, real, thr) if real else {"nab": float("nan")}
        c = nab_fast(s_te + s_re, test + real, thr)
        share, run = saturation(s_te + s_re, thr)
        results[name] = {"test": b["nab"], "all": c["nab"]}
        print(
            f"{name:20s} {thr:10.4g} {a['nab']:6.1f} {b['nab']:6.1f} {r['nab']:6.1f} "
            f"{c['nab']:9.1f} {c['detected']:4d}/{c['windows']:<4d} {c['fp_per_10k']:7.2f} "
            f"{100 * share:7.3f}% {run:5d} {dt:5.0f}"
        )
    ours = results["SeriesScorer"]["all"]
    gauss = results["trailing Gaussian"]["all"]
    rivals = {k: v["all"] for k, v in results.items() if k.startswith("river")}
    best = max(rivals, key=lambda k: rivals[k]) if rivals else None
    print(f"held-out NAB (test + real): SeriesScorer {ours:.1f}; trailing Gaussian {gauss:.1f} "
          f"(ratio {ours / gauss if gauss > 0 else float('inf'):.2f})" + (
              f"; best river ({best}) {rivals[best]:.1f} (ratio "
              f"{ours / rivals[best] if rivals[best] > 0 else float('inf'):.2f})" if best else ""
          ))  # fmt: skip


if __name__ == "__main__":
    main()
