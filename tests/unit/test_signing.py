"""Ed25519 over canonical JSON: valid signatures verify, any change breaks them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rollguard.models.events import RollbackCommand
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import (
    KeyError_,
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign_record,
    verify_mapping,
)


def _command() -> RollbackCommand:
    return RollbackCommand(
        command_id="cmd-1", deployment_id="dep-1", service="checkout", from_version="v2",
        to_version="v1", authority="auto", issued_by="svc:rollguard", issued_at=1795593600,
        expires_at=1795593900, reasons=("THRESHOLD_BREACH",), evidence={"a": [1, 2.5]},
        policy_version="p",
    )


def test_generated_keys_are_private_and_sign_verifiably(tmp_path: Path) -> None:
    private_path, public_path = generate_key_pair(tmp_path, "gate")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    signed = sign_record(_command(), load_private_key(private_path))
    data = record_to_dict(signed)
    assert verify_mapping(data, load_public_key(public_path))
    for field, value in [("to_version", "v0"), ("service", "payments"),
                         ("expires_at", "2030-01-01T00:00:00Z"), ("evidence", {})]:
        assert not verify_mapping({**data, field: value}, load_public_key(public_path)), field
    assert not verify_mapping({**data, "signature": ""}, load_public_key(public_path))
    assert not verify_mapping({**data, "signature": "bm90LWEtc2ln"}, load_public_key(public_path))


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    private_path, _ = generate_key_pair(tmp_path, "gate")
    private_path.chmod(0o644)
    with pytest.raises(KeyError_, match="chmod 600"):
        load_private_key(private_path)


def test_keys_are_never_overwritten(tmp_path: Path) -> None:
    generate_key_pair(tmp_path, "gate")
    with pytest.raises(KeyError_, match="already exists"):
        generate_key_pair(tmp_path, "gate")
