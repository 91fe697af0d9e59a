"""Approval requests and what became of them, folded from the worker's output records.

The worker publishes a request on ``rollback.approvals`` and every later change to it as a
Decision on ``rollguard.decisions`` (reason codes of DESIGN §4: ``APPROVED``, ``DENIED``,
``APPROVAL_SUPERSEDED``, ``APPROVAL_WITHDRAWN``, ``APPROVAL_EXPIRED``, ``APPROVAL_REJECTED``).
``ApprovalBook.add`` folds those records, in the order a consumer reads them, into one view per
request and returns the changes each record made. The two topics are read side by side, so a
decision may be read before the request it closes: such a change waits until its request is
read, and changes are always returned in order per request (``requested`` first).

A book given the gate's keyring (``notify`` and ``console`` always give one) takes only
requests signed by a key of it (docs/security.md): any other record on the approvals topic —
unsigned, signed by a foreign key, tampered — is kept apart in ``refused`` with the reason and
counted, never becomes a request a human is asked about, and changes nothing.

Used by ``rollguard notify``, ``rollguard approvals`` and ``rollguard console``.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from rollguard.models.events import parse_ts
from rollguard.streams.keyring import Keyring

__all__ = ["ApprovalBook", "ApprovalChange", "RefusedRequest", "RequestView", "State",
           "TERMINAL"]

log = logging.getLogger("rollguard.approvals")

State = Literal["requested", "approved", "denied", "superseded", "withdrawn", "expired",
                "rejected"]
TERMINAL: frozenset[str] = frozenset(
    {"approved", "denied", "superseded", "withdrawn", "expired"})

# Outcome reason code → the state it puts a request in; the first present wins.
_OUTCOMES: tuple[tuple[str, State], ...] = (
    ("APPROVAL_REJECTED", "rejected"),
    ("APPROVED", "approved"),
    ("DENIED", "denied"),
    ("APPROVAL_SUPERSEDED", "superseded"),
    ("APPROVAL_WITHDRAWN", "withdrawn"),
    ("APPROVAL_EXPIRED", "expired"),
)
_HISTORY = 200
_REFUSED_KEPT = 500


@dataclass(frozen=True)
class ApprovalChange:
    """One state of one request: its creation or a change announced by a decision."""

    request_id: str
    state: State
    request: dict[str, Any]
    decision: dict[str, Any] | None = None
    ts: float = 0.0
    """Event time of the change (the decision's ``ts``; the request's decision time)."""

    @property
    def service(self) -> str:
        return str(self.request.get("service", ""))

    @property
    def approver(self) -> str | None:
        evidence = (self.decision or {}).get("evidence") or {}
        found = (evidence.get("approval") or {}).get("approver") or evidence.get("approver")
        return str(found) if found else None

    @property
    def detail(self) -> str:
        """Why, in the worker's words."""
        if self.decision is None and self.state == "expired":
            return "nobody answered before the request expired (seen by the clock; no record " \
                   "from the worker closed it)"
        if self.decision is None:
            return "; ".join(str(r.get("detail") or r.get("code")) for r in
                             self.request.get("reasons", []))
        evidence = self.decision.get("evidence") or {}
        if self.state == "rejected":
            return str(evidence.get("cause", ""))
        details = evidence.get("details") or {}
        for code, state in _OUTCOMES:
            if state == self.state and code in details:
                return str(details[code])
        comment = (evidence.get("approval") or {}).get("comment")
        return str(comment or ", ".join(self.decision.get("reasons", [])))

    @property
    def idempotency_key(self) -> str:
        """``request id/state``; a rejected answer also names who answered and when."""
        key = f"{self.request_id}/{self.state}"
        if self.state == "rejected":
            key += f"/{self.approver or '?'}/{self.ts:.3f}"
        return key


@dataclass
class RequestView:
    """One approval request, its current state and every change so far."""

    request: dict[str, Any]
    seen_at: float
    """When the request was published (Kafka timestamp, epoch seconds)."""
    state: State = "requested"
    changes: list[ApprovalChange] = field(default_factory=list)
    expired_by_clock: bool = False
    """Closed by ``ApprovalBook.expire``; a later outcome from the worker still counts."""

    @property
    def request_id(self) -> str:
        return str(self.request["request_id"])

    @property
    def service(self) -> str:
        return str(self.request.get("service", ""))

    @property
    def expires_at(self) -> float:
        return parse_ts(self.request["expires_at"])

    def pending(self, now: float) -> bool:
        """Not decided and not past its expiry."""
        return self.state not in TERMINAL and self.expires_at > now


@dataclass(frozen=True)
class RefusedRequest:
    """A record on the approvals topic that does not verify against the gate's keyring."""

    request: dict[str, Any]
    reason: str
    seen_at: float

    @property
    def request_id(self) -> str:
        return str(self.request.get("request_id", ""))

    @property
    def service(self) -> str:
        return str(self.request.get("service", ""))


def _outcome(decision: dict[str, Any]) -> State | None:
    reasons = set(decision.get("reasons") or ())
    return next((state for code, state in _OUTCOMES if code in reasons), None)


def _named_request(decision: dict[str, Any]) -> str | None:
    evidence = decision.get("evidence") or {}
    named = (evidence.get("approval") or {}).get("request_id") or evidence.get("request_id")
    return str(named) if named else None


