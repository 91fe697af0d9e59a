"""What rollguard does: rulings and control events turned into output records and state.

``carry_out`` turns a ``Ruling`` of ``decide`` into the records of DESIGN §3 (a Decision, and
the command, approval request and verdict it implies) and the state changes that go with it.
``apply_control`` applies deploy events (open, close, replace a deployment), approval responses
(checked against DESIGN §6) and request expiries, at their event time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollguard.models.decide import DeploymentFacts, Ruling, Stage
from rollguard.models.events import (
    ApprovalResponse,
    CoreOutput,
    DecisionAction,
    DeployEvent,
    DeployStatus,
    ReasonCode,
)
from rollguard.models.policy import Policy
from rollguard.models.records import At, approval_request, decision, rollback_command, verdict
from rollguard.models.state import (
    ApprovalCheck,
    ApprovalControl,
    Batch,
    Control,
    DeployControl,
    EngineState,
    ExpiryControl,
    RequestRecord,
    RequestStatus,
    ServiceState,
    close_deployment,
    decision_evidence,
    record_rollback,
    schedule,
    take_late_events,
    watermark,
)
from rollguard.models.trial import Deployment
from rollguard.models.windows import window_index

__all__ = ["apply_control", "carry_out"]


def carry_out(
    state: EngineState,
    policy: Policy,
    svc: ServiceState,
    dep: Deployment,
    ruling: Ruling,
    ts: float,
    trial_evidence: dict[str, Any],
    batch: Batch,
) -> None:
    """Turn a ruling into output records and the state changes it implies."""
    details = {code.value: text for code, text in ruling.details.items()}
    evidence = decision_evidence(
        dep.facts,
        ts,
        take_late_events(svc),
        trial_evidence,
        dict(ruling.evidence),
        {"details": details},
    )
    act = _Act(state, policy, svc, dep, ruling, ts, evidence, batch.out)
    match ruling.action:
        case "watch":
            act.record("watch")
            dep.stage = Stage.WATCHING
        case "auto_rollback":
            _roll_back(act)
        case "request_approval":
            _request_approval(act)
        case "pass":
            act.record("pass")
            act.out.append(verdict(dep.facts, "pass", ts, ruling.reasons))
            close_deployment(svc, dep)
        case "withdraw":
            # DESIGN §3 has no "withdraw" action: a withdrawal is a Decision with action
            # "none" and reason APPROVAL_WITHDRAWN, and an inconclusive verdict.
            act.record("none")
            act.out.append(verdict(dep.facts, "inconclusive", ts, ruling.reasons))
            _settle(state, dep, RequestStatus.WITHDRAWN)
            close_deployment(svc, dep)


@dataclass(frozen=True, slots=True)
class _Act:
    """One ruling being carried out: where its records go and what they say."""

    state: EngineState
    policy: Policy
    svc: ServiceState
    dep: Deployment
    ruling: Ruling
    ts: float
    evidence: dict[str, Any]
    out: list[CoreOutput]

    def record(self, action: DecisionAction) -> None:
        """Emit the Decision of this ruling with ``action``."""
        self.out.append(
            decision(
                self.dep.facts, self.svc.name, action, self.ruling.reasons, self.ts,
                self.evidence, self.policy.version,
            )
        )


def _settle(state: EngineState, dep: Deployment, status: RequestStatus) -> None:
    """Mark the deployment's request (if any) with what became of it."""
    if dep.request_id is not None:
        state.fleet.requests[dep.request_id].status = status


def _roll_back(act: _Act) -> None:
    ruling, facts = act.ruling, act.dep.facts
    assert ruling.authority is not None
    act.evidence["authority"] = ruling.authority
    sp = act.policy.for_service(act.svc.name)
    act.record("auto_rollback")
    act.out.append(
        rollback_command(
            facts, ruling.authority, ruling.reasons, act.ts, act.evidence, sp, act.policy.version
        )
    )
    act.out.append(verdict(facts, "rolled_back", act.ts, ruling.reasons))
    # The budget already counts it: every engine resolved its claim (models.ledger).
    _settle(act.state, act.dep, RequestStatus.SUPERSEDED)
    close_deployment(act.svc, act.dep)
    act.svc.suspect = True


