"""Issue 11: each failure mode on real-world noise is a named test (docs/scenarios.md,
"Realistic noise").

The recipes are in ``streams/scenarios/noise.py``. Each test failed on the rules before the
wiring of issue 11 (the long memory, onset attribution, error counts and the sequential test
in ``models/rules.py`` / ``models/trial.py``). The building blocks each fix needs are
tested on their own in ``tests/unit/test_noise_blocks.py``.
"""

from __future__ import annotations

import pytest

from rollguard.streams.simulate import NOISE_SCENARIOS, generate
from tests.scenarios.test_corpus import Outcome, outcomes, run


def _outcomes(name: str, seeds: range) -> list[tuple[int, Outcome]]:
    found = []
    for seed in seeds:
        scenario = generate(name, seed)
        for outcome in outcomes(scenario, run(scenario)).values():
            found.append((seed, outcome))
    return found


def _story(seed: int, outcome: Outcome) -> str:
    return f"seed {seed}:\n{outcome.story()}"


def test_routine_burst_is_not_confirmed() -> None:
    # The service's p99 bursts 2.3-3.2x for two windows every 12-30 min; one lands in the bake.
    # The 24-window detector has never seen one and confirmed the breach (a rollback); the
    # service's long memory (models.memory) knows its bursts now.
    rolled = [_story(s, o) for s, o in _outcomes("noise-routine-burst", range(5)) if o.commands]
    assert not rolled, "\n".join(rolled)


def test_a_burst_above_a_young_memorys_highest_is_not_rolled_back() -> None:
    # Seed 631 (never-seen set 600-639): the burst in the bake (733 and 835 ms over a 251 ms
    # baseline) is above all 250 windows the long memory learned. The Pareto tail's point
    # estimate called it p 5.7e-4 < 1e-3 (rare) and the breach confirmed: a rollback. With
    # the tail index at its upper confidence bound it says 2.5e-3: p is the count's 0.5 / 251
    # (2e-3), not rare, and the ratio-only breach is the service's own.
    rolled = [
        _story(s, o) for s, o in _outcomes("noise-routine-burst", range(631, 632)) if o.commands
    ]
    assert not rolled, "\n".join(rolled)


@pytest.mark.parametrize("name", ["noise-pre-deploy-shift", "noise-pre-deploy-trend"])
def test_pre_deploy_shift_is_not_blamed(name: str) -> None:
    # The departure began before the deploy: never automated, a human gets BASELINE_UNSTABLE.
    wrong = [
        _story(s, o)
        for s, o in _outcomes(name, range(5))
        if o.commands or not any("BASELINE_UNSTABLE" in d.reasons for d in o.deciding())
    ]
    assert not wrong, "\n".join(wrong)


def test_improvement_never_pages() -> None:
    # p99 falls to 0.55-0.7x while traffic dips: the joint detector is one-sided for latency
    # and errors now (it scored such windows 1.0 before: 11 of 20 seeds asked a human).
    paged = []
    for seed, outcome in _outcomes("noise-improvement", range(10)):
        for d in outcome.acting("request_approval"):
            text = d.evidence.get("details", {}).get("ANOMALY", "")
            if "latency_p99_ms" in text or "*joint*" in text:
                paged.append(_story(seed, outcome))
    assert not paged, "\n".join(paged)


def test_error_ratio_without_counts_is_not_a_breach() -> None:
    # 1.3-1.7 req/s: two errors in a minute are "3x the baseline". Too few requests to tell
    # (models.counts): no THRESHOLD_BREACH, so no request for it.
    asked = [
        _story(s, o)
        for s, o in _outcomes("noise-low-traffic-errors", range(20))
        if any("THRESHOLD_BREACH" in d.reasons for d in o.acting("request_approval"))
    ]
    assert not asked, "\n".join(asked)


def test_sustained_moderate_regression_is_caught() -> None:
    # p99 x1.5-1.8 for the whole bake on a noisy series: it never holds 4 anomalous windows in
    # a row, and ended `pass`. The sequential test (models.sequential) accumulates it.
    missed = [
        _story(s, o)
        for s, o in _outcomes("noise-moderate-regression", range(10))
        if o.action in ("pass", "nothing")
    ]
    assert not missed, "\n".join(missed)


def test_noise_corpus_meets_the_issue_targets() -> None:
    # 0 automatic rollbacks and <= 2 % approvals of healthy releases, 0 missed bad ones.
    healthy_rollbacks, healthy_approvals, missed, healthy = [], [], [], 0
    for name in NOISE_SCENARIOS:
        for seed, outcome in _outcomes(name, range(5)):
            label = generate(name, seed).labels[outcome.deployment_id]
            if label == "pass":
                healthy += 1
                if outcome.action == "rollback":
                    healthy_rollbacks.append(f"{name} {_story(seed, outcome)}")
                elif outcome.action == "approval":
                    healthy_approvals.append(f"{name} {_story(seed, outcome)}")
            elif outcome.action in ("pass", "nothing"):
                missed.append(f"{name} {_story(seed, outcome)}")
    assert not healthy_rollbacks, "\n".join(healthy_rollbacks)
    assert len(healthy_approvals) <= 0.02 * healthy, "\n".join(healthy_approvals)
    assert not missed, "\n".join(missed)


@pytest.mark.parametrize("name", NOISE_SCENARIOS)
def test_noise_recipes_are_pure_and_labelled(name: str) -> None:
    a, b = generate(name, 3), generate(name, 3)
    assert a.to_jsonl() == b.to_jsonl()
    assert set(a.labels.values()) <= {"pass", "approval", "rollback"} and len(a.labels) == 1


def _seeds_outcomes(name: str, seeds: tuple[int, ...]) -> list[tuple[int, Outcome]]:
    found = []
    for seed in seeds:
        scenario = generate(name, seed)
        found.extend((seed, o) for o in outcomes(scenario, run(scenario)).values())
    return found


def test_pre_deploy_trend_is_never_automated_later() -> None:
    # Seeds of the second round's tuning set (1000-1039) that were rolled back: the request
    # named BASELINE_UNSTABLE, a later window's trend attribution flickered off and a rollback
    # superseded the request. A pre-deploy finding now stands for the trial.
    rolled = [
        _story(s, o)
        for s, o in _seeds_outcomes("noise-pre-deploy-trend", (1003, 1024, 1032))
        if o.commands
    ]
    assert not rolled, "\n".join(rolled)


@pytest.mark.parametrize(
    ("name", "seed"),
    [
        ("noise-scale", 1014),  # 2k-20k req/s: the error rate wandered +29 % for four windows
        ("noise-traffic-spikes", 1001),  # the error rate +35 % beside a traffic burst
        ("noise-daily-cycle", 1008),  # the p99 +23 % on the morning ramp
    ],
)
def test_a_small_model_only_departure_does_not_page(name: str, seed: int) -> None:
    # Scored anomalous by the metric's model for four windows, far from any written limit:
    # it asked a human. A model-only departure now counts from half-way to the written ratio.
    asked = [
        _story(s, o) for s, o in _seeds_outcomes(name, (seed,)) if o.acting("request_approval")
    ]
    assert not asked, "\n".join(asked)
