"""Output records of DESIGN §3 as rollguard emits them: stable ids, rounded, ordered evidence.

Every float in evidence is rounded to 6 significant digits and every mapping is emitted with its
keys in a fixed order, so that the same input gives byte-identical output.

>>> command_id("checkout", "dep-42")
'cmd-ec281ebdde41dd56'
>>> rounded({"b": 0.1234567891, "a": [1.0 / 3.0, None, float("inf")]})
{'b': 0.123457, 'a': [0.333333, None, None]}
>>> rounded({"at": At(1795593630.25)})
{'at': '2026-11-25T08:00:30.250Z'}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rollguard.models.decide import DeploymentFacts, Ruling
from rollguard.models.events import (
    ApprovalRequest,
    Decision,
    DecisionAction,
    Reason,
    ReasonCode,
    ReleaseVerdict,
    RollbackCommand,
    VerdictOutcome,
    format_ts,
    stable_id,
)
from rollguard.models.policy import ServicePolicy

__all__ = [
    "ISSUER",
    "At",
    "approval_request",
    "command_id",
    "decision",
    "deployment_evidence",
    "request_id",
    "rollback_command",
    "rounded",
    "verdict",
]

ISSUER = "svc:rollguard"


def command_id(service: str, deployment_id: str) -> str:
    """The one command id a deployment (of this service) can ever have."""
    return stable_id("cmd", service, deployment_id)


def request_id(service: str, deployment_id: str) -> str:
    """The one approval request id a deployment (of this service) can ever have."""
    return stable_id("apr", service, deployment_id)


class At(float):
    """An event time in evidence: written as RFC 3339, like every time rollguard emits (a
    plain float would lose its seconds to the 6-significant-digit rounding)."""

    __slots__ = ()


def rounded(value: Any) -> Any:
    """Evidence made stable: floats to 6 significant digits (non-finite -> None), ``At`` times
    as RFC 3339, keys in the order given (callers sort where order carries no meaning), tuples
    and sets as lists."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, At):
        return format_ts(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.6g}")
    if isinstance(value, Mapping):
        return {str(k): rounded(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return [rounded(v) for v in sorted(value)]
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return str(value)


def deployment_evidence(facts: DeploymentFacts) -> dict[str, Any]:
    """The deploy event's facts that a decision depends on."""
    change = facts.change
    return {
        "deployment_id": facts.deployment_id,
        "version": facts.version,
        "rollback_target": facts.rollback_target,
        "actor": facts.actor,
        "deployed_at": At(facts.deployed_at),
        "change": {
            "data_writes": change.data_writes,
            "schema_migration": change.schema_migration,
            "credential_rotation": change.credential_rotation,
            "session_invalidation": change.session_invalidation,
            "cross_domain_secrets": change.cross_domain_secrets,
            "shared_infra": sorted(change.shared_infra),
        },
    }


def _codes(reasons: tuple[ReasonCode, ...]) -> tuple[str, ...]:
    return tuple(code.value for code in reasons)


def decision(
    facts: DeploymentFacts | None,
    service: str,
    action: DecisionAction,
    reasons: tuple[ReasonCode, ...],
    ts: float,
    evidence: Mapping[str, Any],
    policy_version: str,
    *,
    deployment_id: str | None = None,
) -> Decision:
    """An audit record of one decision (``deployment_id``: when there are no ``facts``)."""
    return Decision(
        deployment_id=facts.deployment_id if facts is not None else deployment_id,
        service=service,
        action=action,
        reasons=_codes(reasons),
        ts=ts,
        evidence=rounded(evidence),
        policy_version=policy_version,
    )


def rollback_command(
    facts: DeploymentFacts,
    authority: str,
    reasons: tuple[ReasonCode, ...],
    ts: float,
    evidence: Mapping[str, Any],
    policy: ServicePolicy,
    policy_version: str,
) -> RollbackCommand:
    """The (unsigned) rollback command of a deployment; the shell signs it."""
    assert facts.rollback_target is not None
    return RollbackCommand(
        command_id=command_id(facts.service, facts.deployment_id),
        deployment_id=facts.deployment_id,
        service=facts.service,
        from_version=facts.version,
        to_version=facts.rollback_target,
        authority=authority,
        issued_by=ISSUER,
        issued_at=ts,
        expires_at=ts + policy.command_ttl_seconds,
        reasons=_codes(reasons),
        evidence=rounded(evidence),
        policy_version=policy_version,
        signature="",
    )


def approval_request(
    facts: DeploymentFacts,
    ruling: Ruling,
    ts: float,
    evidence: Mapping[str, Any],
    policy: ServicePolicy,
    policy_version: str,
) -> ApprovalRequest:
    """The approval request of a deployment, naming every reason with its numbers."""
    return ApprovalRequest(
        request_id=request_id(facts.service, facts.deployment_id),
        deployment_id=facts.deployment_id,
        service=facts.service,
        to_version=facts.rollback_target,
        reasons=tuple(Reason(code=c, detail=ruling.details.get(c, "")) for c in ruling.reasons),
        evidence=rounded(evidence),
        required_role=policy.required_role,
        expires_at=ts + policy.approval_ttl_seconds,
        runbook=policy.runbook,
        deploy_actor=facts.actor,
        policy_version=policy_version,
    )


def verdict(
    facts: DeploymentFacts, outcome: VerdictOutcome, ts: float, reasons: tuple[ReasonCode, ...]
) -> ReleaseVerdict:
    """The release verdict of a deployment."""
    return ReleaseVerdict(
        deployment_id=facts.deployment_id,
        service=facts.service,
        verdict=outcome,
        ts=ts,
        reasons=_codes(reasons),
    )
