"""The engine end to end on small recordings: lifecycles, approvals, fleet, state round trip.

Recordings: ``search`` (the deployed service) and ``other`` (a neighbour that keeps the fleet
clock going) publish every 10 s from T0; the deploy is at D = T0 + 1500 s (50 windows of
history), on a window boundary unless a test says otherwise.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import pytest

from rollguard.models.engine import ApprovalCheck, advance, new_state, step
from rollguard.models.events import ApprovalRequest, ApprovalResponse, Decision, RollbackCommand
from rollguard.models.records import command_id, request_id
from tests.unit.core_factories import (
    GOOD,
    HEALTHY,
    KIT,
    T0,
    actions,
    after,
    alert,
    approval,
    deploy,
    in_time_order,
    load_policy,
    of_type,
    run,
    silent_after,
    telemetry,
)

POLICY = load_policy()
D = T0 + 1500.0
END = D + 800.0
REQ = request_id("search", "dep-1")


def recording(
    levels: dict[str, Any] | None = None,
    *extra: Any,
    end: float = END,
    service: str = "search",
    **deploy_kw: Any,
) -> list[Any]:
    """History + bake of ``service`` with ``levels``, a healthy neighbour, and the deploy."""
    return in_time_order(
        telemetry(service, T0, end, {**HEALTHY, **(levels or {})}),
        telemetry("other", T0, end),
        [deploy(D, service=service, **deploy_kw)],
        *extra,
    )


BAD = {"error_rate": after(D + 30, 0.2, 0.01)}
# latency exporter silent from the deploy until D + 200, while errors breach from D + 70
STALE_THEN_BACK = {
    "error_rate": after(D + 70, 0.2, 0.01),
    "latency_p99_ms": lambda t: None if D <= t < D + 200 else 200.0,
}


def decisions(outputs: list[Any]) -> list[Decision]:
    return of_type(outputs, "decision")


def test_healthy_release_passes() -> None:
    outputs = run(recording(), POLICY)
    assert actions(outputs) == [("pass", ())]
    (verdict,) = of_type(outputs, "release_verdict")
    assert verdict.verdict == "pass" and verdict.ts == D + 600
    assert decisions(outputs)[0].ts == D + 600  # the end of the window that decided
    assert decisions(outputs)[0].evidence["bake"]["coverage"]["error_rate"] == 1.0


def test_bad_release_gets_exactly_one_command() -> None:
    outputs = run(recording(BAD), POLICY)
    assert actions(outputs) == [
        ("watch", ("THRESHOLD_BREACH", "ANOMALY")),
        ("auto_rollback", ("THRESHOLD_BREACH", "ANOMALY")),
    ]
    (command,) = of_type(outputs, "rollback_command")
    assert isinstance(command, RollbackCommand)
    digest = hashlib.sha256(b"6:search:dep-1").hexdigest()[:16]
    assert command.command_id == command_id("search", "dep-1") == f"cmd-{digest}"
    assert (command.from_version, command.to_version, command.authority) == ("v2", "v1", "auto")
    assert command.issued_by == "svc:rollguard" and command.signature == ""
    assert command.issued_at == D + 90  # windows [D+30, D+60) and [D+60, D+90) breached
    assert command.expires_at == command.issued_at + 300
    assert command.policy_version == "test"
    (verdict,) = of_type(outputs, "release_verdict")
    assert verdict.verdict == "rolled_back"


def test_decisive_evidence_reconstructs_the_decision() -> None:
    outputs = run(recording(BAD), POLICY)
    evidence = decisions(outputs)[-1].evidence
    assert {
        "deployment",
        "windows",
        "thresholds",
        "baseline",
        "quality",
        "anomaly",
        "late_events",
        "budgets",
        "fleet",
        "details",
        "authority",
    } <= set(evidence)
    assert evidence["deployment"]["change"]["data_writes"] is False
    window = evidence["windows"][-1]
    # times in evidence are RFC 3339 (not epoch floats rounded to 6 digits)
    assert window["end"] == "2026-11-25T08:26:30Z" == evidence["decided_at"]
    assert evidence["deployment"]["deployed_at"] == "2026-11-25T08:25:00Z"
    assert set(window["metrics"]["error_rate"]) >= {"count", "mean", "p95", "max", "coverage"}
    err = evidence["thresholds"]["error_rate"]
    assert err["breach"] and err["max"] == 0.05 and err["breach_windows"] == 2
    assert err["baseline"] == pytest.approx(0.01, rel=0.05)
    assert len(evidence["windows"]) == 2  # the deciding windows
    assert evidence["anomaly"]["scores"]["error_rate"]["snapshot_id"]
    assert evidence["budgets"] == {
        "service_used": 0,
        "service_limit": 1,
        "fleet_used": 0,
        "fleet_limit": 5,
    }


def test_blocker_requests_approval_then_superseded_when_it_clears() -> None:
    outputs = run(recording(STALE_THEN_BACK), POLICY)
    got = actions(outputs)
    assert got[0] == ("watch", ("THRESHOLD_BREACH", "ANOMALY"))
    assert got[1][0] == "request_approval" and "TELEMETRY_STALE" in got[1][1]
    assert got[-1][0] == "auto_rollback" and "APPROVAL_SUPERSEDED" in got[-1][1]
    (request,) = of_type(outputs, "approval_request")
    assert isinstance(request, ApprovalRequest) and request.request_id == REQ
    stale = {r.code: r.detail for r in request.reasons}["TELEMETRY_STALE"]
    assert "latency_p99_ms/prom silent for" in stale
    assert request.expires_at == decisions(outputs)[1].ts + 1800
    assert request.deploy_actor == "svc:ci-deployer" and request.required_role == "sre-oncall"
    assert len(of_type(outputs, "rollback_command")) == 1
    assert [v.verdict for v in of_type(outputs, "release_verdict")] == [
        "pending_approval",
        "rolled_back",
    ]


def test_request_is_withdrawn_when_the_breach_clears() -> None:
    transient = {"error_rate": lambda t: 0.2 if D + 30 <= t < D + 150 else 0.01}
    outputs = run(recording(transient, data_writes=True), POLICY)
    got = actions(outputs)
    assert got[1][0] == "request_approval" and "DATA_WRITES" in got[1][1]
    assert got[-1] == ("none", ("APPROVAL_WITHDRAWN",))
    assert of_type(outputs, "release_verdict")[-1].verdict == "inconclusive"
    assert not of_type(outputs, "rollback_command")


# ---------------------------------------------------------------------------------------------
# Approval responses (DESIGN §6)
# ---------------------------------------------------------------------------------------------

WHEN = D + 200.0  # the request is out by D + 90


def _approve(*responses: Any, checks: dict[str, ApprovalCheck | None] | None = None) -> list[Any]:
    return run(recording(BAD, list(responses), data_writes=True), POLICY, checks=checks)


def test_approval_rolls_back_with_the_approvers_authority() -> None:
    outputs = _approve(approval(WHEN, REQ))
    assert actions(outputs)[-1] == ("auto_rollback", ("APPROVED",))
    (command,) = of_type(outputs, "rollback_command")
    assert command.authority == "approved:user:alice" and command.issued_at == WHEN
    assert of_type(outputs, "release_verdict")[-1].verdict == "rolled_back"


def test_denial_keeps_the_release() -> None:
    outputs = _approve(approval(WHEN, REQ, decision="deny"))
    assert actions(outputs)[-1] == ("none", ("DENIED",))
    assert of_type(outputs, "release_verdict")[-1].verdict == "pass"
    assert not of_type(outputs, "rollback_command")


@pytest.mark.parametrize(
    ("response", "check", "cause"),
    [
        # the approver deployed the release
        (
            approval(WHEN, REQ, approver="svc:ci-deployer"),
            GOOD,
            "self-approval",
        ),
        # the approver lacks sre-oncall
        (approval(WHEN, REQ), ApprovalCheck(True, True, frozenset({"dev"})), "lacks role"),
        # the signature did not verify in the shell
        (approval(WHEN, REQ), ApprovalCheck(False, True, frozenset({"sre-oncall"})), "signature"),
        # not in config/approvers.yaml
        (approval(WHEN, REQ), ApprovalCheck(True, False, frozenset()), "unknown approver"),
        # the shell passed no check at all: treated as unverified
        (approval(WHEN, REQ), None, "signature"),
        # answered after expires_at (request at D+90, ttl 1800)
        (approval(D + 90 + 1801, REQ), GOOD, "expired"),
        # a request that never existed
        (approval(WHEN, "apr-0000000000000000"), GOOD, "no such approval request"),
    ],
    ids=["self", "role", "signature", "unknown", "no-check", "late", "no-request"],
)
def test_approval_rejections(response: Any, check: ApprovalCheck | None, cause: str) -> None:
    end = max(END, response.ts + 60)
    events = recording(BAD, [response], end=end, data_writes=True)
    outputs = run(events, POLICY, checks={response.approver: check})
    rejected = [d for d in decisions(outputs) if d.reasons == ("APPROVAL_REJECTED",)]
    assert len(rejected) == 1 and cause in rejected[0].evidence["cause"]
    assert not of_type(outputs, "rollback_command")


def test_second_answer_to_a_decided_request_is_rejected() -> None:
    outputs = _approve(approval(WHEN, REQ), approval(WHEN + 5, REQ, approver="user:bob"))
    assert len(of_type(outputs, "rollback_command")) == 1
    last = decisions(outputs)[-1]
    assert last.reasons == ("APPROVAL_REJECTED",)
    assert last.evidence["cause"] == "request already approved"
    assert last.deployment_id == "dep-1"


def _arrived(response: Any, received_at: float) -> Any:
    return response.model_copy(update={"received_at": received_at})


def _by_arrival(*responses: Any, end: float = END) -> list[Any]:
    """The recording with ``responses`` where the worker would read them: at their arrival."""
    events = [*recording(BAD, end=end, data_writes=True), *responses]
    return sorted(events, key=lambda e: e.arrival if isinstance(e, ApprovalResponse) else e.ts)


def test_a_backdated_approve_published_after_a_deny_issues_no_command() -> None:
    deny = _arrived(approval(WHEN, REQ, decision="deny"), WHEN)
    backdated = _arrived(approval(WHEN - 1, REQ), WHEN + 2)  # signed "earlier", arrived later
    outputs = run(_by_arrival(deny, backdated), POLICY)
    assert not of_type(outputs, "rollback_command")
    assert ("none", ("DENIED",)) in actions(outputs)
    last = decisions(outputs)[-1]
    assert last.reasons == ("APPROVAL_REJECTED",)
    assert last.evidence["cause"] == "request already denied"
    assert last.ts == WHEN + 2  # the broker's time, not the signed one


@pytest.mark.parametrize(
    ("response", "cause"),
    [
        # signed 1,000 s before it reached the broker (limit 300 s)
        (_arrived(approval(WHEN - 1000, REQ), WHEN), "from its arrival"),
        # signed 1,000 s after it reached the broker
        (_arrived(approval(WHEN + 1000, REQ), WHEN), "from its arrival"),
        # signed in time, but arrived after the request expired (D + 90 + 1800)
        (_arrived(approval(D + 90 + 1700, REQ), D + 90 + 1801), "expired"),
        # the right request id, named under another service
        (approval(WHEN, REQ, service="checkout"), "the request is of service search"),
    ],
    ids=["backdated", "postdated", "late-arrival", "other-service"],
)
def test_arrival_rejections(response: Any, cause: str) -> None:
    check = ApprovalCheck(True, True, frozenset({"sre-oncall"}), max_clock_skew_seconds=300)
    end = max(END, response.arrival + 60)
    outputs = run(_by_arrival(response, end=end), POLICY, checks={response.approver: check})
    rejected = [d for d in decisions(outputs) if d.reasons == ("APPROVAL_REJECTED",)]
    assert len(rejected) == 1 and cause in rejected[0].evidence["cause"], rejected
    assert not of_type(outputs, "rollback_command")


def test_unanswered_request_expires() -> None:
    end = D + 90 + 1800 + 60
    outputs = run(recording(BAD, end=end, data_writes=True), POLICY)
    assert actions(outputs)[-1] == ("none", ("APPROVAL_EXPIRED",))
    assert decisions(outputs)[-1].ts == D + 90 + 1800
    assert of_type(outputs, "release_verdict")[-1].verdict == "inconclusive"


# ---------------------------------------------------------------------------------------------
# Deploy statuses, fleet, budgets
# ---------------------------------------------------------------------------------------------


def test_new_start_closes_the_open_deployment() -> None:
    second = deploy(D + 300, deployment_id="dep-2", version="v3", rollback_target="v2")
    outputs = run(recording(None, [second], end=D + 1000), POLICY)
    first = [d for d in decisions(outputs) if d.deployment_id == "dep-1"]
    assert [(d.action, d.reasons) for d in first] == [("none", ())]
    assert first[0].evidence["closed_by"] == {"deployment_id": "dep-2", "status": "started"}
    assert [d.action for d in decisions(outputs) if d.deployment_id == "dep-2"] == ["pass"]


@pytest.mark.parametrize("status", ["aborted", "rolled_back"])
def test_ending_statuses_close_without_further_decisions(status: str) -> None:
    end_event = deploy(D + 45, status=status)
    outputs = run(recording(BAD, [end_event]), POLICY)
    assert decisions(outputs) == []  # closed before the breach became actionable


def test_completed_without_started_opens_and_duplicates_are_ignored() -> None:
    events = in_time_order(
        telemetry("search", T0, END),
        telemetry("other", T0, END),
        [deploy(D, status="completed"), deploy(D + 5, status="completed")],
    )
    assert actions(run(events, POLICY)) == [("pass", ())]


def test_silent_bake_ends_inconclusive_on_the_fleet_clock() -> None:
    silent = {m: silent_after(D, v) for m, v in HEALTHY.items()}
    outputs = run(recording(silent), POLICY)
    (last,) = decisions(outputs)
    assert last.action == "request_approval" and last.ts == D + 600
    assert {"INSUFFICIENT_EVIDENCE", "TELEMETRY_STALE", "LOW_TRAFFIC"} <= set(last.reasons)
    assert of_type(outputs, "release_verdict")[-1].verdict == "inconclusive"


def test_fleet_wide_breach_blocks_automation() -> None:
    broken = {"error_rate": after(D + 30, 0.2, 0.01)}
    events = in_time_order(
        recording(BAD),
        telemetry("alpha", T0, END, {**HEALTHY, **broken}),
        telemetry("beta", T0, END, {**HEALTHY, **broken}),
    )
    outputs = run(events, POLICY)
    request = decisions(outputs)[-1]
    assert request.action == "request_approval" and "FLEET_WIDE_ANOMALY" in request.reasons
    assert request.evidence["fleet"]["breaching_services"] == ["alpha", "beta", "search"]


def test_rollback_budget_per_service_per_hour() -> None:
    d2 = D + 1500
    levels = {"error_rate": lambda t: 0.2 if D + 30 <= t < D + 600 or t >= d2 + 30 else 0.01}
    events = in_time_order(
        telemetry("search", T0, d2 + 800, {**HEALTHY, **levels}),
        telemetry("other", T0, d2 + 800),
        [deploy(D), deploy(d2, deployment_id="dep-2", version="v3", rollback_target="v2")],
    )
    outputs = run(events, POLICY)
    by_dep = {d.deployment_id: (d.action, d.reasons) for d in decisions(outputs)}
    assert by_dep["dep-1"][0] == "auto_rollback"
    assert by_dep["dep-2"][0] == "request_approval" and "RATE_LIMITED" in by_dep["dep-2"][1]


def test_preauthorized_rollback_names_the_rule() -> None:
    levels = {
        "error_rate": after(D + 70, 0.2, 0.01),
        "latency_p99_ms": silent_after(D, 200.0),
    }
    outputs = run(recording(levels, service="checkout"), POLICY)
    (command,) = of_type(outputs, "rollback_command")
    assert command.authority == "preauthorized:chg-2026-311"
    assert "TELEMETRY_STALE" in command.reasons
    assert decisions(outputs)[-1].evidence["preauthorization"] == "chg-2026-311"


def test_critical_alert_alone_asks_a_human() -> None:
    alerts = [alert(D + 40), alert(D + 70)]
    outputs = run(recording(None, alerts), POLICY)
    got = actions(outputs)
    assert got[-1] == ("request_approval", ("CRITICAL_ALERT", "BREACH_UNCONFIRMED"))
    request = of_type(outputs, "approval_request")[-1]
    detail = {r.code: r.detail for r in request.reasons}["BREACH_UNCONFIRMED"]
    assert "critical alert" in detail and "no written threshold crossed" in detail


def test_straddling_window_is_neither_baseline_nor_observation() -> None:
    d = D + 15  # mid-window
    # a breach confined to the straddling window [D, D + 30) is not observed
    levels = {"error_rate": lambda t: 0.2 if d <= t < D + 30 else 0.01}
    events = in_time_order(
        telemetry("search", T0, END, {**HEALTHY, **levels}),
        telemetry("other", T0, END),
        [deploy(d)],
    )
    outputs = run(events, POLICY)
    assert actions(outputs) == [("pass", ())]
    assert decisions(outputs)[0].ts == D + 630  # last observation window starts before d+600


def test_detectors_learn_only_healthy_windows_outside_the_bake() -> None:
    state = new_state(KIT)
    run(recording(BAD), POLICY, state=state)
    svc = state.services["search"]
    bake = [s for s in svc.ring if s.end > D and s.start < D + 600]
    assert bake and not any(s.learnable for s in bake)
    det = svc.models.window["error_rate"]
    assert det.n_learned == svc.ring.maxlen - 1  # the pre-deploy ring, nothing from the bake
    learned = det.to_state()["state"]["history"]["mean"]  # type: ignore[attr-defined]
    assert len(learned) == det.n_learned and max(learned) < 0.05  # no breaching window


def test_state_pickles_and_resumes_exactly() -> None:
    events = recording(STALE_THEN_BACK)
    whole = [o.model_dump_json() for o in run(events, POLICY)]
    state = new_state(KIT)
    half = len(events) // 2
    first = [o.model_dump_json() for o in run(events[:half], POLICY, state=state, flush=False)]
    clone = pickle.loads(pickle.dumps(state))  # a deep copy; the changelog codec has its own tests
    rest = [o.model_dump_json() for o in run(events[half:], POLICY, state=clone)]
    assert first + rest == whole


def test_same_input_same_output() -> None:
    events = recording(STALE_THEN_BACK)
    first = [o.model_dump_json() for o in run(events, POLICY)]
    assert first == [o.model_dump_json() for o in run(events, POLICY)]


def test_outputs_carry_the_policy_version() -> None:
    outputs = run(recording(BAD), POLICY)
    assert {o.policy_version for o in outputs if hasattr(o, "policy_version")} == {"test"}


def test_step_rejects_non_events() -> None:
    with pytest.raises(TypeError):
        step(new_state(KIT), object(), POLICY)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Anomaly-only episodes, traffic as context, completeness over the decision's span
# ---------------------------------------------------------------------------------------------


def _between(start: float, stop: float, bad: float, good: float) -> Any:
    return lambda t: bad if start <= t < stop else good


@pytest.mark.parametrize("factor", [0.5, 1.6])
def test_a_traffic_level_alone_is_no_anomaly(factor: float) -> None:
    # Traffic halves (not a drain: > 10 % of the baseline) or rises 60 % with the rollout;
    # errors and latency stay healthy. That is the load the service runs under, not the release.
    levels = {"request_rate": after(D + 30, 100.0 * factor, 100.0)}
    outputs = run(recording(levels), POLICY)
    assert actions(outputs) == [("pass", ())]
    evidence = decisions(outputs)[0].evidence
    assert evidence["bake"]["traffic_mean"]["request_rate"] > 0


def test_an_anomaly_alone_must_persist_before_it_pages() -> None:
    # p99 +60 %: no written threshold (2 x baseline) is crossed, the model departs.
    # Three anomalous windows (< anomaly_persist_windows = 4): a watch, then a pass.
    short = {"latency_p99_ms": _between(D + 60, D + 150, 320.0, 200.0)}
    got = actions(run(recording(short), POLICY))
    assert got[0] == ("watch", ("ANOMALY",)) and got[-1] == ("pass", ())
    assert not [a for a, _ in got if a == "request_approval"]


def test_a_persistent_anomaly_alone_names_the_missing_threshold() -> None:
    lasting = {"latency_p99_ms": after(D + 60, 320.0, 200.0)}
    outputs = run(recording(lasting), POLICY)
    got = actions(outputs)
    assert ("request_approval", ("ANOMALY", "BREACH_UNCONFIRMED")) in got
    assert "auto_rollback" not in [a for a, _ in got]
    asked = next(d for d in decisions(outputs) if d.action == "request_approval")
    # Windows start at D + 60: anomalous in [D+60, D+90) .. [D+150, D+180): the 4th closes
    # at D + 180.
    assert asked.ts == D + 180
    detail = asked.evidence["details"]["BREACH_UNCONFIRMED"]
    assert detail.startswith("model departure (score ") and "on latency_p99_ms" in detail
    assert "no written threshold crossed" in detail
    assert "windows" in asked.evidence["details"]["ANOMALY"]


def test_beside_a_breach_an_anomaly_is_named_after_the_breach_count() -> None:
    got = actions(run(recording(BAD), POLICY))
    assert got[-1] == ("auto_rollback", ("THRESHOLD_BREACH", "ANOMALY"))


def _lose(samples: list[Any], *times: float) -> list[Any]:
    """Drop every sample of ``search`` (one whole scrape) whose ts is in ``times``."""
    return [
        s
        for s in samples
        if not (getattr(s, "service", None) == "search" and s.type == "metric" and s.ts in times)
    ]


def test_one_lost_scrape_in_the_deciding_window_does_not_block_the_rollback() -> None:
    # Breach from D + 30: windows [D+30, D+60) and [D+60, D+90) decide at D + 90. The scrape at
    # D + 64 is lost: that window has 2 of 3 samples, the two deciding windows 5 of 6.
    events = _lose(recording(BAD), D + 64.0)
    outputs = run(events, POLICY)
    rolled = next(d for d in decisions(outputs) if d.action == "auto_rollback")
    assert rolled.ts == D + 90 and "TELEMETRY_INCOMPLETE" not in rolled.reasons
    quality = rolled.evidence["quality"]
    assert quality["coverage"]["error_rate"] == pytest.approx(2 / 3, rel=1e-5)
    span = quality["coverage_span"]["error_rate"]
    assert span["windows"] == 2 and span["samples"] == 5 and span["expected"] == 6
    assert not [a for a, _ in actions(outputs) if a == "request_approval"]


def test_two_lost_scrapes_over_the_deciding_windows_are_incomplete() -> None:
    events = _lose(recording(BAD), D + 34.0, D + 64.0)
    outputs = run(events, POLICY)
    first = next(d for d in decisions(outputs) if d.action != "watch")
    assert first.action == "request_approval" and "TELEMETRY_INCOMPLETE" in first.reasons
    detail = first.evidence["details"]["TELEMETRY_INCOMPLETE"]
    assert "over the last 2 windows (4 of 6 samples)" in detail


def test_advancing_an_engine_that_has_seen_nothing_decides_nothing() -> None:
    # A worker whose inputs are all empty still moves event time on (idle clock): that must
    # not fail before the first event (it raised ValueError from min() of nothing).
    state = new_state()
    assert advance(state, POLICY, 1_000.0) == []
    assert advance(state, POLICY, 2_000.0) == []