def _request_approval(act: _Act) -> None:
    ruling, dep, facts, ts = act.ruling, act.dep, act.dep.facts, act.ts
    sp = act.policy.for_service(act.svc.name)
    request = approval_request(facts, ruling, ts, act.evidence, sp, act.policy.version)
    act.record("request_approval")
    act.out.append(request)
    outcome = ruling.verdict or "pending_approval"
    act.out.append(verdict(facts, outcome, ts, ruling.reasons))
    dep.stage = Stage.INCONCLUSIVE if outcome == "inconclusive" else Stage.PENDING
    dep.request_id = request.request_id
    dep.request_reasons = tuple(c.value for c in ruling.reasons)
    act.state.fleet.requests[request.request_id] = RequestRecord(
        request_id=request.request_id,
        deployment_id=facts.deployment_id,
        service=act.svc.name,
        expires_at=request.expires_at,
        required_role=request.required_role,
        deploy_actor=facts.actor,
    )
    schedule(act.state, act.svc, request.expires_at, ExpiryControl(request.request_id))


def apply_control(state: EngineState, policy: Policy, control: Control, batch: Batch) -> None:
    """Apply one control event from the timeline: a deploy, an approval response, an expiry."""
    match control:
        case DeployControl(event=event):
            _apply_deploy(state, policy, event, batch)
        case ApprovalControl(response=response, check=check):
            _apply_approval(state, policy, response, check, batch)
        case ExpiryControl(request_id=rid):
            _apply_expiry(state, policy, rid, batch)


def _apply_deploy(state: EngineState, policy: Policy, event: DeployEvent, batch: Batch) -> None:
    svc = state.services[event.service]
    dep = svc.deployment
    ident = event.deployment_id
    ending = event.status in (DeployStatus.ABORTED, DeployStatus.ROLLED_BACK)
    if dep is not None and dep.facts.deployment_id == ident:
        if ending:
            # The deployment is over; nothing more is decided about it (DESIGN: no decisions).
            _settle(state, dep, RequestStatus.CLOSED)
            close_deployment(svc, dep)
            svc.suspect = False
        return
    if ending or ident in svc.closed_deployments:
        # A rollback (or abort) landing: the release judged bad no longer runs.
        svc.suspect = svc.suspect and not (ending and ident in svc.closed_deployments)
        return
    svc.suspect = False
    if dep is not None:
        reasons: tuple[ReasonCode, ...] = ()
        if dep.request_id is not None:
            _settle(state, dep, RequestStatus.WITHDRAWN)
            reasons = (ReasonCode.APPROVAL_WITHDRAWN,)
        evidence = decision_evidence(
            dep.facts,
            event.ts,
            take_late_events(svc),
            {"closed_by": {"deployment_id": ident, "status": event.status.value}},
        )
        batch.out.append(
            decision(dep.facts, svc.name, "none", reasons, event.ts, evidence, policy.version)
        )
        close_deployment(svc, dep)
    sp = policy.for_service(svc.name)
    facts = DeploymentFacts(
        deployment_id=ident,
        service=event.service,
        version=event.version,
        rollback_target=event.rollback_target,
        actor=event.actor,
        deployed_at=event.ts,
        change=event.change,
    )
    dep = svc.deployment = Deployment.open(facts, sp)
    svc.trial_from = max(svc.trial_from, facts.deployed_at)
    svc.trial_until = max(svc.trial_until, dep.bake_until)
    straddle = window_index(facts.deployed_at, svc.width)
    svc.next_k = straddle if svc.next_k is None else max(svc.next_k, straddle)
    limit = window_index(watermark(state.fleet, svc.lateness), svc.width)
    for k in range(svc.next_k, limit):
        batch.close(svc, k)


def _reject(
    state: EngineState,
    policy: Policy,
    response: ApprovalResponse,
    service: str,
    cause: str,
    batch: Batch,
) -> None:
    svc = state.services.get(service)
    evidence = {
        "request_id": response.request_id,
        "approver": response.approver,
        "decision": response.decision,
        "cause": cause,
        "comment": response.comment,
        "signed_at": At(response.ts),
        "late_events": take_late_events(svc) if svc is not None else 0,
    }
    record = state.fleet.requests.get(response.request_id)
    batch.out.append(
        decision(
            None,
            service,
            "none",
            (ReasonCode.APPROVAL_REJECTED,),
            response.arrival,
            evidence,
            policy.version,
            deployment_id=record.deployment_id if record is not None else None,
        )
    )


