"""Gate keys as verifiers hold them: key ids, keyrings, rotation with an overlap (DESIGN §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from rollguard.models.events import ApprovalRequest, ApprovalResponse, RollbackCommand, stable_id
from rollguard.streams.approvers import Approver, ApproverDirectory, approval_check
from rollguard.streams.arrival import with_arrival
from rollguard.streams.cli import cli
from rollguard.streams.keyring import Keyring, load_keyring, rotate
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import (
    generate_key_pair,
    key_id_of,
    load_private_key,
    load_public_key,
    sign_record,
)

NOW = 1795593600.0


def _command(**changes: Any) -> RollbackCommand:
    fields: dict[str, Any] = dict(
        command_id=stable_id("cmd", "checkout", "dep-1"), deployment_id="dep-1",
        service="checkout", from_version="v2", to_version="v1", authority="auto",
        issued_by="svc:rollguard", issued_at=NOW, expires_at=NOW + 300,
        reasons=("THRESHOLD_BREACH",), evidence={}, policy_version="p",
    )
    fields.update(changes)
    return RollbackCommand(**fields)


def _request() -> ApprovalRequest:
    return ApprovalRequest(request_id=stable_id("apr", "checkout", "dep-1"),
                           deployment_id="dep-1", service="checkout", to_version="v1",
                           reasons=(), evidence={}, required_role="sre-oncall",
                           expires_at=NOW + 1800)


def test_signed_records_carry_the_key_id_under_the_signature(tmp_path: Path) -> None:
    private_path, public_path = generate_key_pair(tmp_path, "gate")
    key, public = load_private_key(private_path), load_public_key(public_path)
    ring = Keyring.of(public)
    for record in (_command(), _request()):
        signed = record_to_dict(sign_record(record, key))
        assert signed["key_id"] == key_id_of(public) and signed["key_id"].startswith("ed25519-")
        assert ring.problem(signed, NOW) is None
        # the key id is signed: changing it (even to another trusted id) breaks the signature
        assert ring.problem({**signed, "key_id": "ed25519-0000000000000000"}, NOW)
        assert "unsigned" in (ring.problem({**signed, "key_id": ""}, NOW) or "")
        assert "unsigned" in (ring.problem({**signed, "signature": ""}, NOW) or "")


def test_rotation_accepts_the_old_key_during_the_overlap_only(tmp_path: Path) -> None:
    keys, keyring_path = tmp_path / "keys", tmp_path / "keyring.yaml"
    first, none = rotate(keys, "gate", keyring_path, 600, NOW)  # the first key: nothing retired
    assert none is None and load_keyring(keyring_path).keys[first].not_after is None
    old_key = load_private_key(keys / "gate.key")
    new, old = rotate(keys, "gate", keyring_path, 600, NOW + 10)
    assert old == first and new != first
    assert (keys / f"gate.{first}.key").exists()  # the retired key is kept aside, not reused
    ring = load_keyring(keyring_path)
    by_old = record_to_dict(sign_record(_command(), old_key))
    by_new = record_to_dict(sign_record(_command(), load_private_key(keys / "gate.key")))
    assert by_old["key_id"] == first and by_new["key_id"] == new
    assert ring.problem(by_old, NOW + 10 + 599) is None  # inside the overlap
    assert "retired" in (ring.problem(by_old, NOW + 10 + 601) or "")  # after it
    assert ring.problem(by_new, NOW + 10 + 10_000) is None
    # a key that is not in the keyring at all
    stranger, _ = generate_key_pair(tmp_path / "other", "gate")
    forged = record_to_dict(sign_record(_command(), load_private_key(stranger)))
    assert "not in the keyring" in (ring.problem(forged, NOW) or "")


def test_keys_rotate_on_the_command_line(tmp_path: Path) -> None:
    keys, keyring_path = tmp_path / "keys", tmp_path / "keyring.yaml"
    generate_key_pair(keys, "gate")
    result = CliRunner().invoke(cli, ["keys", "rotate", "gate", "--dir", str(keys),
                                      "--keyring", str(keyring_path), "--overlap", "60"])
    assert result.exit_code == 0, result.output
    assert "accepted for 60 s more" in result.output
    assert len(load_keyring(keyring_path)) == 2


def test_an_approval_signature_ignores_the_brokers_received_at(tmp_path: Path) -> None:
    private_path, public_path = generate_key_pair(tmp_path, "alice")
    directory = ApproverDirectory({"user:alice": Approver(
        "user:alice", frozenset({"sre-oncall"}), load_public_key(public_path))})
    response = sign_record(ApprovalResponse(request_id="apr-1", approver="user:alice",
                                            decision="approve", ts=NOW, service="checkout"),
                           load_private_key(private_path))
    raw = orjson.dumps(record_to_dict(response))
    stamped = with_arrival(raw, NOW + 1)
    assert approval_check(stamped, response, directory).signature_valid
    tampered = stamped.replace(b'"approve"', b'"deny"')
    assert not approval_check(tampered, response, directory).signature_valid


@pytest.mark.parametrize("text", ["keys: []", "keys: {ed25519-00: {}}", "nope: 1"])
def test_a_bad_keyring_file_is_refused_with_its_name(tmp_path: Path, text: str) -> None:
    from rollguard.streams.signing import KeyError_

    path = tmp_path / "keyring.yaml"
    path.write_text(text)
    with pytest.raises(KeyError_, match="keyring.yaml"):
        load_keyring(path)


def test_the_worker_refuses_a_response_the_broker_did_not_stamp() -> None:
    """On a CreateTime topic the timestamp is the sender's claim: a dead letter, not a time."""
    from types import SimpleNamespace

    from rollguard.streams.arrival import CREATE_TIME_ERROR
    from rollguard.streams.arrival import stamp_arrival as _arrived

    response = ApprovalResponse(request_id="apr-1", approver="user:alice", decision="approve",
                                ts=NOW, service="checkout", received_at=NOW - 100)
    message = SimpleNamespace(topic="rollback.approval-responses", partition=0, offset=7,
                              key=b"checkout", value=b"{}", timestamp=int(NOW * 1000) + 500,
                              timestamp_type=0)
    record, letter = _arrived(response, message, NOW)
    assert record is None and letter is not None and letter.error == CREATE_TIME_ERROR
    stamped, none = _arrived(response, SimpleNamespace(**{**vars(message),
                                                          "timestamp_type": 1}), NOW)
    assert none is None and stamped.received_at == NOW + 0.5  # the sender's value replaced
    assert stamped.arrival == NOW + 0.5


