"""The worked example of docs/core.md ("How to add a blocker"), run as a real test.

The rule below is the documented example; ``test_the_docs_show_this_example`` keeps the page
and this file the same text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from rollguard.models import rules
from rollguard.models.decide import Findings, FleetFacts, Stage, decide
from rollguard.models.events import ReasonCode
from rollguard.models.facts import DeploymentFacts
from rollguard.models.judgement import Finding, Judgement
from tests.unit.core_factories import REPO, load_policy

POLICY = load_policy()


# --8<-- [start:example]
def weekend_deploy(j: Judgement) -> Finding | None:
    """A release deployed on a Saturday or Sunday (UTC) is rolled back only by a human."""
    if datetime.fromtimestamp(j.facts.deployed_at, UTC).weekday() < 5:
        return None
    return Finding(ReasonCode.POLICY_REQUIRES_APPROVAL, "deployed on a weekend")


@pytest.mark.parametrize(
    ("deployed", "blocked"),
    [
        (datetime(2026, 11, 27, 17, tzinfo=UTC), False),  # a Friday afternoon
        (datetime(2026, 11, 28, 9, tzinfo=UTC), True),  # a Saturday morning
    ],
)
def test_weekend_deploy(deployed: datetime, blocked: bool) -> None:
    facts = DeploymentFacts("dep-1", "search", "v2", "v1", "svc:ci", deployed.timestamp())
    found = weekend_deploy(Judgement.of_deployment(facts, POLICY, FleetFacts()))
    assert (found is not None) == blocked
# --8<-- [end:example]


def test_a_listed_blocker_turns_a_rollback_into_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listed in ``DEPLOYMENT_BLOCKERS``, the rule is all ``decide`` needs."""
    monkeypatch.setattr(rules, "DEPLOYMENT_BLOCKERS", (*rules.DEPLOYMENT_BLOCKERS, weekend_deploy))
    saturday = datetime(2026, 11, 28, 9, tzinfo=UTC).timestamp()
    facts = DeploymentFacts("dep-1", "search", "v2", "v1", "svc:ci", saturday)
    breach = Findings(triggers={ReasonCode.THRESHOLD_BREACH: "error_rate"}, confirmed=True)
    ruling = decide(facts, Stage.OBSERVING, breach, FleetFacts(), POLICY, saturday + 120)
    assert ruling is not None and ruling.action == "request_approval"
    assert ruling.details[ReasonCode.POLICY_REQUIRES_APPROVAL] == "deployed on a weekend"


def test_the_docs_show_this_example() -> None:
    page = (REPO / "docs" / "core.md").read_text()
    shown = re.search(r"## How to add a blocker.*?```python\n(.*?)```", page, re.S)
    assert shown is not None, "docs/core.md has no 'How to add a blocker' example"
    source = (REPO / "tests" / "unit" / "test_add_a_blocker.py").read_text()
    example = re.search(r"# --8<-- \[start:example\]\n(.*?)# --8<-- \[end:example\]", source, re.S)
    assert example is not None
    assert shown.group(1) == example.group(1)
