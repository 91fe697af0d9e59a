"""End to end: every labelled scenario through the decision core gets the operator's action.

For each scenario and seeds 0..2 the events go, in file order, through ``models.engine.step``
exactly as ``rollguard replay`` does (then ``advance`` to the newest event time, as at the end
of a replay file), and the deciding action per deployment must equal the label:

- ``rollback``: an ``auto_rollback`` Decision exists (for ``approval-superseded``, after a
  ``request_approval`` one), with one RollbackCommand of the expected authority;
- ``approval``: a ``request_approval`` Decision exists and no ``auto_rollback``;
- ``pass``: a ``pass`` Decision exists and neither of the others;

and the scenario's expected reason codes appear in one deciding Decision's reasons. The
``slow`` tests run 200 seeds of ``healthy``, ``one-window-blip`` and ``bad-deploy``: no automatic
rollback and fewer than 2 % approval requests for healthy releases (at most 2 % after a blip),
an automatic rollback for every bad one.

Until models/engine.py exists these tests fail (they do not skip): the corpus is the
acceptance test of the core.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from rollguard.models.events import (
    ApprovalRequest,
    Decision,
    InputEvent,
    ReleaseVerdict,
    RollbackCommand,
)
from rollguard.models.policy import Policy
from rollguard.streams.settings import load_policy
from rollguard.streams.simulate import SCENARIOS, Scenario, generate

REPO = Path(__file__).resolve().parents[2]
ADAPTER: TypeAdapter[Any] = TypeAdapter(InputEvent)
SEEDS = (0, 1, 2)
RATE_SEEDS = range(200)

try:
    from rollguard.models.engine import advance, new_state, step
except ImportError as err:  # the core is written by someone else, concurrently
    ENGINE_MISSING: str | None = f"rollguard.models.engine is not importable: {err}"
else:
    ENGINE_MISSING = None


@cache
def policy() -> Policy:
    return load_policy(REPO / "config" / "policy.yaml")


def run(scenario: Scenario) -> list[Any]:
    """Every output of the core for the scenario's events, in file order."""
    if ENGINE_MISSING:
        pytest.fail(ENGINE_MISSING)
    state = new_state()
    outputs: list[Any] = []
    newest = None
    for event in scenario.events:
        record = ADAPTER.validate_python(event)
        newest = record.ts if newest is None else max(newest, record.ts)
        outputs.extend(step(state, record, policy()))
    if newest is not None:
        outputs.extend(advance(state, policy(), newest))
    return outputs


@dataclass
class Outcome:
    """What the core did about one deployment."""

    deployment_id: str
    deployed_at: float
    decisions: list[Decision] = field(default_factory=list)
    commands: list[RollbackCommand] = field(default_factory=list)
    requests: list[ApprovalRequest] = field(default_factory=list)
    verdicts: list[ReleaseVerdict] = field(default_factory=list)

    def acting(self, action: str) -> list[Decision]:
        return [d for d in self.decisions if d.action == action]

    @property
    def action(self) -> str:
        if self.acting("auto_rollback"):
            return "rollback"
        if self.acting("request_approval"):
            return "approval"
        if self.acting("pass"):
            return "pass"
        return "nothing"

    def deciding(self) -> list[Decision]:
        """The Decisions that carry the deciding action (several for re-issued requests)."""
        wanted = {"rollback": "auto_rollback", "approval": "request_approval", "pass": "pass"}
        return self.acting(wanted.get(self.action, "none"))

    def story(self) -> str:
        """The decisions that did something, for a failure message."""
        lines = [
            f"  {d.action:<16} at deploy{d.ts - self.deployed_at:+7.0f}s  {list(d.reasons)}"
            for d in self.decisions
            if d.action not in ("none", "watch")
        ]
        lines += [
            f"  command authority={c.authority} reasons={list(c.reasons)}" for c in self.commands
        ]
        lines += [f"  verdict {v.verdict} {list(v.reasons)}" for v in self.verdicts]
        return "\n".join(lines) or "  (no decision beyond watch/none)"


def outcomes(scenario: Scenario, outputs: Iterable[Any]) -> dict[str, Outcome]:
    found = {
        d["deployment_id"]: Outcome(d["deployment_id"], d["ts"]) for d in scenario.deployments()
    }
    for output in outputs:
        outcome = found.get(getattr(output, "deployment_id", None) or "")
        if outcome is None:
            continue
        if isinstance(output, Decision):
            outcome.decisions.append(output)
        elif isinstance(output, RollbackCommand):
            outcome.commands.append(output)
        elif isinstance(output, ApprovalRequest):
            outcome.requests.append(output)
        elif isinstance(output, ReleaseVerdict):
            outcome.verdicts.append(output)
    return found


