"""The realistic-noise corpus (issue 11) through today's decision core: what it decides.

For each recipe of ``streams/scenarios/noise.py`` and each seed, the events go through
``models.engine.step`` in file order (then ``advance``), as ``rollguard replay`` does, and the
deciding action per deployment is compared with its label. Printed per recipe: the label and
how many seeds ended ``rollback`` / ``approval`` / ``pass`` / nothing; then the totals the
issue's targets are about: automatic rollbacks and approvals of healthy releases, misses
(a bad release that ended pass or with no decision, per recipe) and bad releases rolled back;
and, for the bad releases whose recipe records the regression's onset, the delay from the onset
to the first acting decision (rollback or approval request, by the decision's event time):
median and p90, per recipe and over all of them (the issue's target: median <= 90 s for clear
regressions, ``noise-bursty-bad-deploy`` and the ``clear`` kinds).

    python bench/noise_corpus.py --seeds 0-19
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import TypeAdapter  # noqa: E402

from rollguard.models.engine import advance, new_state, step  # noqa: E402
from rollguard.models.events import Decision, InputEvent  # noqa: E402
from rollguard.streams.settings import load_policy  # noqa: E402
from rollguard.streams.simulate import NOISE_SCENARIOS, Scenario, generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ADAPTER: TypeAdapter[Any] = TypeAdapter(InputEvent)
#: Recipes whose regression is clear (well past a written limit): the onset-delay target.
CLEAR = ("noise-bursty-bad-deploy", "noise-scale-bad-deploy")


def decide(scenario: Scenario) -> tuple[dict[str, str], dict[str, float]]:
    """The deciding action per deployment (rollback > approval > pass > nothing), and the
    event time of each deployment's first acting decision (rollback or approval request)."""
    policy = load_policy(REPO / "config" / "policy.yaml")
    state = new_state()
    acts: dict[str, set[str]] = {d: set() for d in scenario.labels}
    first: dict[str, float] = {}
    newest = None
    outputs: list[Any] = []
    for event in scenario.events:
        record = ADAPTER.validate_python(event)
        newest = record.ts if newest is None else max(newest, record.ts)
        outputs.extend(step(state, record, policy))
    if newest is not None:
        outputs.extend(advance(state, policy, newest))
    for out in outputs:
        if isinstance(out, Decision) and out.deployment_id in acts:
            acts[out.deployment_id].add(out.action)
            if out.action in ("auto_rollback", "request_approval"):
                first.setdefault(out.deployment_id, out.ts)
    result = {}
    for dep, seen in acts.items():
        if "auto_rollback" in seen:
            result[dep] = "rollback"
        elif "request_approval" in seen:
            result[dep] = "approval"
        elif "pass" in seen:
            result[dep] = "pass"
        else:
            result[dep] = "nothing"
    return result, first


def quantiles(delays: Sequence[float]) -> str:
    """Median and p90 of ``delays`` (seconds), or '-' without any."""
    if not delays:
        return "-"
    ordered = sorted(delays)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(ordered):.0f}/{p90:.0f} s"


def parse_seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0-19")
    parser.add_argument("--only", nargs="*", default=None, help="recipes to run")
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    totals: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    delays: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    print(f"{'recipe':28s} {'label':9s} rollback approval pass nothing  onset->decision med/p90")
    for name in args.only or NOISE_SCENARIOS:
        got: Counter[str] = Counter()
        label = ""
        for seed in seeds:
            scenario = generate(name, seed)
            actions, first = decide(scenario)
            for dep, action in actions.items():
                label = scenario.labels[dep]
                got[action] += 1
                healthy = label == "pass"
                totals["healthy" if healthy else "bad"] += 1
                if healthy and action == "rollback":
                    totals["healthy_rollback"] += 1
                if healthy and action == "approval":
                    totals["healthy_approval"] += 1
                if not healthy and action in ("pass", "nothing"):
                    totals["missed"] += 1
                    missed[name] += 1
                if label == "approval" and action == "rollback":
                    totals["automated_" + name] += 1
                if label == "rollback" and action == "rollback":
                    totals["bad_rolled_back"] += 1
                if action == label:
                    totals["as_labelled"] += 1
                if dep in scenario.onsets and dep in first:
                    delays.setdefault(name, []).append(first[dep] - scenario.onsets[dep])
        print(
            f"{name:28s} {label:9s} {got['rollback']:8d} {got['approval']:8d} "
            f"{got['pass']:4d} {got['nothing']:7d}  {quantiles(delays.get(name, []))}"
        )
    h, b = totals["healthy"], totals["bad"]
    print(
        f"healthy deploys {h}: auto rollbacks {totals['healthy_rollback']}, approvals "
        f"{totals['healthy_approval']} ({100.0 * totals['healthy_approval'] / max(1, h):.1f} %); "
        f"bad deploys {b}: missed {totals['missed']}; as labelled "
        f"{totals['as_labelled']}/{h + b}  ({time.perf_counter() - t0:.0f} s)"
    )
    automated = {k.removeprefix("automated_"): v for k, v in totals.items() if "automated_" in k}
    if automated:
        # A release labelled "ask a human" rolled back automatically: wrong for a release not
        # to blame (pre-deploy-*), a bad release rolled back by the contract otherwise.
        print(
            "rolled back, labelled approval: " + ", ".join(f"{k} {v}" for k, v in automated.items())
        )
    if missed:
        print("missed by recipe: " + ", ".join(f"{k} {v}" for k, v in sorted(missed.items())))
    clear = [d for k, v in delays.items() if k in CLEAR for d in v]
    print(f"onset -> first acting decision, clear regressions: {quantiles(clear)} (median/p90)")


if __name__ == "__main__":
    main()
