"""What a webhook receives for one approval change: generic JSON, Slack, PagerDuty Events v2.

Every body carries the idempotency key (``request id/state``), also sent as the
``Idempotency-Key`` header, so a retried post is recognisably the same post. PagerDuty gets a
``trigger`` when a request is raised and a ``resolve`` when it closes (``dedup_key`` = request
id); a rejected answer does not change the incident, so PagerDuty is not told of it.
"""

from __future__ import annotations

from typing import Any

from rollguard.streams.approval_book import TERMINAL, ApprovalChange
from rollguard.streams.approval_evidence import explain
from rollguard.streams.notify_config import Webhook

__all__ = ["body_for"]

_TITLES = {
    "requested": "Rollback needs approval",
    "approved": "Rollback approved",
    "denied": "Rollback denied",
    "superseded": "Approval superseded: rolled back automatically",
    "withdrawn": "Approval request withdrawn",
    "expired": "Approval request expired",
    "rejected": "Approval answer rejected",
}


def _summary(change: ApprovalChange) -> str:
    request = change.request
    who = f" by {change.approver}" if change.approver else ""
    return (f"{_TITLES[change.state]}{who}: {request.get('service')} "
            f"{request.get('deployment_id')} → {request.get('to_version') or 'no target'} "
            f"({change.request_id})")


def generic_body(change: ApprovalChange, console_url: str | None) -> dict[str, Any]:
    request = change.request
    return {
        "idempotency_key": change.idempotency_key,
        "request_id": change.request_id,
        "state": change.state,
        "closed": change.state in TERMINAL,
        "service": request.get("service"),
        "deployment_id": request.get("deployment_id"),
        "to_version": request.get("to_version"),
        "required_role": request.get("required_role"),
        "expires_at": request.get("expires_at"),
        "reasons": request.get("reasons", []),
        "runbook": request.get("runbook"),
        "approver": change.approver,
        "detail": change.detail,
        "ts": change.ts,
        "summary": _summary(change),
        "console": _link(change, console_url),
    }


def slack_body(change: ApprovalChange, console_url: str | None) -> dict[str, Any]:
    request = change.request
    lines = [f"*{_summary(change)}*"]
    if change.state == "requested":
        lines += [f"• `{r.get('code')}` {r.get('detail', '')} — _{explain(str(r.get('code')))}_"
                  for r in request.get("reasons", [])]
        lines.append(f"Needs role `{request.get('required_role')}`; expires "
                     f"{request.get('expires_at')}.")
    else:
        lines.append(change.detail)
    link = _link(change, console_url)
    if link:
        lines.append(f"<{link}|Review in the rollguard console>")
    text = "\n".join(lines)
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"idempotency key `{change.idempotency_key}`"}]},
        ],
        "metadata": {"event_type": "rollguard_approval",
                     "event_payload": {"idempotency_key": change.idempotency_key,
                                       "request_id": change.request_id,
                                       "state": change.state}},
    }


def pagerduty_body(change: ApprovalChange, webhook: Webhook,
                   console_url: str | None) -> dict[str, Any] | None:
    if change.state == "requested":
        request = change.request
        body: dict[str, Any] = {
            "routing_key": webhook.routing_key, "event_action": "trigger",
            "dedup_key": change.request_id,
            "payload": {
                "summary": _summary(change)[:1024], "source": "rollguard",
                "severity": "critical", "component": request.get("service"),
                "group": request.get("required_role"), "class": "rollback-approval",
                "custom_details": {
                    "idempotency_key": change.idempotency_key,
                    "reasons": [r.get("code") for r in request.get("reasons", [])],
                    "deployment_id": request.get("deployment_id"),
                    "expires_at": request.get("expires_at"),
                },
            },
        }
        link = _link(change, console_url)
        if link:
            body["links"] = [{"href": link, "text": "rollguard console"}]
        return body
    if change.state in TERMINAL:
        return {"routing_key": webhook.routing_key, "event_action": "resolve",
                "dedup_key": change.request_id,
                "payload": {"summary": _summary(change)[:1024], "source": "rollguard",
                            "severity": "info",
                            "custom_details": {"idempotency_key": change.idempotency_key,
                                               "state": change.state}}}
    return None


def body_for(change: ApprovalChange, webhook: Webhook,
             console_url: str | None = None) -> dict[str, Any] | None:
    """The body ``webhook`` gets for ``change``; None when it is not told of this change."""
    if not webhook.wants(change.request):
        return None
    if webhook.format == "slack":
        return slack_body(change, console_url)
    if webhook.format == "pagerduty":
        return pagerduty_body(change, webhook, console_url)
    return generic_body(change, console_url)


def _link(change: ApprovalChange, console_url: str | None) -> str | None:
    if not console_url:
        return None
    return f"{console_url.rstrip('/')}/requests/{change.request_id}"