def mismatches(scenario: Scenario, found: dict[str, Outcome]) -> list[str]:
    """Every way the core's outcome differs from the scenario's labels, readably."""
    problems = []
    for deployment, label in scenario.labels.items():
        outcome = found[deployment]
        expected = scenario.expected_reasons[deployment]
        wrong = []
        if outcome.action != label:
            wrong.append(f"wanted {label}, core did {outcome.action}")
        elif expected and not any(set(expected) <= set(d.reasons) for d in outcome.deciding()):
            wrong.append(f"{label} without reasons {expected}")
        if label == "rollback" and outcome.action == "rollback":
            authority = scenario.expected_authority[deployment]
            if [c.authority for c in outcome.commands] != [authority]:
                wrong.append(f"wanted one command with authority {authority!r}")
        if scenario.name == "approval-superseded" and outcome.action == "rollback":
            first_rollback = outcome.acting("auto_rollback")[0]
            if not any(d.ts <= first_rollback.ts for d in outcome.acting("request_approval")):
                wrong.append("auto_rollback without a request_approval first")
        if len(outcome.commands) > 1:
            wrong.append(f"{len(outcome.commands)} rollback commands (at most one, ever)")
        if label != "pass" and outcome.acting("pass"):
            wrong.append("a pass Decision for a release that is not good")
        if wrong:
            problems.append(f"{deployment}: {'; '.join(wrong)}\n{outcome.story()}")
    return problems


@pytest.mark.parametrize(
    ("name", "seed"), [pytest.param(n, s, id=f"{n}-{s}") for n in SCENARIOS for s in SEEDS]
)
def test_scenario_gets_the_operators_action(name: str, seed: int) -> None:
    scenario = generate(name, seed)
    problems = mismatches(scenario, outcomes(scenario, run(scenario)))
    assert not problems, f"{name} seed {seed}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", ["silent-bake", "low-traffic"])
def test_a_bake_without_evidence_ends_inconclusive_never_pass(name: str) -> None:
    for seed in SEEDS:
        scenario = generate(name, seed)
        (outcome,) = outcomes(scenario, run(scenario)).values()
        verdicts = [v.verdict for v in outcome.verdicts]
        assert "pass" not in verdicts and "inconclusive" in verdicts, (
            f"{name} seed {seed}: verdicts {verdicts}\n{outcome.story()}"
        )


def test_replaying_a_scenario_twice_gives_the_same_outputs() -> None:
    scenario = generate("approval-superseded", 0)
    first = [o.model_dump_json() for o in run(scenario)]
    assert first == [o.model_dump_json() for o in run(scenario)]


@pytest.mark.slow
def test_healthy_releases_pass_over_two_hundred_seeds() -> None:
    rolled_back, asked = [], []
    for seed in RATE_SEEDS:
        scenario = generate("healthy", seed)
        for outcome in outcomes(scenario, run(scenario)).values():
            if outcome.action == "rollback":
                rolled_back.append(f"seed {seed}:\n{outcome.story()}")
            elif outcome.action == "approval":
                asked.append(f"seed {seed}:\n{outcome.story()}")
    assert not rolled_back, "automatic rollback of a healthy release:\n" + "\n".join(rolled_back)
    assert len(asked) < 0.02 * len(RATE_SEEDS), (
        f"{len(asked)} approval requests over {len(RATE_SEEDS)} healthy releases:\n"
        + "\n".join(asked)
    )


@pytest.mark.slow
def test_a_one_window_blip_rarely_pages_over_two_hundred_seeds() -> None:
    """One bad window mid-bake is no breach (two are needed), and the model's departure it
    leaves behind is short: at most 2 % approval requests, never a rollback."""
    rolled_back, asked = [], []
    for seed in RATE_SEEDS:
        scenario = generate("one-window-blip", seed)
        for outcome in outcomes(scenario, run(scenario)).values():
            if outcome.action == "rollback":
                rolled_back.append(f"seed {seed}:\n{outcome.story()}")
            elif outcome.action == "approval":
                asked.append(f"seed {seed}:\n{outcome.story()}")
    assert not rolled_back, "automatic rollback after a blip:\n" + "\n".join(rolled_back)
    assert len(asked) <= 0.02 * len(RATE_SEEDS), (
        f"{len(asked)} approval requests over {len(RATE_SEEDS)} blips:\n" + "\n".join(asked)
    )


@pytest.mark.slow
def test_bad_releases_roll_back_over_two_hundred_seeds() -> None:
    missed = []
    for seed in RATE_SEEDS:
        scenario = generate("bad-deploy", seed)
        for outcome in outcomes(scenario, run(scenario)).values():
            if outcome.action != "rollback":
                missed.append(f"seed {seed}: {outcome.action}\n{outcome.story()}")
    assert not missed, f"{len(missed)} bad releases not rolled back:\n" + "\n".join(missed)
