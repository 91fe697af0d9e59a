"""What the console's backend checks before it publishes an answer signed in a browser.

First, the request answered must be one the gate signed (verified with the gate's keyring, as
``rollguard approve`` does): a forged request is never answerable. Then the same rules as the
worker (DESIGN §6), checked early so that the approver sees a refusal at
once: the body is an ApprovalResponse, its request is pending, the approver is known and holds
the request's role, is not the deploy actor, the signature verifies over the canonical JSON
(``streams.approvers.approval_check`` — the worker's own check) and the signed time is close to
now. The worker checks everything again when the response arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from rollguard.models.events import ApprovalResponse
from rollguard.streams.approval_book import ApprovalBook
from rollguard.streams.approvers import ApproverDirectory, approval_check

__all__ = ["Accepted", "Refused", "check_answer"]


@dataclass(frozen=True)
class Accepted:
    data: dict[str, Any]
    service: str


@dataclass(frozen=True)
class Refused:
    status: int
    reason: str


def check_answer(raw: bytes, book: ApprovalBook, directory: ApproverDirectory, now: float,
                 max_skew_seconds: float) -> Accepted | Refused:
    """Accept ``raw`` for publishing, or say why not (HTTP status and reason)."""
    try:
        data = orjson.loads(raw)
        response = ApprovalResponse.model_validate(data)
    except orjson.JSONDecodeError:
        return Refused(400, "the body is not JSON")
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        return Refused(400, f"not an approval response: {field}: {first['msg']}")
    if not isinstance(data, dict):
        return Refused(400, "the body is not a JSON object")
    view = book.requests.get(response.request_id)
    refusal = book.refused.get(response.request_id)
    if view is None and refusal is not None:
        return Refused(403, f"refusing to answer {response.request_id}: the request cannot be "
                            f"verified ({refusal.reason})")
    if view is None:
        return Refused(404, f"no approval request {response.request_id}")
    problem = book.problem(view.request, now)
    if problem is not None:
        return Refused(403, f"refusing to answer {response.request_id}: the request cannot be "
                            f"verified now ({problem})")
    if not view.pending(now):
        state = view.state if view.state != "requested" else "expired"
        return Refused(409, f"request {response.request_id} is already {state}")
    if response.service != view.service:
        return Refused(400, f"the response names service {response.service!r}, the request "
                            f"is for {view.service!r}")
    check = approval_check(raw, response, directory)
    if not check.approver_known:
        return Refused(403, f"unknown approver {response.approver}")
    if not check.signature_valid:
        return Refused(403, f"the signature does not verify with {response.approver}'s key")
    role = str(view.request.get("required_role", ""))
    if role not in check.approver_roles:
        return Refused(403, f"{response.approver} lacks role {role}")
    if response.approver == view.request.get("deploy_actor"):
        return Refused(403, f"self-approval: {response.approver} deployed this release")
    if abs(response.ts - now) > max_skew_seconds:
        return Refused(400, f"the signed time is {response.ts - now:+.0f} s from the server's "
                            "clock; check the browser's clock")
    return Accepted(data, view.service)