def _approval_problem(
    record: RequestRecord | None,
    dep: Deployment | None,
    response: ApprovalResponse,
    check: ApprovalCheck | None,
) -> str | None:
    """Why an approval response does not count (DESIGN §6), or None if it does."""
    if record is None:
        return "no such approval request"
    if record.status is not RequestStatus.PENDING:
        return f"request already {record.status}"
    if dep is None or dep.facts.deployment_id != record.deployment_id:
        return "the deployment is no longer open"
    if response.service is not None and response.service != record.service:
        return f"the request is of service {record.service}, not {response.service}"
    if check is None:
        return "signature missing or invalid (the response was not verified)"
    if not check.approver_known:
        return f"unknown approver {response.approver}"
    if not check.signature_valid:
        return "signature missing or invalid"
    if record.required_role not in check.approver_roles:
        return f"{response.approver} lacks role {record.required_role}"
    if response.approver == record.deploy_actor:
        return f"self-approval: {response.approver} deployed this release"
    skew = abs(response.ts - response.arrival)
    limit = check.max_clock_skew_seconds
    if limit is not None and skew > limit:
        return f"signed ts is {skew:.0f} s from its arrival (max_clock_skew_seconds={limit:g})"
    if response.arrival > record.expires_at:
        return "the request had expired when the response arrived"
    return None


def _apply_approval(
    state: EngineState,
    policy: Policy,
    response: ApprovalResponse,
    check: ApprovalCheck | None,
    batch: Batch,
) -> None:
    record = state.fleet.requests.get(response.request_id)
    service = record.service if record is not None else (response.service or "unknown")
    svc = state.services.get(service)
    dep = svc.deployment if svc is not None else None
    problem = _approval_problem(record, dep, response, check)
    if problem is not None:
        _reject(state, policy, response, service, problem, batch)
        return
    assert record is not None and svc is not None and dep is not None
    sp = policy.for_service(service)
    facts = dep.facts
    ts = response.arrival
    answer = {
        "request_id": record.request_id,
        "approver": response.approver,
        "decision": response.decision,
        "signed_at": At(response.ts),
        "comment": response.comment,
        "request_reasons": list(dep.request_reasons),
    }
    evidence = decision_evidence(facts, ts, take_late_events(svc), {"approval": answer})
    version = policy.version
    out = batch.out
    if response.decision == "deny":
        record.status = RequestStatus.DENIED
        reasons: tuple[ReasonCode, ...] = (ReasonCode.DENIED,)
        out.append(decision(facts, service, "none", reasons, ts, evidence, version))
        out.append(verdict(facts, "pass", ts, reasons))
        close_deployment(svc, dep)
        return
    record.status = RequestStatus.APPROVED
    if facts.rollback_target is None:
        reasons = (ReasonCode.NO_ROLLBACK_TARGET, ReasonCode.APPROVED)
        out.append(decision(facts, service, "none", reasons, ts, evidence, version))
        out.append(verdict(facts, "inconclusive", ts, reasons))
        close_deployment(svc, dep)
        return
    authority = f"approved:{response.approver}"
    evidence["authority"] = authority
    reasons = (ReasonCode.APPROVED,)
    out.append(decision(facts, service, "auto_rollback", reasons, ts, evidence, version))
    out.append(rollback_command(facts, authority, reasons, ts, evidence, sp, version))
    out.append(verdict(facts, "rolled_back", ts, reasons))
    record_rollback(state, ts, service)
    close_deployment(svc, dep)
    svc.suspect = True


def _apply_expiry(state: EngineState, policy: Policy, rid: str, batch: Batch) -> None:
    record = state.fleet.requests.get(rid)
    if record is None or record.status is not RequestStatus.PENDING:
        return
    record.status = RequestStatus.EXPIRED
    svc = state.services[record.service]
    dep = svc.deployment
    if dep is None or dep.facts.deployment_id != record.deployment_id:
        return
    ts = record.expires_at
    reasons = (ReasonCode.APPROVAL_EXPIRED,)
    evidence = decision_evidence(
        dep.facts, ts, take_late_events(svc), {"request_id": rid, "expired_at": At(ts)}
    )
    batch.out.append(decision(dep.facts, svc.name, "none", reasons, ts, evidence, policy.version))
    batch.out.append(verdict(dep.facts, "inconclusive", ts, reasons))
    # Nobody answered whether the release that raised the triggers is bad: not learned.
    svc.suspect = dep.stage is Stage.PENDING
    close_deployment(svc, dep)
