"""Speed and quality benchmark of rollguard's anomaly models.

Speed (default): points/s of ``SeriesScorer`` (via ``score_series``) and of ``WindowDetector`` /
``JointDetector`` against a baseline loop in the same run (a plain Python running mean over the
same data), with the ratio, so that figures compare across machines.

Quality (``--quality``): a NAB-style evaluation on a seeded synthetic corpus of operations-like
series (seasonality, level shifts, spikes, drift, outages, noise, counts, several scales). Scoring
follows the NAB rules: a window of 10% of the series length divided by the number of anomalies,
centred on each anomaly onset; the first detection in a window earns a scaled sigmoid of its
position (earlier is better); a missed window costs ``fn_weight``; a detection outside every window
costs ``fp_weight`` (less just after a window); the first 15% of each series is probationary.
The threshold is tuned on the ``--train`` seeds and applied unchanged to the ``--test`` seeds.

    python bench/anomaly_speed.py
    python bench/anomaly_speed.py --quality --train 0-5 --test 100-105
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rollguard.models.anomaly import JointDetector, WindowDetector, score_series  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Synthetic corpus


@dataclass(frozen=True)
class LabelledSeries:
    name: str
    values: list[float]
    onsets: list[int]  # index of each anomaly's first point


BASES = (
    "noise",
    "heavy",
    "daily",
    "business",
    "walk",
    "trend",
    "counts",
    "sawtooth",
    "cron",
    "quantized",
    "weekly",
)
ANOMALIES = ("spike", "burst", "shift", "dropout", "variance", "drift", "season_break", "dip")


def _base(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A normal series and its noise standard deviation (before scaling)."""
    t = np.arange(n, dtype=float)
    period = int(rng.choice([24, 48, 96, 144, 288]))
    sd = 1.0
    if kind == "noise":
        y = rng.normal(0, sd, n)
    elif kind == "heavy":
        y = rng.standard_t(3, n) * sd
    elif kind == "daily":
        ph = rng.uniform(0, 2 * math.pi)
        amp = rng.uniform(2, 10)
        y = amp * np.sin(2 * math.pi * t / period + ph) + 0.4 * amp * np.sin(
            4 * math.pi * t / period + 2 * ph
        )
        y += rng.normal(0, sd, n)
    elif kind == "business":
        phase = (t % period) / period
        day = 1 / (1 + np.exp(-(phase - 0.3) * 40)) * (1 - 1 / (1 + np.exp(-(phase - 0.8) * 40)))
        y = rng.uniform(5, 20) * day + rng.normal(0, sd, n)
    elif kind == "weekly":
        period = int(rng.choice([24, 48]))
        phase = (t % period) / period
        dow = (t // period) % 7
        amp = rng.uniform(5, 15) * np.where(dow >= 5, 0.35, 1.0)
        y = amp * np.sin(2 * math.pi * phase) ** 2 + rng.normal(0, sd, n)
    elif kind == "walk":
        e = rng.normal(0, 0.3, n)
        w = np.zeros(n)
        for i in range(1, n):
            w[i] = 0.98 * w[i - 1] + e[i]
        y = w + rng.normal(0, sd, n)
    elif kind == "trend":
        y = t * rng.uniform(-3, 3) / n * 10 + rng.normal(0, sd, n)
    elif kind == "counts":
        lam = float(rng.choice([0.5, 3.0, 30.0]))
        season = 1 + 0.5 * np.sin(2 * math.pi * t / period)
        y = rng.poisson(lam * season).astype(float)
        sd = math.sqrt(lam)
    elif kind == "sawtooth":
        cyc = int(rng.integers(150, 600))
        y = (t % cyc) / cyc * rng.uniform(10, 30) + rng.normal(0, sd, n)
    elif kind == "cron":
        y = rng.normal(0, sd, n)
        y[(t % period) == (period // 3)] += rng.uniform(6, 12)
    elif kind == "quantized":
        y = np.round(rng.normal(0, 1.2, n))
        sd = 1.2
    else:
        raise ValueError(kind)
    return y, sd


def _inject(
    y: np.ndarray, kind: str, at: int, sd: float, rng: np.random.Generator, base: str
) -> None:
    n = len(y)
    spread = float(np.std(y[: max(at, 50)]))
    sign = 1.0 if rng.random() < 0.75 else -1.0
    if kind == "spike":
        y[at] += sign * max(rng.uniform(6, 12) * sd, rng.uniform(1.0, 2.0) * 3 * spread)
    elif kind == "burst":
        k = int(rng.integers(3, 12))
        y[at : at + k] += sign * max(rng.uniform(4, 8) * sd, rng.uniform(0.8, 1.5) * 3 * spread)
    elif kind == "shift":
        y[at:] += sign * max(rng.uniform(3, 8) * sd, rng.uniform(0.5, 1.0) * spread)
    elif kind == "dropout":
        k = int(rng.integers(10, 120))
        y[at : at + k] = float(np.min(y[:at])) - (0.0 if base == "counts" else 2 * sd)
    elif kind == "variance":
        k = int(rng.integers(60, 300))
        end = min(n, at + k)
        y[at:end] += rng.normal(0, rng.uniform(3, 6) * sd, end - at)
    elif kind == "drift":
        k = int(rng.integers(60, 300))
        end = min(n, at + k)
        size = sign * max(rng.uniform(6, 12) * sd, rng.uniform(1.0, 2.0) * spread)
        y[at:end] += np.linspace(0, size, end - at)
        y[end:] += size
    elif kind == "season_break":
        k = int(rng.integers(40, 200))
        end = min(n, at + k)
        y[at:end] = float(np.mean(y[:at])) + rng.normal(0, sd, end - at)
    elif kind == "dip":
        k = int(rng.integers(5, 40))
        y[at : at + k] -= max(rng.uniform(4, 8) * sd, 1.5 * spread)


def make_series(seed: int, index: int) -> LabelledSeries:
    """One labelled series; fully determined by (seed, index)."""
    rng = np.random.default_rng([seed, index])
    base = BASES[int(rng.integers(len(BASES)))]
    n = int(rng.choice([1000, 2500, 4000, 6000, 10000]))
    y, sd = _base(base, n, rng)
    k = int(rng.integers(0, 4))  # 0..3 anomalies (0 = a clean series: any detection is an FP)
    onsets: list[int] = []
    kinds: list[str] = []
    start = int(0.2 * n)
    for j in range(k):
        lo = start + j * (n - start) // k
        hi = start + (j + 1) * (n - start) // k - int(0.1 * n / k)
        at = int(rng.integers(lo, max(lo + 1, hi)))
        kind = ANOMALIES[int(rng.integers(len(ANOMALIES)))]
        if kind == "season_break" and base not in ("daily", "business", "weekly", "counts"):
            kind = "shift"
        _inject(y, kind, at, sd, rng, base)
        onsets.append(at)
        kinds.append(kind)
    scale = 10 ** rng.uniform(-3, 6)
    offset = rng.uniform(0, 50) * sd if rng.random() < 0.7 else 0.0
    vals = (y + offset) * scale
    if base in ("counts", "quantized"):
        vals = np.round(y + offset) * (1.0 if base == "counts" else scale)
    name = f"{base}:{'+'.join(kinds) or 'clean'}:seed{seed}/{index}"
    return LabelledSeries(name=name, values=vals.tolist(), onsets=onsets)


def make_corpus(seeds: Sequence[int], per_seed: int = 12) -> list[LabelledSeries]:
    return [make_series(s, i) for s in seeds for i in range(per_seed)]


# ----------------------------------------------------------------------------------------------
# NAB-style scoring


@dataclass(frozen=True)
class Profile:
    tp_weight: float = 1.0
    fp_weight: float = 0.11
    fn_weight: float = 1.0


PROFILES = {
    "standard": Profile(),
    "low_fp": Profile(fp_weight=0.22),
    "low_fn": Profile(fn_weight=2.0),
}


def _scaled_sigmoid(pos: float) -> float:
    if pos > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * pos)) - 1.0


def nab_windows(n: int, onsets: Sequence[int]) -> list[tuple[int, int]]:
    if not onsets:
        return []
    width = int(0.1 * n / len(onsets))
    return [(max(0, a - width // 2), min(n - 1, a + width // 2)) for a in onsets]


def nab_raw(
    scores: Sequence[float], onsets: Sequence[int], threshold: float, profile: Profile
) -> tuple[float, float, float, int, int]:
    """(raw score, null score, perfect score, windows detected, false positives)."""
    n = len(scores)
    windows = nab_windows(n, onsets)
    probation = int(0.15 * n)
    raw = 0.0
    detected = 0
    fps = 0
    in_window = [-1] * n
    for w, (a, b) in enumerate(windows):
        for i in range(a, b + 1):
            in_window[i] = w
    hit = [False] * len(windows)
    prev_end: tuple[int, int] | None = None
    for i in range(n):
        w = in_window[i]
        if w >= 0:
            prev_end = windows[w]
        if i < probation or scores[i] < threshold:
            continue
        if w >= 0:
            if not hit[w]:
                hit[w] = True
                a, b = windows[w]
                pos = -(b - i + 1) / (b - a + 1)
                raw += profile.tp_weight * _scaled_sigmoid(pos)
                detected += 1
        else:
            fps += 1
            if prev_end is None:
                raw -= profile.fp_weight
            else:
                a, b = prev_end
                pos = abs(i - b) / max(1, b - a)
                raw += profile.fp_weight * _scaled_sigmoid(pos)
    raw -= profile.fn_weight * (len(windows) - detected)
    null = -profile.fn_weight * len(windows)
    perfect = profile.tp_weight * len(windows) * _scaled_sigmoid(-1.0)
    return raw, null, perfect, detected, fps


def nab_score(
    all_scores: Sequence[Sequence[float]],
    corpus: Sequence[LabelledSeries],
    threshold: float,
    profile: Profile,
) -> dict[str, float]:
    raw = null = perfect = 0.0
    det = fps = wins = 0
    points = 0
    for scores, s in zip(all_scores, corpus, strict=True):
        r, nl, p, d, f = nab_raw(scores, s.onsets, threshold, profile)
        raw += r
        null += nl
        perfect += p
        det += d
        fps += f
        wins += len(s.onsets)
        points += len(scores)
    return {
        "nab": 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0,
        "detected": det,
        "windows": wins,
        "fp": fps,
        "fp_per_10k": 1e4 * fps / points,
        "threshold": threshold,
    }


def best_threshold(
    all_scores: Sequence[Sequence[float]], corpus: Sequence[LabelledSeries], profile: Profile
) -> float:
    grid = [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04]
    grid += [0.05 * i for i in range(1, 20)] + [0.96, 0.97, 0.98, 0.99]
    grid += [1.0 - 10.0 ** (-k / 2) for k in range(5, 17)]
    return max(grid, key=lambda t: nab_score(all_scores, corpus, t, profile)["nab"])


# ----------------------------------------------------------------------------------------------
# Detectors under comparison


def windowed_gaussian(values: Sequence[float], window: int = 6400) -> list[float]:
    """NAB's 'windowed Gaussian' baseline: tail probability of x under the last window's N(m, s)."""
    out: list[float] = []
    buf: list[float] = []
    s1 = s2 = 0.0
    for v in values:
        n = len(buf)
        if n >= 30:
            m = s1 / n
            var = max(s2 / n - m * m, 1e-12 * (1 + m * m))
            z = abs(v - m) / math.sqrt(var)
            out.append(1.0 - math.erfc(z / math.sqrt(2)))
        else:
            out.append(0.0)
        buf.append(v)
        s1 += v
        s2 += v * v
        if len(buf) > window:
            old = buf.pop(0)
            s1 -= old
            s2 -= old * old
    return out


DETECTORS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "SeriesScorer": lambda v: score_series(v),
    "windowed_gaussian": windowed_gaussian,
}


def parse_seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def quality(train: list[int], test: list[int], detectors: list[str], by_kind: bool) -> None:
    tr, te = make_corpus(train), make_corpus(test)
    print(
        f"corpus: train {len(tr)} series / {sum(len(s.values) for s in tr)} points / "
        f"{sum(len(s.onsets) for s in tr)} anomalies; test {len(te)} series / "
        f"{sum(len(s.values) for s in te)} points / {sum(len(s.onsets) for s in te)} anomalies"
    )
    for name in detectors:
        fn = DETECTORS[name]
        t0 = time.perf_counter()
        s_tr = [fn(s.values) for s in tr]
        s_te = [fn(s.values) for s in te]
        dt = time.perf_counter() - t0
        for pname, prof in PROFILES.items():
            thr = best_threshold(s_tr, tr, prof)
            a = nab_score(s_tr, tr, thr, prof)
            b = nab_score(s_te, te, thr, prof)
            c = nab_score(s_te, te, 0.5, prof)
            print(
                f"{name:18s} {pname:8s} thr={thr:.3f} train NAB={a['nab']:6.1f}  "
                f"test NAB={b['nab']:6.1f} (det {b['detected']}/{b['windows']}, "
                f"FP/10k={b['fp_per_10k']:.2f})  test@0.5 NAB={c['nab']:6.1f} "
                f"(det {c['detected']}/{c['windows']}, FP/10k={c['fp_per_10k']:.2f})"
            )
        print(f"{name:18s} time {dt:.1f}s")
        if by_kind:
            thr = best_threshold(s_tr, tr, PROFILES["standard"])
            kinds: dict[str, list[int]] = {}
            for i, s in enumerate(te):
                kinds.setdefault(s.name.split(":")[0], []).append(i)
            for k, idx in sorted(kinds.items()):
                r = nab_score(
                    [s_te[i] for i in idx], [te[i] for i in idx], thr, PROFILES["standard"]
                )
                print(
                    f"    {k:10s} n={len(idx):3d} NAB={r['nab']:6.1f} det {r['detected']}/"
                    f"{r['windows']} FP={r['fp']}"
                )


# ----------------------------------------------------------------------------------------------
# Speed


def _running_mean(values: Sequence[float]) -> float:
    m = 0.0
    n = 0
    for v in values:
        n += 1
        m += (v - m) / n
    return m


def _best_of(fn: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(n: int, repeat: int) -> None:
    rng = random.Random(7)
    values = [100 + 10 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 1) for i in range(n)]
    base = _best_of(lambda: _running_mean(values), repeat)
    ser = _best_of(lambda: score_series(values), repeat)
    print(f"baseline running mean : {n / base:12,.0f} points/s")
    print(
        f"SeriesScorer          : {n / ser:12,.0f} points/s  "
        f"(score_one+learn_one; {ser / base:.0f}x the baseline's time per point)"
    )
    feats = [
        {
            "mean": 200 + rng.gauss(0, 30),
            "p95": 300 + rng.gauss(0, 40),
            "max": 400 + rng.gauss(0, 60),
            "coverage": 1.0,
        }
        for _ in range(min(n, 20000))
    ]

    def window_loop() -> None:
        d = WindowDetector()
        for f in feats:
            d.score_one(f)
            d.learn_one(f)

    joint = [
        {
            "error_rate": 0.005 + rng.gauss(0, 0.001),
            "latency_p99_ms": f["mean"],
            "request_rate": 50 + rng.gauss(0, 5),
        }
        for f in feats
    ]

    def joint_loop() -> None:
        d = JointDetector()
        for f in joint:
            d.score_one(f)
            d.learn_one(f)

    m = len(feats)
    base2 = _best_of(lambda: _running_mean([f["mean"] for f in feats]), repeat)
    win = _best_of(window_loop, repeat)
    jnt = _best_of(joint_loop, repeat)
    print(
        f"WindowDetector        : {m / win:12,.0f} windows/s ({1e6 * win / m:.1f} us per "
        f"score+learn; {win / base2:.0f}x baseline)"
    )
    print(
        f"JointDetector (3 met.): {m / jnt:12,.0f} windows/s ({1e6 * jnt / m:.1f} us per "
        f"score+learn; {jnt / base2:.0f}x baseline)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quality", action="store_true", help="run the NAB-style evaluation")
    ap.add_argument("--train", default="0-4", help="seeds to tune the threshold on")
    ap.add_argument("--test", default="100-104", help="held-out seeds")
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--by-kind", action="store_true")
    ap.add_argument("-n", type=int, default=20000, help="points for the speed run")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    if a.quality:
        quality(parse_seeds(a.train), parse_seeds(a.test), a.detectors.split(","), a.by_kind)
    else:
        speed(a.n, a.repeat)


if __name__ == "__main__":
    main()