@dataclass
class ApprovalBook:
    """Every approval request read so far, and each service's recent decisions."""

    requests: dict[str, RequestView] = field(default_factory=dict)
    history: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    _by_deployment: dict[tuple[str, str], str] = field(default_factory=dict)
    _waiting: dict[str | tuple[str, str], list[tuple[State, dict[str, Any]]]] = field(
        default_factory=dict)
    keyring: Keyring | None = None
    """The gate's keys; None (``approvals`` without a key) takes every request unverified."""
    refused: dict[str, RefusedRequest] = field(default_factory=dict)
    """The latest refused record per request id (the last 500 ids)."""
    refused_total: int = 0
    """Records refused since the book was made."""

    def add(self, record: dict[str, Any], seen_at: float = 0.0) -> list[ApprovalChange]:
        """Fold one output record; return the changes it made, in order."""
        kind = record.get("type")
        if kind == "approval_request":
            return self._add_request(record, seen_at)
        if kind == "decision":
            service = str(record.get("service", ""))
            self.history.setdefault(service, deque(maxlen=_HISTORY)).append(record)
            return self._add_decision(record)
        return []

    def expire(self, now: float, grace_seconds: float = 30.0) -> list[ApprovalChange]:
        """Close, as ``expired``, the open requests whose expiry passed ``grace_seconds`` ago.

        The worker announces an expiry only while the deployment is open; a request whose
        deployment ended (aborted, rolled back) closes with no record, and without this a
        pager would never be resolved. The grace leaves the worker time to say otherwise;
        if it still does (an answer signed just before the expiry), that outcome follows.
        """
        changes = []
        for view in self.requests.values():
            if view.state not in TERMINAL and view.expires_at + grace_seconds <= now:
                view.state = "expired"
                view.expired_by_clock = True
                change = ApprovalChange(view.request_id, "expired", view.request,
                                        ts=view.expires_at)
                view.changes.append(change)
                changes.append(change)
        return changes

    def pending(self, now: float) -> list[RequestView]:
        """Pending requests, oldest first."""
        return sorted((v for v in self.requests.values() if v.pending(now)),
                      key=lambda v: v.seen_at)

    def recent(self, limit: int = 50) -> list[RequestView]:
        """Every request, newest first."""
        return sorted(self.requests.values(), key=lambda v: v.seen_at, reverse=True)[:limit]

    def problem(self, request: dict[str, Any], now: float) -> str | None:
        """Why ``request`` does not verify with the keyring at ``now`` (None: it does, or the
        book has no keyring)."""
        return None if self.keyring is None else self.keyring.problem(request, now)

    def _refuse(self, request: dict[str, Any], reason: str, seen_at: float) -> None:
        refusal = RefusedRequest(request, reason, seen_at)
        self.refused.pop(refusal.request_id, None)
        self.refused[refusal.request_id] = refusal
        while len(self.refused) > _REFUSED_KEPT:
            del self.refused[next(iter(self.refused))]
        self.refused_total += 1
        log.warning("approval request %s (service %s) refused, not shown to anyone: cannot be "
                    "verified (%s)", refusal.request_id or "?", refusal.service or "?", reason)

    def _add_request(self, request: dict[str, Any], seen_at: float) -> list[ApprovalChange]:
        # Verified as of its publication: a request signed before its key was retired was
        # genuine (whether it can still be answered is checked when it is answered).
        reason = self.problem(request, seen_at)
        if reason is not None:
            self._refuse(request, reason, seen_at)
            return []
        rid = str(request.get("request_id", ""))
        if not rid or rid in self.requests:
            return []  # a re-emitted request is the same request
        view = self.requests[rid] = RequestView(request, seen_at)
        deployment = (str(request.get("service", "")), str(request.get("deployment_id", "")))
        self._by_deployment[deployment] = rid
        decided = request.get("evidence", {}).get("decided_at")
        created = ApprovalChange(rid, "requested", request,
                                 ts=parse_ts(decided) if decided else seen_at)
        view.changes.append(created)
        changes = [created]
        for state, decision in (self._waiting.pop(rid, []) + self._waiting.pop(deployment, [])):
            changes.extend(self._apply(view, state, decision))
        return changes

    def _add_decision(self, decision: dict[str, Any]) -> list[ApprovalChange]:
        state = _outcome(decision)
        if state is None:
            return []
        named = _named_request(decision)
        deployment = (str(decision.get("service", "")), str(decision.get("deployment_id", "")))
        rid = named or self._by_deployment.get(deployment)
        view = self.requests.get(rid) if rid else None
        if view is None:
            self._waiting.setdefault(named or deployment, []).append((state, decision))
            return []
        return self._apply(view, state, decision)

    def _apply(self, view: RequestView, state: State,
               decision: dict[str, Any]) -> list[ApprovalChange]:
        if state != "rejected":
            late = view.expired_by_clock and state != "expired"
            if view.state in TERMINAL and not late:
                return []
            view.state = state
            view.expired_by_clock = False
        change = ApprovalChange(view.request_id, state, view.request, decision,
                                parse_ts(decision["ts"]))
        view.changes.append(change)
        return [change]
