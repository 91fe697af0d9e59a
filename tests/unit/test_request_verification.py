"""Requests are verified before a human is asked (notify, console): a book with the gate's
keyring takes only requests the gate signed; anything else is refused, counted, and cannot be
answered in the console."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rollguard.models.events import ApprovalRequest
from rollguard.streams.approval_book import ApprovalBook
from rollguard.streams.approvers import load_approvers
from rollguard.streams.console.answers import Accepted, Refused, check_answer
from rollguard.streams.console.pages import detail_page, index_page, refused_page
from rollguard.streams.keyring import Keyring, TrustedKey
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import generate_key_pair, key_id_of, load_private_key, sign_record
from tests.unit.test_approval_book import T0, decision, request
from tests.unit.test_console_answers import keys, signed  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gate")
    generate_key_pair(directory, "gate")
    generate_key_pair(directory, "foreign")
    return directory


def _signed_request(gate: Path, key: str = "gate", **extra: Any) -> dict[str, Any]:
    record = ApprovalRequest.model_validate(request(**extra))
    return record_to_dict(sign_record(record, load_private_key(gate / f"{key}.key")))


def _ring(gate: Path, not_after: float | None = None) -> Keyring:
    public = load_private_key(gate / "gate.key").public_key()
    return Keyring({key_id_of(public): TrustedKey(public, not_after)})


def _forgeries(gate: Path) -> dict[str, tuple[dict[str, Any], str]]:
    genuine = _signed_request(gate)
    foreign = _signed_request(gate, "foreign")
    return {
        "unsigned": (request(), "unsigned: no signature"),
        "no key id": ({**genuine, "key_id": None}, "unsigned: no key_id"),
        "foreign key": (foreign, f"key {foreign['key_id']} is not in the keyring"),
        "foreign key, gate's id": ({**foreign, "key_id": genuine["key_id"]},
                                   "tampered, or signed by another key"),
        "tampered": ({**genuine, "to_version": "v0-evil"}, "tampered, or signed by another key"),
    }


@pytest.mark.parametrize("case", ["unsigned", "no key id", "foreign key",
                                  "foreign key, gate's id", "tampered"])
def test_a_request_the_gate_did_not_sign_is_refused_and_counted(gate: Path, case: str) -> None:
    forged, why = _forgeries(gate)[case]
    book = ApprovalBook(keyring=_ring(gate))
    assert book.add(forged, T0) == []
    assert "apr-1" not in book.requests and book.pending(T0) == []
    assert book.refused_total == 1 and why in book.refused["apr-1"].reason
    # nothing that names it changes anything, and the genuine request still comes through
    assert book.add(decision(["APPROVED"], approval={"request_id": "apr-1"}), T0 + 1) == []
    changes = book.add(_signed_request(gate), T0 + 2)
    assert [c.state for c in changes] == ["requested", "approved"]


def test_a_forged_copy_of_a_genuine_request_is_refused_too(gate: Path) -> None:
    book = ApprovalBook(keyring=_ring(gate))
    assert [c.state for c in book.add(_signed_request(gate), T0)] == ["requested"]
    assert book.add({**_signed_request(gate), "to_version": "v0-evil"}, T0 + 1) == []
    assert book.refused_total == 1
    assert book.requests["apr-1"].request["to_version"] == "v1"


def test_a_request_is_judged_by_the_key_valid_when_it_was_published(gate: Path) -> None:
    book = ApprovalBook(keyring=_ring(gate, not_after=T0 + 10))
    assert book.add(_signed_request(gate), T0)  # signed before the key was retired
    assert book.add(_signed_request(gate, rid="apr-2", dep="dep-2"), T0 + 20) == []
    assert "retired" in book.refused["apr-2"].reason


def test_without_a_keyring_the_book_takes_every_request() -> None:
    book = ApprovalBook()
    assert [c.state for c in book.add(request(), T0)] == ["requested"]
    assert book.refused_total == 0


def test_the_console_refuses_to_answer_a_forged_request(gate: Path, keys: Path) -> None:  # noqa: F811
    directory = load_approvers(keys / "approvers.yaml")
    book = ApprovalBook(keyring=_ring(gate, not_after=T0 + 30))
    book.add(_forgeries(gate)["foreign key"][0], T0)
    verdict = check_answer(signed(keys), book, directory, T0 + 60, 300.0)
    assert isinstance(verdict, Refused) and verdict.status == 403, verdict
    assert "cannot be verified (bad signature: key" in verdict.reason
    book.add(_signed_request(gate), T0 + 1)  # genuine: answerable while its key is valid
    assert isinstance(check_answer(signed(keys, ts=T0 + 20), book, directory, T0 + 20, 300.0),
                      Accepted)
    late = check_answer(signed(keys), book, directory, T0 + 60, 300.0)  # key retired since
    assert isinstance(late, Refused) and late.status == 403 and "retired" in late.reason


def test_the_console_lists_refused_records_without_a_way_to_answer(gate: Path) -> None:
    book = ApprovalBook(keyring=_ring(gate))
    book.add(_signed_request(gate), T0)
    book.add({**request(rid="apr-forged", dep="dep-9"), "service": "<b>x</b>"}, T0 + 1)
    index = index_page(book, T0 + 5)
    assert 'id="refused-count"' in index and "unsigned: no signature" in index
    assert "&lt;b&gt;x&lt;/b&gt;" in index and "<b>x</b>" not in index
    page = refused_page(book.refused["apr-forged"], T0 + 5)
    assert 'id="refusal"' in page and 'id="answer"' not in page
    genuine = detail_page(book.requests["apr-1"], book, T0 + 5)
    assert 'id="answer"' in genuine and 'id="refusal"' not in genuine


def test_a_rotation_reaches_a_running_verifier(tmp_path: Path) -> None:
    """notify and the console follow the keyring file as the executor does: after
    ``keys rotate`` they take requests signed with the new key."""
    import os
    import time

    from rollguard.streams.keyring import KeyringFollower, rotate

    ring = tmp_path / "keyring.yaml"
    rotate(tmp_path, "gate", ring, 3600, T0)
    follower = KeyringFollower(Keyring(), ring)
    book = ApprovalBook(keyring=follower.keyring)
    assert follower.refresh() is None  # unchanged
    rotate(tmp_path, "gate", ring, 3600, T0)
    os.utime(ring, (time.time() + 5, time.time() + 5))  # a coarse clock must not hide it
    new = _signed_request(tmp_path, rid="apr-new", dep="dep-new")
    assert book.add(new, T0) == [] and "not in the keyring" in book.refused["apr-new"].reason
    assert follower.refresh() is not None and len(follower.keyring) == 2
    book.keyring = follower.keyring
    assert [c.state for c in book.add({**new, "request_id": "apr-new2"}, T0)] == []  # tampered
    again = _signed_request(tmp_path, rid="apr-new3", dep="dep-new3")
    assert [c.state for c in book.add(again, T0)] == ["requested"]
    ring.write_text("keys: [")  # a broken file: the last good keys stay
    os.utime(ring, (time.time() + 10, time.time() + 10))
    assert follower.refresh() is None and len(follower.keyring) == 2
