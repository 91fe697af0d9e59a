"""ApprovalBook: output records → one view per request and its changes, in order per request."""

from __future__ import annotations

from typing import Any

import pytest

from rollguard.streams.approval_book import ApprovalBook
from rollguard.streams.approval_evidence import EXPLANATIONS, evidence_view, response_command
from rollguard.streams.notify_bodies import body_for
from rollguard.streams.notify_config import Webhook

T0 = 1_795_593_600.0


def request(rid: str = "apr-1", service: str = "payments", dep: str = "dep-1",
            **extra: Any) -> dict[str, Any]:
    return {"type": "approval_request", "request_id": rid, "deployment_id": dep,
            "service": service, "proposed_action": "rollback", "to_version": "v1",
            "reasons": [{"code": "THRESHOLD_BREACH", "detail": "error_rate 0.2 > 0.05"},
                        {"code": "POLICY_REQUIRES_APPROVAL", "detail": "auto_rollback false"}],
            "evidence": {"decided_at": T0, "deployment": {"version": "v2"},
                         "thresholds": {"error_rate": {"stat": "mean", "value": 0.2, "max": 0.05,
                                                       "baseline": 0.01, "ratio_limit": 0.03,
                                                       "max_ratio_to_baseline": 3.0,
                                                       "breach": True, "breach_windows": 3}},
                         "windows": [{"end": T0, "metrics": {"error_rate": {"mean": 0.2}}}]},
            "required_role": "sre-oncall", "expires_at": T0 + 1800, **extra}


def decision(reasons: list[str], dep: str = "dep-1", service: str = "payments", ts: float = T0,
             **evidence: Any) -> dict[str, Any]:
    return {"type": "decision", "deployment_id": dep, "service": service, "action": "none",
            "reasons": reasons, "ts": ts, "evidence": evidence, "policy_version": "p"}


APPROVAL = {"request_id": "apr-1", "approver": "user:alice", "decision": "approve"}


@pytest.mark.parametrize(("record", "state"), [
    # an approver's answer names the request in evidence.approval
    (decision(["APPROVED"], approval=APPROVAL), "approved"),
    (decision(["DENIED"], approval={**APPROVAL, "decision": "deny"}), "denied"),
    # expiry names the request directly
    (decision(["APPROVAL_EXPIRED"], request_id="apr-1"), "expired"),
    # superseded and withdrawn are found through (service, deployment)
    (decision(["THRESHOLD_BREACH", "APPROVAL_SUPERSEDED"]), "superseded"),
    (decision(["APPROVAL_WITHDRAWN"]), "withdrawn"),
    # an answer that did not count leaves the request pending
    (decision(["APPROVAL_REJECTED"], request_id="apr-1", approver="user:bob",
              cause="user:bob lacks role sre-oncall"), "rejected"),
])
def test_each_outcome_changes_the_request(record: dict[str, Any], state: str) -> None:
    book = ApprovalBook()
    assert [c.state for c in book.add(request(), T0)] == ["requested"]
    changes = book.add(record, T0 + 5)
    assert [c.state for c in changes] == [state]
    view = book.requests["apr-1"]
    assert view.state == ("requested" if state == "rejected" else state)
    assert view.pending(T0 + 10) is (state == "rejected")


def test_a_decision_read_before_its_request_waits_for_it() -> None:
    book = ApprovalBook()
    assert book.add(decision(["APPROVAL_WITHDRAWN"]), T0) == []
    changes = book.add(request(), T0)
    assert [c.state for c in changes] == ["requested", "withdrawn"]


def test_nothing_changes_a_closed_request_but_rejections_are_told() -> None:
    book = ApprovalBook()
    book.add(request(), T0)
    book.add(decision(["DENIED"], approval={**APPROVAL, "decision": "deny"}), T0)
    assert book.add(decision(["APPROVAL_EXPIRED"], request_id="apr-1"), T0) == []
    late = book.add(decision(["APPROVAL_REJECTED"], request_id="apr-1", approver="user:alice",
                             cause="request already denied", ts=T0 + 9), T0)
    assert [(c.state, c.detail) for c in late] == [("rejected", "request already denied")]
    assert late[0].idempotency_key == f"apr-1/rejected/user:alice/{T0 + 9:.3f}"
    assert book.requests["apr-1"].state == "denied"


