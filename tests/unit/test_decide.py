"""``decide``: DESIGN §1 rule by rule, every reason code of §4, every pre-authorisation condition.

Approval outcomes that need the engine (APPROVED, DENIED, APPROVAL_EXPIRED, APPROVAL_REJECTED)
are in test_engine.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from rollguard.models.decide import (
    BakeEvidence,
    DeploymentFacts,
    Findings,
    FleetFacts,
    Stage,
    decide,
    deployment_blockers,
    match_preauthorization,
    ordered,
)
from rollguard.models.events import BLOCKERS, TRIGGERS, ChangeSet, ReasonCode
from tests.unit.core_factories import load_policy

R = ReasonCode
POLICY = load_policy()
NOW = datetime(2026, 11, 25, 8, tzinfo=UTC).timestamp()
AFTER_RULE = datetime(2027, 2, 1, tzinfo=UTC).timestamp()
BREACH = {R.THRESHOLD_BREACH: "error_rate mean 0.2 above max 0.05 for 2 windows"}


def facts(service: str = "search", **kw: Any) -> DeploymentFacts:
    base = DeploymentFacts("dep-1", service, "v2", "v1", "svc:ci-deployer", NOW - 120)
    return replace(base, **kw)


def findings(**kw: Any) -> Findings:
    base = Findings(triggers=BREACH, confirmed=True, trigger_windows=2)
    return replace(base, **kw)


def run(
    dep: DeploymentFacts | None = None,
    found: Findings | None = None,
    fleet: FleetFacts | None = None,
    stage: Stage = Stage.OBSERVING,
    ts: float = NOW,
    policy: Any = POLICY,
) -> Any:
    return decide(dep or facts(), stage, found or findings(), fleet or FleetFacts(), policy, ts)


def test_confirmed_breach_without_blocker_rolls_back_automatically() -> None:
    ruling = run()
    assert ruling.action == "auto_rollback" and ruling.authority == "auto"
    assert ruling.reasons == (R.THRESHOLD_BREACH,) and ruling.verdict == "rolled_back"
    assert ruling.evidence["budgets"]["service_used"] == 0


# Each blocker that follows from the deploy event, the policy or the fleet: (how, expected code)
DEPLOY_BLOCKERS: list[tuple[str, Callable[[], tuple[DeploymentFacts, FleetFacts]], R]] = [
    # rollback_target null
    ("no-target", lambda: (facts(rollback_target=None), FleetFacts()), R.NO_ROLLBACK_TARGET),
    # change flags, one each
    ("data", lambda: (facts(change=ChangeSet(data_writes=True)), FleetFacts()), R.DATA_WRITES),
    (
        "schema",
        lambda: (facts(change=ChangeSet(schema_migration=True)), FleetFacts()),
        R.SCHEMA_MIGRATION,
    ),
    (
        "creds",
        lambda: (facts(change=ChangeSet(credential_rotation=True)), FleetFacts()),
        R.CREDENTIAL_ROTATION,
    ),
    (
        "sessions",
        lambda: (facts(change=ChangeSet(session_invalidation=True)), FleetFacts()),
        R.SESSION_INVALIDATION,
    ),
    (
        "secrets",
        lambda: (facts(change=ChangeSet(cross_domain_secrets=True)), FleetFacts()),
        R.CROSS_DOMAIN_SECRETS,
    ),
    # shared infrastructure named in the deploy
    (
        "infra",
        lambda: (facts(change=ChangeSet(shared_infra=("postgres-main",))), FleetFacts()),
        R.SHARED_INFRA,
    ),
    # edge-gateway is tier shared in config/policy.yaml
    ("tier", lambda: (facts("edge-gateway"), FleetFacts()), R.BLAST_RADIUS),
    # payments has auto_rollback: false
    ("policy", lambda: (facts("payments"), FleetFacts()), R.POLICY_REQUIRES_APPROVAL),
    # deployed by a rollback authority
    ("identity", lambda: (facts(actor="svc:rollguard"), FleetFacts()), R.SAME_IDENTITY),
    # per-service budget (1 per hour) spent
    ("svc-budget", lambda: (facts(), FleetFacts(service_rollbacks=1)), R.RATE_LIMITED),
    # fleet budget (5 per hour) spent
    ("fleet-budget", lambda: (facts(), FleetFacts(fleet_rollbacks=5)), R.RATE_LIMITED),
    # three services breaching at once (fleet_anomaly_limit 3)
    (
        "fleet-wide",
        lambda: (facts(), FleetFacts(breaching_services=("a", "b", "search"))),
        R.FLEET_WIDE_ANOMALY,
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "code"), DEPLOY_BLOCKERS, ids=[c[0] for c in DEPLOY_BLOCKERS]
)
def test_each_deploy_or_policy_blocker_turns_rollback_into_request(
    case: str, make: Callable[[], tuple[DeploymentFacts, FleetFacts]], code: R
) -> None:
    dep, fleet = make()
    ruling = run(dep, fleet=fleet)
    assert ruling.action == "request_approval" and ruling.verdict == "pending_approval"
    assert ruling.reasons == (R.THRESHOLD_BREACH, code)
    assert ruling.details[code]  # the numbers / names behind it


@pytest.mark.parametrize(
    ("fleet", "blocked"),
    [
        (FleetFacts(breaching_services=("a", "search")), False),  # two: below the limit
        (FleetFacts(service_rollbacks=0, fleet_rollbacks=4), False),  # budget not yet spent
        (FleetFacts(fleet_rollbacks=4, service_rollbacks=1), True),  # this service's is spent
    ],
)
def test_budgets_and_fleet_guard_limits(fleet: FleetFacts, blocked: bool) -> None:
    assert (run(fleet=fleet).action == "request_approval") is blocked


# Signal-quality blockers arrive in the findings; each alone blocks automation.
QUALITY = [
    R.TELEMETRY_STALE,  # an exporter seen in the baseline went silent
    R.TELEMETRY_INCOMPLETE,  # coverage under min_coverage
    R.ALERT_FLAPPING,  # an alert flipping too often
    R.SIGNALS_CONFLICT,  # sources disagree / alert resolved / traffic drained
    R.MODEL_COLD,  # the breaching metric's model learned too little
    R.BASELINE_UNSTABLE,  # the baseline varies too much to compare with
    R.BREACH_UNCONFIRMED,  # the model does not see a departure
    R.LOW_TRAFFIC,  # too little traffic to judge
]


@pytest.mark.parametrize("code", QUALITY, ids=[c.value for c in QUALITY])
def test_each_quality_blocker_turns_rollback_into_request(code: R) -> None:
    confirmed = code not in (R.BREACH_UNCONFIRMED, R.MODEL_COLD)
    ruling = run(found=findings(blockers={code: "numbers"}, confirmed=confirmed))
    assert ruling.action == "request_approval"
    assert ruling.reasons == (R.THRESHOLD_BREACH, code)
    assert ruling.details[code] == "numbers"


def test_request_names_every_blocker_in_stable_order() -> None:
    dep = facts("payments", rollback_target=None, change=ChangeSet(data_writes=True))
    found = findings(blockers={R.LOW_TRAFFIC: "x", R.TELEMETRY_STALE: "y"})
    ruling = run(dep, found, FleetFacts(service_rollbacks=3))
    assert [c.value for c in ruling.reasons] == [
        "THRESHOLD_BREACH",
        "TELEMETRY_STALE",
        "NO_ROLLBACK_TARGET",
        "DATA_WRITES",
        "RATE_LIMITED",
        "POLICY_REQUIRES_APPROVAL",
        "LOW_TRAFFIC",
    ]


@pytest.mark.parametrize(
    "triggers",
    [
        {R.ANOMALY: "error_rate score 0.99"},  # a model score alone never rolls back
        {R.CRITICAL_ALERT: "HighErrorRate firing"},  # nor does an alert alone
        {R.ANOMALY: "x", R.CRITICAL_ALERT: "y"},  # nor both together
    ],
)
def test_triggers_without_a_threshold_breach_ask_a_human(triggers: dict[R, str]) -> None:
    ruling = run(found=findings(triggers=triggers, confirmed=True))
    assert ruling.action == "request_approval"
    # DESIGN §1.2 fails ("the threshold is explicit") and, like every failed condition, is named.
    assert set(ruling.reasons) == set(triggers) | {R.BREACH_UNCONFIRMED}
    assert "no written threshold" in ruling.details[R.BREACH_UNCONFIRMED]


def test_the_callers_reason_for_an_unconfirmed_trigger_is_kept() -> None:
    detail = "model departure (score 0.93 on latency_p99_ms) but no written threshold crossed"
    found = findings(
        triggers={R.ANOMALY: "latency_p99_ms score 0.93"},
        blockers={R.BREACH_UNCONFIRMED: detail},
    )
    ruling = run(found=found)
    assert ruling.action == "request_approval"
    assert ruling.details[R.BREACH_UNCONFIRMED] == detail


def test_an_unconfirmed_breach_is_named_even_if_the_caller_forgot() -> None:
    ruling = run(found=findings(confirmed=False))
    assert ruling.action == "request_approval"
    assert R.BREACH_UNCONFIRMED in ruling.reasons


def test_unconfirmed_breach_never_rolls_back_even_without_blockers() -> None:
    assert run(found=findings(confirmed=False)).action == "request_approval"


# ---------------------------------------------------------------------------------------------
# Pre-authorisation (config: chg-2026-311, checkout, THRESHOLD_BREACH despite TELEMETRY_STALE,
# until 2027-01-31)
# ---------------------------------------------------------------------------------------------

STALE = {R.TELEMETRY_STALE: "latency_p99_ms/prom silent for 120 s"}


@pytest.mark.parametrize(
    ("service", "found", "ts", "authority", "why"),
    [
        # matches: same service, trigger present, only allowed blockers, active, confirmed
        ("checkout", findings(blockers=STALE), NOW, "preauthorized:chg-2026-311", None),
        # another service: the rule is not even considered
        ("search", findings(blockers=STALE), NOW, None, None),
        # the rule's trigger is missing (an anomaly only)
        (
            "checkout",
            findings(triggers={R.ANOMALY: "x"}, blockers=STALE),
            NOW,
            None,
            "trigger missing",
        ),
        # a blocker the rule does not allow
        (
            "checkout",
            findings(blockers={**STALE, R.ALERT_FLAPPING: "x"}),
            NOW,
            None,
            "blocker not allowed: ALERT_FLAPPING",
        ),
        # the rule expired
        ("checkout", findings(blockers=STALE), AFTER_RULE, None, "expired on 2027-01-31"),
        # the breach is not confirmed by the model
        (
            "checkout",
            findings(blockers=STALE, confirmed=False),
            NOW,
            None,
            "breach not confirmed",
        ),
    ],
    ids=["match", "other-service", "no-trigger", "extra-blocker", "expired", "unconfirmed"],
)
def test_preauthorization_conditions(
    service: str, found: Findings, ts: float, authority: str | None, why: str | None
) -> None:
    ruling = run(facts(service), found, ts=ts)
    if authority is None:
        assert ruling.action == "request_approval"
        assert R.TELEMETRY_STALE in ruling.reasons
    else:
        assert ruling.action == "auto_rollback" and ruling.authority == authority
        assert ruling.evidence["preauthorization"] == "chg-2026-311"
        assert R.TELEMETRY_STALE in ruling.reasons  # the overridden blocker stays on record
    considered = ruling.evidence.get("preauthorizations", [])
    if why is not None:
        assert any(why in " ".join(c["why"]) for c in considered), considered


def test_preauthorization_expiry_is_inclusive_of_the_day() -> None:
    rule = POLICY.preauthorizations[0]
    last_second = datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    rule_match, _ = match_preauthorization(POLICY, "checkout", BREACH, STALE, True, last_second)
    assert rule_match is rule


def test_no_rule_can_roll_back_without_a_target() -> None:
    policy = load_policy(
        preauthorizations=[
            {
                "id": "everything",
                "owner": "t",
                "service": "search",
                "expires": "2030-01-01",
                "when": ["THRESHOLD_BREACH"],
                "allow_despite": ["NO_ROLLBACK_TARGET"],
            }
        ]
    )
    ruling = run(facts(rollback_target=None), policy=policy)
    assert ruling.action == "request_approval" and R.NO_ROLLBACK_TARGET in ruling.reasons
    (considered,) = ruling.evidence["preauthorizations"]
    assert considered["matched"] is False and "no rollback target" in considered["why"][0]


# ---------------------------------------------------------------------------------------------
# Episodes, bake end, pending requests
# ---------------------------------------------------------------------------------------------


def test_a_starting_episode_is_watched_once() -> None:
    episode = {R.THRESHOLD_BREACH: "error_rate breached 1 of 2 windows"}
    quiet = Findings(episode=episode)
    assert run(found=quiet).action == "watch"
    assert run(found=quiet, stage=Stage.WATCHING) is None
    assert run(found=Findings()) is None  # nothing at all: nothing to say


def test_a_request_waits_while_another_trigger_builds() -> None:
    building = {R.THRESHOLD_BREACH: "latency breached 1 of 2 windows"}
    early = Findings(triggers={R.CRITICAL_ALERT: "x"}, episode=building, trigger_windows=1)
    assert run(found=early).action == "watch"
    assert run(found=early, stage=Stage.WATCHING) is None
    late = replace(early, trigger_windows=2)  # waited consecutive_breach_windows - 1 windows
    assert run(found=late).action == "request_approval"
    # an automatic rollback never waits
    now = Findings(triggers=BREACH, confirmed=True, episode=building, trigger_windows=1)
    assert run(found=now).action == "auto_rollback"


GOOD_BAKE = BakeEvidence({"error_rate": 1.0, "latency_p99_ms": 0.97}, {"request_rate": 80.0}, 180)


@pytest.mark.parametrize(
    ("bake", "blockers", "action", "codes"),
    [
        # covered and busy: pass
        (GOOD_BAKE, {}, "pass", set()),
        # thin coverage of one threshold metric
        (
            replace(GOOD_BAKE, coverage={"error_rate": 1.0, "latency_p99_ms": 0.5}),
            {},
            "request_approval",
            {R.INSUFFICIENT_EVIDENCE},
        ),
        # no telemetry at all after the deploy
        (
            BakeEvidence({}, {"request_rate": None}, 0),
            {},
            "request_approval",
            {R.INSUFFICIENT_EVIDENCE, R.LOW_TRAFFIC},
        ),
        # quiet service
        (
            replace(GOOD_BAKE, traffic_mean={"request_rate": 0.2}),
            {},
            "request_approval",
            {R.LOW_TRAFFIC},
        ),
        # an exporter went stale at the end: never a pass
        (
            GOOD_BAKE,
            {R.TELEMETRY_STALE: "x"},
            "request_approval",
            {R.INSUFFICIENT_EVIDENCE, R.TELEMETRY_STALE},
        ),
        # one missed scrape in the last window does not spoil a covered bake
        (GOOD_BAKE, {R.TELEMETRY_INCOMPLETE: "x"}, "pass", set()),
    ],
    ids=["pass", "thin", "silent", "quiet", "stale", "one-gap"],
)
def test_bake_end(bake: BakeEvidence, blockers: dict[R, str], action: str, codes: set[R]) -> None:
    ruling = run(found=Findings(bake_over=True, bake=bake, blockers=blockers))
    assert ruling.action == action
    if action == "pass":
        assert ruling.verdict == "pass" and ruling.reasons == ()
    else:
        assert ruling.verdict == "inconclusive" and set(ruling.reasons) == codes


def test_pending_request_is_superseded_when_blockers_clear() -> None:
    ruling = run(found=findings(), stage=Stage.PENDING)
    assert ruling.action == "auto_rollback" and R.APPROVAL_SUPERSEDED in ruling.reasons
    still = run(found=findings(blockers=STALE, confirmed=True), stage=Stage.PENDING)
    assert still is None  # a blocker remains: keep waiting for the human


def test_pending_request_is_superseded_by_a_preauthorization() -> None:
    ruling = run(facts("checkout"), findings(blockers=STALE), stage=Stage.PENDING)
    assert ruling.authority == "preauthorized:chg-2026-311"
    assert R.APPROVAL_SUPERSEDED in ruling.reasons


@pytest.mark.parametrize(
    ("clear", "action"),
    [(1, None), (2, "withdraw")],  # cleared for consecutive_breach_windows windows
)
def test_pending_request_is_withdrawn_when_triggers_clear(clear: int, action: str | None) -> None:
    ruling = run(found=Findings(clear_windows=clear), stage=Stage.PENDING)
    assert (ruling.action if ruling else None) == action
    if ruling:
        assert ruling.reasons == (R.APPROVAL_WITHDRAWN,) and ruling.verdict == "inconclusive"


def test_inconclusive_request_is_not_judged_again() -> None:
    assert run(stage=Stage.INCONCLUSIVE) is None


def test_every_reason_code_is_covered_by_these_tests() -> None:
    outcome_codes = {
        R.APPROVED,
        R.DENIED,
        R.APPROVAL_EXPIRED,
        R.APPROVAL_REJECTED,  # engine-level: test_engine.py
        R.APPROVAL_SUPERSEDED,
        R.APPROVAL_WITHDRAWN,
    }
    here = (
        {code for _, _, code in DEPLOY_BLOCKERS}
        | set(QUALITY)
        | {
            R.INSUFFICIENT_EVIDENCE,
            R.LOW_TRAFFIC,
        }
    )
    assert BLOCKERS <= here
    assert TRIGGERS | BLOCKERS | outcome_codes == set(R)


def test_deployment_blockers_alone() -> None:
    assert deployment_blockers(facts(), POLICY, FleetFacts()) == {}
    assert ordered({R.LOW_TRAFFIC, R.THRESHOLD_BREACH}) == (R.THRESHOLD_BREACH, R.LOW_TRAFFIC)
