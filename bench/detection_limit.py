"""How far a missed moderate regression is from the noise of healthy releases (issue 11).

For each case (``recipe:seed``) and for every healthy release of the realistic-noise corpus over
``--seeds``, the events go through ``models.engine.step`` as ``bench/noise_corpus.py`` does, and
the latency's baseline and observation windows of the trial are read off the deployment. Then,
for the latency (the metric the moderate regressions move), four figures of the bake against
its baseline:

- ``shift``: the realised regression, the Hodges-Lehmann estimate of the ratio (the median of
  every observation/baseline window ratio, the bake's first window left out: it straddles
  the deploy), robust to bursts;
- ``z now``: the engine's horizon test at the bake's last window (``Deployment.sequential_test``:
  median reference, robust spread, ``SEQUENTIAL_SHARE`` margin, clip 2, the best of 4 starts);
- ``z log``: the same one-sample test on logarithms, unclipped (the variance is the same at
  every level of a multiplicative noise: the honest one-sample figure);
- ``z rank``: a Wilcoxon-Mann-Whitney rank-sum test of the bake against the baseline times
  (1 + margin), the best of 4 starts: it also counts the baseline's own uncertainty and
  needs no scale.

Printed: each statistic's value for each case, and how many healthy releases are at least as
extreme (a rule catching the case would flag those too); the moderate regressions' lowest
realised shifts.

    python bench/detection_limit.py --seeds 20000-20199 \
        --cases noise-moderate-regression:9030 noise-moderate-regression:1136
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from noise_corpus import ADAPTER, REPO, parse_seeds  # noqa: E402

from rollguard.models.engine import advance, new_state, step  # noqa: E402
from rollguard.models.policy import Policy  # noqa: E402
from rollguard.models.trial import Deployment  # noqa: E402
from rollguard.streams.settings import load_policy  # noqa: E402
from rollguard.streams.simulate import NOISE_SCENARIOS, generate  # noqa: E402

LATENCY = "latency_p99_ms"
STARTS = 4
HEALTHY = "pass"


@dataclass(frozen=True)
class Trial:
    """One deployment's latency windows and the engine's test of them."""

    recipe: str
    seed: int
    label: str
    base: list[float]
    obs: list[float]
    margin: float
    horizon: int
    z_now: float


def trials(recipe: str, seed: int, policy: Policy) -> list[Trial]:
    """Run one scenario through the engine; the latency windows of each deployment's trial."""
    scenario = generate(recipe, seed)
    state = new_state()
    seen: dict[str, Deployment] = {}
    newest = None
    for event in scenario.events:
        record = ADAPTER.validate_python(event)
        newest = record.ts if newest is None else max(newest, record.ts)
        step(state, record, policy)
        for svc in state.services.values():
            if svc.deployment is not None:
                seen[svc.deployment.facts.deployment_id] = svc.deployment
    if newest is not None:
        advance(state, policy, newest)
    out = []
    for ident, dep in sorted(seen.items()):
        sp = policy.for_service(dep.facts.service)
        base = [v for v in dep.base_values.get(LATENCY, []) if math.isfinite(v)]
        if ident not in scenario.labels or len(base) < 6:
            continue
        obs = list(dep.obs_values.get(LATENCY, []))
        test = dep.sequential_test(LATENCY, base, sp)
        verdict = test.verdict()
        for value in obs[: test.horizon]:
            verdict = test.update(value)
        assert test.horizon is not None
        z_now = verdict.z if len(obs) >= test.horizon else math.nan
        label = scenario.labels[ident]
        out.append(Trial(recipe, seed, label, base, obs, test.margin, test.horizon, z_now))
    return out


def shift(t: Trial) -> float:
    """Hodges-Lehmann ratio of the bake (from its second window) to the baseline."""
    obs = [math.log(v) for v in t.obs[1 : t.horizon] if math.isfinite(v) and v > 0]
    base = [math.log(v) for v in t.base if v > 0]
    return math.exp(statistics.median([o - b for o in obs for b in base]))


def z_log(t: Trial) -> float:
    """One-sample z of the logs against log(median x (1 + margin)), unclipped, best start."""
    logs = [math.log(v) for v in t.base if v > 0]
    centre = math.log(statistics.median(t.base))
    unit = max(1.4826 * statistics.median([abs(v - centre) for v in logs]), math.log1p(0.05))
    bound = centre + math.log1p(t.margin)
    z = [(math.log(v) - bound) / unit for v in t.obs[: t.horizon] if math.isfinite(v) and v > 0]
    return max(sum(z[s:]) / math.sqrt(len(z) - s) for s in range(min(STARTS, len(z))))


def rank_sum_z(obs: Sequence[float], base: Sequence[float]) -> float:
    """Standardised Mann-Whitney U of ``obs`` against ``base`` (mid-ranks, tie-corrected)."""
    n1, n2 = len(obs), len(base)
    u = sum(1.0 if o > b else 0.5 if o == b else 0.0 for o in obs for b in base)
    pooled = sorted([*obs, *base])
    n = n1 + n2
    ties = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1] == pooled[i]:
            j += 1
        ties += (j - i + 1) ** 3 - (j - i + 1)
        i = j + 1
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    return (u - n1 * n2 / 2.0) / math.sqrt(var) if var > 0 else 0.0


def z_rank(t: Trial) -> float:
    """Rank-sum z of the bake against the baseline x (1 + margin), best start."""
    base = [v * (1.0 + t.margin) for v in t.base]
    obs = [v for v in t.obs[: t.horizon] if math.isfinite(v)]
    return max(rank_sum_z(obs[s:], base) for s in range(min(STARTS, len(obs))))


STATISTICS: dict[str, Any] = {
    "shift": shift,
    "z now": lambda t: t.z_now,
    "z log": z_log,
    "z rank": z_rank,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="20000-20199", help="the healthy population")
    parser.add_argument("--cases", nargs="*", default=[], help="recipe:seed")
    args = parser.parse_args(argv)
    policy = load_policy(REPO / "config" / "policy.yaml")
    population = [
        t
        for name in NOISE_SCENARIOS
        for seed in parse_seeds(args.seeds)
        for t in trials(name, seed, policy)
    ]
    complete = [t for t in population if len(t.obs) >= t.horizon]
    healthy = [t for t in complete if t.label == HEALTHY]
    print(f"{len(healthy)} healthy releases with a complete bake (seeds {args.seeds})")
    cases = [
        t
        for case in args.cases
        for t in trials(case.split(":")[0], int(case.split(":")[1]), policy)
    ]
    for name, stat in STATISTICS.items():
        values = sorted(stat(t) for t in healthy)
        q99 = values[int(0.99 * len(values))]
        line = [f"{name:7s} healthy q99 {q99:6.3f} max {values[-1]:6.3f}"]
        for t in cases:
            v = stat(t)
            at_least = sum(1 for h in values if h >= v)
            line.append(
                f"{t.recipe.removeprefix('noise-')} {t.seed}: {v:.3f} "
                f"(healthy >= it: {at_least}, {100.0 * at_least / len(values):.2f} %)"
            )
        print(" | ".join(line))
    moderate = sorted(
        (shift(t), t.seed) for t in population if t.recipe == "noise-moderate-regression"
    )
    print(
        "moderate regressions, lowest realised shifts: "
        + ", ".join(f"{s} x{v:.3f}" for v, s in moderate[:5])
        + f" (of {len(moderate)}; median x{moderate[len(moderate) // 2][0]:.3f})"
    )


if __name__ == "__main__":
    main()