def test_a_re_emitted_request_is_the_same_request() -> None:
    book = ApprovalBook()
    book.add(request(), T0)
    assert book.add(request(), T0 + 1) == []
    assert [v.request_id for v in book.pending(T0)] == ["apr-1"]
    assert book.pending(T0 + 1801) == []  # past its expiry


def test_history_keeps_each_services_decisions() -> None:
    book = ApprovalBook()
    book.add(decision(["THRESHOLD_BREACH"], service="a"), T0)
    book.add(decision([], service="b"), T0)
    assert [len(book.history[s]) for s in ("a", "b")] == [1, 1]


def test_evidence_view_explains_every_reason_and_names_the_numbers() -> None:
    shown = evidence_view(request())
    assert [code for code, _, _ in shown.reasons] == ["THRESHOLD_BREACH",
                                                      "POLICY_REQUIRES_APPROVAL"]
    assert all(words for _, _, words in shown.reasons)
    assert shown.thresholds[0][:5] == ["error_rate", "mean", "0.2", "0.05", "0.01"]
    assert "BREACH" in shown.thresholds[0]
    assert "rollguard approve apr-1 --service payments" in response_command(request(), "approve")


def test_every_reason_code_has_words() -> None:
    from rollguard.models.events import ReasonCode

    assert {c.value for c in ReasonCode} <= set(EXPLANATIONS)


HOOK = {"name": "h", "url": "http://127.0.0.1:1/x"}


@pytest.mark.parametrize(("hook", "told"), [
    ({}, True),                                   # no filter: every request
    ({"services": ["payments"]}, True),           # its service
    ({"services": ["checkout"]}, False),          # another service
    ({"roles": ["sre-oncall"]}, True),            # its role
    ({"services": ["checkout"], "roles": ["dba"]}, False),
])
def test_webhooks_are_chosen_by_service_or_role(hook: dict[str, Any], told: bool) -> None:
    change = ApprovalBook().add(request(), T0)[0]
    assert (body_for(change, Webhook(**HOOK, **hook)) is not None) is told


def test_bodies_carry_the_idempotency_key() -> None:
    book = ApprovalBook()
    raised = book.add(request(), T0)[0]
    closed = book.add(decision(["APPROVAL_WITHDRAWN"]), T0)[0]
    generic = body_for(raised, Webhook(**HOOK), "http://console")
    assert generic is not None and generic["idempotency_key"] == "apr-1/requested"
    assert generic["console"] == "http://console/requests/apr-1"
    slack = body_for(closed, Webhook(**HOOK, format="slack"))
    assert slack is not None and "apr-1/withdrawn" in str(slack["blocks"])
    pager = Webhook(**HOOK, format="pagerduty", routing_key="R")
    trigger, resolve = body_for(raised, pager), body_for(closed, pager)
    assert trigger is not None and resolve is not None
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == "apr-1"
    rejected = book.add(decision(["APPROVAL_REJECTED"], request_id="apr-1", approver="x",
                                 cause="unknown approver x"), T0)[0]
    assert body_for(rejected, pager) is None  # a rejected answer does not touch the incident


def test_the_clock_expires_a_request_nobody_closed_and_the_worker_still_has_the_last_word(
        ) -> None:
    book = ApprovalBook()
    book.add(request(), T0)
    assert book.expire(T0 + 1800 + 29) == []  # within the grace
    expired = book.expire(T0 + 1800 + 30)
    assert [(c.state, c.idempotency_key, c.ts) for c in expired] == [
        ("expired", "apr-1/expired", T0 + 1800)]
    assert book.expire(T0 + 9999) == []  # once
    # the worker's own expiry is the same change: nothing new
    assert book.add(decision(["APPROVAL_EXPIRED"], request_id="apr-1"), T0) == []
    # an answer signed before the expiry and counted by the worker still comes out
    late = book.add(decision(["APPROVED"], approval=APPROVAL), T0)
    assert [c.state for c in late] == ["approved"]
    assert book.requests["apr-1"].state == "approved"
