"""Hand-made edge inputs for the golden replay files, built deterministically.

Each case starts from a simulated scenario (seed 0) and adds what the corpus never shows: signed
approval responses (approve, deny, bad signature, unknown approver, replayed, unknown request),
a request that expires, a request withdrawn because the breach cleared, a request withdrawn by a
newer deploy, an aborted deploy, and bad lines of every kind. The approver key is derived from a
fixed seed (Ed25519 signatures are deterministic), so the same code always writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rollguard.models.records import request_id
from rollguard.streams.approvers import Approver, ApproverDirectory
from rollguard.streams.scenarios import generate
from rollguard.streams.serde import dumps
from rollguard.streams.signing import signature_of

__all__ = ["APPROVERS", "EDGES", "edge_lines"]

ALICE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
MALLORY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
APPROVERS = ApproverDirectory(
    {
        "user:alice": Approver("user:alice", frozenset({"sre-oncall"}), ALICE.public_key()),
        "user:bob": Approver("user:bob", frozenset({"viewer"}), MALLORY.public_key()),
    }
)
Event = dict[str, Any]


def _events(scenario: str) -> tuple[list[Event], Event]:
    """The scenario's events (seed 0) and its deploy event."""
    events = [dict(e) for e in generate(scenario, 0).events]
    deploy = next(e for e in events if e["type"] == "deploy")
    return events, deploy


def _response(
    deploy: Event, ts: float, decision: str, approver: str, key: Ed25519PrivateKey
) -> Event:
    body: Event = {
        "type": "approval_response",
        "request_id": request_id(deploy["service"], deploy["deployment_id"]),
        "approver": approver,
        "decision": decision,
        "ts": ts,
        "comment": f"{decision} by {approver}",
    }
    body["signature"] = signature_of(body, key)
    return body


def _insert(events: list[Event], at: float, extra: list[Event]) -> list[Event]:
    """``events`` with ``extra`` placed before the first event later than ``at``."""
    cut = next((i for i, e in enumerate(events) if _ts(e) > at), len(events))
    return events[:cut] + extra + events[cut:]


def _ts(event: Event) -> float:
    return float(event["ts"])


def _lines(events: list[Event]) -> list[bytes]:
    return [dumps(e) for e in events]


# The request of these scenarios is made ~4-6 minutes after the deploy: responses come later.
AFTER_REQUEST = 480.0


def approved() -> list[bytes]:
    """A valid approval rolls back; the same response again and one for no request are rejected."""
    events, deploy = _events("data-writes")
    at = _ts(deploy) + AFTER_REQUEST
    ok = _response(deploy, at, "approve", "user:alice", ALICE)
    unknown = {**ok, "request_id": "apr-0000000000000000", "ts": at + 1.0}
    unknown["signature"] = signature_of(unknown, ALICE)
    again = {**ok, "ts": at + 2.0}
    again["signature"] = signature_of(again, ALICE)
    return _lines(_insert(events, at, [ok, unknown, again]))


def denied() -> list[bytes]:
    """Bad signature, an approver without the role, then a valid denial."""
    events, deploy = _events("schema-migration")
    at = _ts(deploy) + AFTER_REQUEST
    forged = _response(deploy, at, "approve", "user:alice", MALLORY)
    no_role = _response(deploy, at + 1.0, "approve", "user:bob", MALLORY)
    deny = _response(deploy, at + 2.0, "deny", "user:alice", ALICE)
    return _lines(_insert(events, at, [forged, no_role, deny]))


def expired() -> list[bytes]:
    """Nobody answers; telemetry resumes after a long gap (the first line after it is refused
    as too far ahead, the next confirms the jump) and the request expires."""
    events, deploy = _events("credential-rotation")
    last = events[-1]
    later = [
        {**last, "ts": _ts(deploy) + 2400.0 + i * 10.0} for i in range(3)
    ]
    return _lines(events + later)


def withdrawn() -> list[bytes]:
    """The breach clears after the request: the deployed service's samples return to their
    last value before the deploy, and the request is withdrawn."""
    events, deploy = _events("data-writes")
    service, t0 = deploy["service"], _ts(deploy)
    fixed = t0 + 240.0
    before: dict[tuple[str, str, str | None], float] = {}
    firing: dict[str, Event] = {}
    out: list[Event] = []
    for e in events:
        if e["type"] == "metric" and e["service"] == service:
            key = (e["name"], e["source"], e.get("instance"))
            if _ts(e) < t0:
                before[key] = e["value"]
            elif _ts(e) > fixed and key in before:
                e = {**e, "value": before[key]}
        if e["type"] == "alert" and e["service"] == service:
            if _ts(e) > fixed:
                continue
            firing[e["name"]] = e
        out.append(e)
    resolved = [{**a, "status": "resolved", "ts": fixed} for _, a in sorted(firing.items())]
    return _lines(_insert(out, fixed, resolved))


def redeployed() -> list[bytes]:
    """A newer deploy replaces a deployment with a pending request; a duplicate and an aborted
    deploy of it follow."""
    events, deploy = _events("data-writes")
    at = _ts(deploy) + AFTER_REQUEST
    newer = {**deploy, "deployment_id": deploy["deployment_id"] + "-b", "version": "v9.9.9",
             "ts": at}
    duplicate = {**newer, "ts": at + 5.0}
    aborted = {**newer, "status": "aborted", "ts": at + 120.0}
    return _lines(_insert(events, at + 120.0, [newer, duplicate, aborted]))


def bad_lines() -> list[bytes]:
    """Garbage among a healthy release's lines: every kind of dead letter, and late samples."""
    lines = _lines(generate("healthy", 0).events)
    sample = next(e for e in generate("healthy", 0).events if e["type"] == "metric")
    late = {**sample, "ts": _ts(sample) + 60.0}
    garbage = [
        b"{not json",
        b'{"type": "metric", "service": "x"}',
        b'{"type": "telepathy", "ts": 0}',
        b'{"type":"metric","service":"x","name":"error_rate","value":NaN,"ts":1795586400}',
        b'{"type":"metric","service":"x","name":"e","value":1e999,"ts":1795586400}',
        b"[1, 2, 3]",
        b'"just a string"',
        b"x" * 300_000,
    ]
    out: list[bytes] = []
    step = len(lines) // (len(garbage) + 1)
    for i, line in enumerate(lines):
        out.append(line)
        if i and i % step == 0 and garbage:
            out.append(garbage.pop(0))
        if i == len(lines) // 2:
            out.extend([dumps(late)] * 3)
    return out + garbage


EDGES: dict[str, Callable[[], list[bytes]]] = {
    "edge-approved": approved,
    "edge-denied": denied,
    "edge-expired": expired,
    "edge-withdrawn": withdrawn,
    "edge-redeployed": redeployed,
    "edge-bad-lines": bad_lines,
}


def edge_lines(name: str) -> list[bytes]:
    """The input lines of one edge case."""
    return EDGES[name]()
