"""What the console's backend refuses before publishing an answer signed in a browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from rollguard.models.events import ApprovalResponse
from rollguard.streams.approval_book import ApprovalBook
from rollguard.streams.approvers import load_approvers
from rollguard.streams.console.answers import Accepted, Refused, check_answer
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import generate_key_pair, load_private_key, sign_record
from tests.unit.test_approval_book import T0, decision, request


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    for name in ("alice", "bob", "mallory", "deployer"):
        generate_key_pair(directory, name)
    def entry(role: str, key: str) -> dict[str, Any]:
        return {"roles": [role], "public_key": (directory / f"{key}.pub").read_text()}

    document = {"approvers": {"user:alice": entry("sre-oncall", "alice"),
                              "user:bob": entry("viewer", "bob"),
                              "svc:ci": entry("sre-oncall", "deployer")}}
    (directory / "approvers.yaml").write_text(yaml.safe_dump(document))
    return directory


def signed(keys: Path, key: str = "alice", **fields: Any) -> bytes:
    data = {"request_id": "apr-1", "approver": "user:alice", "decision": "approve",
            "ts": T0 + 60, "service": "payments", **fields}
    response = sign_record(ApprovalResponse(**data), load_private_key(keys / f"{key}.key"))
    return orjson.dumps(record_to_dict(response))


def tampered(raw: bytes) -> bytes:
    data = orjson.loads(raw)
    data["comment"] = "and the database too"
    return orjson.dumps(data)


CASES: list[tuple[str, Any, int | None]] = [
    ("alice approves", lambda k: signed(k), None),
    ("not JSON", lambda k: b"{", 400),
    ("not a response", lambda k: b'{"type": "approval_response"}', 400),
    ("unknown request", lambda k: signed(k, request_id="apr-9"), 404),
    ("wrong service", lambda k: signed(k, service="checkout"), 400),
    ("unknown approver", lambda k: signed(k, "mallory", approver="user:mallory"), 403),
    ("signed by another key", lambda k: signed(k, "mallory"), 403),
    ("changed after signing", lambda k: tampered(signed(k)), 403),
    ("lacks the role", lambda k: signed(k, "bob", approver="user:bob"), 403),
    ("self-approval", lambda k: signed(k, "deployer", approver="svc:ci"), 403),
    ("signed long ago", lambda k: signed(k, ts=T0 - 3600), 400),
]


@pytest.mark.parametrize(("case", "make", "status"), CASES, ids=[c[0] for c in CASES])
def test_the_backend_checks_every_answer(keys: Path, case: str, make: Any,
                                         status: int | None) -> None:
    book = ApprovalBook()
    book.add(request(deploy_actor="svc:ci"), T0)
    verdict = check_answer(make(keys), book, load_approvers(keys / "approvers.yaml"), T0 + 60,
                           300.0)
    if status is None:
        assert isinstance(verdict, Accepted) and verdict.service == "payments"
    else:
        assert isinstance(verdict, Refused) and verdict.status == status, verdict


def test_a_decided_request_takes_no_answer(keys: Path) -> None:
    book = ApprovalBook()
    book.add(request(), T0)
    book.add(decision(["APPROVAL_WITHDRAWN"]), T0)
    verdict = check_answer(signed(keys), book, load_approvers(keys / "approvers.yaml"), T0 + 60,
                           300.0)
    assert verdict == Refused(409, "request apr-1 is already withdrawn")