def test_only_an_approval_responses_received_at_is_unsigned(tmp_path: Path) -> None:
    """A field added to a signed command — received_at included — breaks its signature."""
    private_path, public_path = generate_key_pair(tmp_path, "gate")
    signed = record_to_dict(sign_record(_command(), load_private_key(private_path)))
    ring = Keyring.of(load_public_key(public_path))
    assert ring.problem(signed, NOW) is None
    for extra in ({"received_at": NOW}, {"exec": "rm -rf /"}):
        assert "bad signature" in (ring.problem({**signed, **extra}, NOW) or "")


def test_the_executor_follows_a_rotated_keyring_without_a_restart(tmp_path: Path) -> None:
    from rollguard.streams.executor import ExecutorConfig, KeyringWatch

    keys, path = tmp_path / "keys", tmp_path / "keyring.yaml"
    first, _ = rotate(keys, "gate", path, 600, NOW)
    config = ExecutorConfig(exec_template="true", keyring=load_keyring(path),
                            ledger_path=tmp_path / "ledger", keyring_file=path)
    watch = KeyringWatch(config, Keyring())
    assert watch.refresh(config) is config  # unchanged file: nothing re-read
    new, _ = rotate(keys, "gate", path, 600, NOW + 5)
    config = watch.refresh(config)
    assert set(config.keyring.keys) == {first, new}
    path.write_text("keys: [broken")
    assert watch.refresh(config).keyring is config.keyring  # the last good keys are kept


def test_the_worker_still_reads_state_sealed_with_a_rotated_out_key(tmp_path: Path) -> None:
    from rollguard.streams.checkpoint import key_material, state_secret
    from rollguard.streams.settings import Settings
    from rollguard.streams.worker import _state_secrets

    keys = tmp_path / "keys"
    rotate(keys, "gate", tmp_path / "keyring.yaml", 600, NOW)
    old = load_private_key(keys / "gate.key")
    rotate(keys, "gate", tmp_path / "keyring.yaml", 600, NOW + 1)
    settings = Settings(signing_key=keys / "gate.key")
    secrets = _state_secrets(settings, load_private_key(keys / "gate.key"))
    assert secrets[0] != state_secret(settings.app_id, key_material(old))  # seals with the new
    assert state_secret(settings.app_id, key_material(old)) in secrets  # accepts the old
