"""The rule registry: each trigger, episode and blocker rule alone, table-driven.

Every case builds one ``Judgement`` with ``judgement(...)`` (defaults: a healthy window of
``search``, nothing breaching, warm models, no fleet trouble) and says which finding the rule
should return (None: none). The policy is config/policy.yaml: 2 consecutive windows, anomaly
threshold 0.8, anomaly alone after 4 windows.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import replace
from typing import Any

import pytest

from rollguard.models.events import BLOCKERS, TRIGGERS, ChangeSet, ReasonCode
from rollguard.models.facts import DeploymentFacts, FleetFacts
from rollguard.models.judgement import Judgement, Streaks
from rollguard.models.quality import Signals
from rollguard.models.rules import (
    DEPLOYMENT_BLOCKERS,
    EPISODE_RULES,
    TRIGGER_RULES,
    WINDOW_BLOCKERS,
    Rule,
    anomaly,
    anomaly_building,
    breach_building,
    breach_unconfirmed,
    critical_alert,
    critical_building,
    deployment_blockers,
    evaluate,
    model_cold,
    threshold_breach,
)
from rollguard.models.scoring import JOINT, Score
from rollguard.models.thresholds import ThresholdCheck
from rollguard.models.windows import WindowSummary
from tests.unit.core_factories import T0, load_policy

R = ReasonCode
POLICY = load_policy()
FACTS = DeploymentFacts("dep-1", "search", "v2", "v1", "svc:ci-deployer", T0)
BREACH = ThresholdCheck("mean", 0.2, 0.05, 3.0, 0.01, True)
NO_FLEET, NO_STREAK = FleetFacts(), Streaks()
HOT, COLD, CALM = Score(0.95, 20, "s"), Score(0.95, 3, "s"), Score(0.1, 20, "s")


def signals(**kw: Any) -> Signals:
    base: dict[str, Any] = {
        "breaching": (),
        "stale": {},
        "span": {},
        "flips": {},
        "resolved": {},
        "disagreements": {},
        "drain": {},
        "learned": {},
        "traffic_means": {"request_rate": 100.0},
    }
    return Signals(**{**base, **kw})


def judgement(
    *,
    facts: DeploymentFacts = FACTS,
    fleet: FleetFacts = NO_FLEET,
    streaks: Streaks = NO_STREAK,
    checks: dict[str, ThresholdCheck] | None = None,
    scores: dict[str, Score] | None = None,
    critical: tuple[str, ...] = (),
    policy: Any = POLICY,
    **signal_fields: Any,
) -> Judgement:
    summary = WindowSummary(1, T0, T0 + 30, {})
    return Judgement(
        facts,
        policy,
        policy.for_service(facts.service),
        fleet,
        summary,
        None,
        checks or {},
        scores or {},
        streaks,
        critical,
        signals(**signal_fields),
    )


def code_of(rule: Rule, j: Judgement) -> ReasonCode | None:
    found = rule(j)
    return None if found is None else found.code


# ---------------------------------------------------------------------------------------------
# triggers and episodes


@pytest.mark.parametrize(
    ("rule", "kw", "code"),
    [
        # two breaching windows in a row: a THRESHOLD_BREACH
        (threshold_breach, {"streaks": Streaks(breach={"error_rate": 2}),
                            "checks": {"error_rate": BREACH}}, R.THRESHOLD_BREACH),
        # one window is only the start of an episode
        (threshold_breach, {"streaks": Streaks(breach={"error_rate": 1}),
                            "checks": {"error_rate": BREACH}}, None),
        (breach_building, {"streaks": Streaks(breach={"error_rate": 1})}, R.THRESHOLD_BREACH),
        (breach_building, {"streaks": Streaks(breach={"error_rate": 2})}, None),
        # a critical alert firing for two windows
        (critical_alert, {"streaks": Streaks(critical=2), "critical": ("High",)},
         R.CRITICAL_ALERT),
        (critical_alert, {"streaks": Streaks(critical=1), "critical": ("High",)}, None),
        (critical_building, {"streaks": Streaks(critical=1), "critical": ("High",)},
         R.CRITICAL_ALERT),
        (critical_building, {"streaks": Streaks(critical=2), "critical": ("High",)}, None),
        # an anomaly alone needs 4 windows ...
        (anomaly, {"streaks": Streaks(anomaly={JOINT: 3}), "scores": {JOINT: HOT}}, None),
        (anomaly, {"streaks": Streaks(anomaly={JOINT: 4}), "scores": {JOINT: HOT}}, R.ANOMALY),
        (anomaly_building, {"streaks": Streaks(anomaly={JOINT: 3})}, R.ANOMALY),
        # ... beside a breach, 2 are enough
        (anomaly, {"streaks": Streaks(breach={"error_rate": 2}, anomaly={JOINT: 2}),
                   "scores": {JOINT: HOT}, "checks": {"error_rate": BREACH}}, R.ANOMALY),
        (anomaly_building, {"streaks": Streaks(breach={"error_rate": 2}, anomaly={JOINT: 2})},
         None),
    ],
)
def test_trigger_and_episode_rules(rule: Rule, kw: dict[str, Any], code: R | None) -> None:
    assert code_of(rule, judgement(**kw)) == code


def test_trigger_details_name_the_numbers() -> None:
    j = judgement(streaks=Streaks(breach={"error_rate": 2}), checks={"error_rate": BREACH})
    found = threshold_breach(j)
    assert found is not None
    assert found.detail == (
        "error_rate mean 0.2 above max 0.05 / 3 x baseline 0.01 for 2 windows"
    )


# ---------------------------------------------------------------------------------------------
# window blockers


BREACHING = {"breaching": ("error_rate",), "learned": {"error_rate": 20}}


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        # a baseline stream silent for 120 s
        ({"stale": {"error_rate/prom": 120.0}}, R.TELEMETRY_STALE),
        # 4 of 6 samples over the span
        ({"span": {"error_rate": {"coverage": 4 / 6, "samples": 4, "expected": 6, "windows": 2}}},
         R.TELEMETRY_INCOMPLETE),
        # incomplete because stale: only stale is named
        ({"span": {"error_rate": {"coverage": 0.0, "samples": 0, "expected": 6, "windows": 2}},
          "stale": {"error_rate/prom": 120.0}}, R.TELEMETRY_STALE),
        # 4 flips in the flap window
        ({"flips": {"HighErrorRate": 4}}, R.ALERT_FLAPPING),
        ({"flips": {"HighErrorRate": 3}}, None),
        # breaching while the matching alert resolved
        ({**BREACHING, "resolved": {"HighErrorRate": T0}}, R.SIGNALS_CONFLICT),
        # two sources 3x apart
        ({"disagreements": {"error_rate": {"stat": "mean", "by_source": {"a": 0.1, "b": 0.3},
                                           "relative_gap": 0.667}}}, R.SIGNALS_CONFLICT),
        # breaching while traffic drained
        ({**BREACHING, "drain": {"request_rate": {"mean": 1.0, "baseline_mean": 100.0}}},
         R.SIGNALS_CONFLICT),
        # the breaching metric's model learned 3 windows
        ({"breaching": ("error_rate",), "learned": {"error_rate": 3}}, R.MODEL_COLD),
        # traffic below min_traffic, or none at all
        ({"traffic_means": {"request_rate": 0.2}}, R.LOW_TRAFFIC),
        ({"traffic_means": {"request_rate": None}}, R.LOW_TRAFFIC),
        # healthy
        ({}, None),
    ],
)
def test_window_blockers(kw: dict[str, Any], code: R | None) -> None:
    found = evaluate(WINDOW_BLOCKERS, judgement(**kw))
    assert set(found) == ({code} if code else set())


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        # the warm model agreed in both breaching windows: confirmed
        ({"streaks": Streaks(breach={"error_rate": 2}, confirmed={"error_rate": 2}),
          "scores": {"error_rate": HOT}}, None),
        # the warm model scored low in a breaching window
        ({"streaks": Streaks(breach={"error_rate": 2}, confirmed={"error_rate": 0}),
          "scores": {"error_rate": CALM}}, "error_rate model score 0.1 < 0.8"),
        # it agreed only now
        ({"streaks": Streaks(breach={"error_rate": 2}, confirmed={"error_rate": 1}),
          "scores": {"error_rate": HOT}}, "error_rate model agreed in only 1 of 2 windows"),
        # a cold model says nothing (MODEL_COLD names it)
        ({"streaks": Streaks(breach={"error_rate": 2}), "scores": {"error_rate": COLD}}, None),
        # an anomaly trigger without a written threshold crossed
        ({"streaks": Streaks(anomaly={JOINT: 4}), "scores": {JOINT: HOT}},
         "model departure (score 0.95 on *joint*) but no written threshold crossed"),
        # a critical alert alone
        ({"streaks": Streaks(critical=2), "critical": ("High",)},
         "critical alert High but no written threshold crossed"),
        # nothing at all
        ({}, None),
    ],
)
def test_breach_unconfirmed(kw: dict[str, Any], expected: str | None) -> None:
    found = breach_unconfirmed(judgement(**kw))
    if expected is None:
        assert found is None
    else:
        assert found is not None and found.code is R.BREACH_UNCONFIRMED
        assert expected in found.detail


def test_model_cold_only_for_breaching_metrics() -> None:
    assert model_cold(judgement(learned={"error_rate": 3})) is None
    assert code_of(model_cold, judgement(breaching=("error_rate",))) is R.MODEL_COLD


# ---------------------------------------------------------------------------------------------
# deployment blockers


@pytest.mark.parametrize(
    ("facts", "policy_kw", "fleet", "code"),
    [
        (replace(FACTS, rollback_target=None), {}, FleetFacts(), R.NO_ROLLBACK_TARGET),
        (replace(FACTS, change=ChangeSet(shared_infra=("kafka",))), {}, FleetFacts(),
         R.SHARED_INFRA),
        (replace(FACTS, change=ChangeSet(data_writes=True)), {}, FleetFacts(), R.DATA_WRITES),
        (replace(FACTS, change=ChangeSet(schema_migration=True)), {}, FleetFacts(),
         R.SCHEMA_MIGRATION),
        (replace(FACTS, change=ChangeSet(credential_rotation=True)), {}, FleetFacts(),
         R.CREDENTIAL_ROTATION),
        (replace(FACTS, change=ChangeSet(session_invalidation=True)), {}, FleetFacts(),
         R.SESSION_INVALIDATION),
        (replace(FACTS, change=ChangeSet(cross_domain_secrets=True)), {}, FleetFacts(),
         R.CROSS_DOMAIN_SECRETS),
        (FACTS, {"tier": "shared"}, FleetFacts(), R.BLAST_RADIUS),
        (FACTS, {"auto_rollback": False}, FleetFacts(), R.POLICY_REQUIRES_APPROVAL),
        (replace(FACTS, actor="svc:rollguard"), {}, FleetFacts(), R.SAME_IDENTITY),
        (FACTS, {}, FleetFacts(service_rollbacks=1), R.RATE_LIMITED),
        (FACTS, {}, FleetFacts(fleet_rollbacks=5), R.RATE_LIMITED),
        (FACTS, {}, FleetFacts(breaching_services=("a", "b", "c")), R.FLEET_WIDE_ANOMALY),
        (FACTS, {}, FleetFacts(breaching_services=("a", "b")), None),
        (FACTS, {}, FleetFacts(), None),
    ],
)
def test_deployment_blockers(
    facts: DeploymentFacts, policy_kw: dict[str, Any], fleet: FleetFacts, code: R | None
) -> None:
    policy = load_policy(**policy_kw)
    assert set(deployment_blockers(facts, policy, fleet)) == ({code} if code else set())


def test_every_trigger_and_blocker_has_one_rule() -> None:
    """Each reason code is produced by exactly one place: the tables cover §4's triggers and
    blockers (INSUFFICIENT_EVIDENCE is the bake end's, in ``decide``)."""
    produced: dict[ReasonCode, int] = {}
    for rule in (*TRIGGER_RULES, *WINDOW_BLOCKERS, *DEPLOYMENT_BLOCKERS):
        for code in _codes_of(rule):
            produced[code] = produced.get(code, 0) + 1
    assert set(produced) == (set(TRIGGERS) | set(BLOCKERS)) - {R.INSUFFICIENT_EVIDENCE}
    assert all(n == 1 for n in produced.values()), produced
    assert {c for r in EPISODE_RULES for c in _codes_of(r)} == set(TRIGGERS)


def _codes_of(rule: Rule) -> set[ReasonCode]:
    """The codes a rule can return: its ``code``, or the ``R.<CODE>`` its source names."""
    code = getattr(rule, "code", None)
    if isinstance(code, ReasonCode):
        return {code}
    source = inspect.getsource(rule)
    return {c for c in ReasonCode if re.search(rf"\bR\.{c.name}\b", source)}
