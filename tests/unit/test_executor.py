"""The reference executor's checks: unsigned, tampered, expired, out of scope, already executed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from rollguard.models.events import RollbackCommand, stable_id
from rollguard.streams.executor import (
    ExecutorConfig,
    Ledger,
    check_command,
    handle_command,
    render_command,
)
from rollguard.streams.keyring import Keyring
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import (
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign_record,
)

NOW = 1795593600.0


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Any, Any]:
    private, public = generate_key_pair(tmp_path / "keys", "gate")
    return load_private_key(private), Keyring.of(load_public_key(public))


def make_command(private: Any, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        command_id=stable_id("cmd", "checkout", "dep-1"), deployment_id="dep-1",
        service="checkout",
        from_version="v2", to_version="v1", authority="auto", issued_by="svc:rollguard",
        issued_at=NOW, expires_at=NOW + 300, reasons=("THRESHOLD_BREACH",), evidence={},
        policy_version="p",
    )
    fields.update(changes)
    return record_to_dict(sign_record(RollbackCommand(**fields), private))


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda c: {**c, "signature": ""}, "unsigned"),  # no signature at all
        (lambda c: {**c, "to_version": "v0"}, "bad signature"),  # tampered after signing
        (lambda c: {**c, "service": "payments"}, "bad signature"),  # re-scoped after signing
        (lambda c: {k: v for k, v in c.items() if k != "deployment_id"}, "missing"),  # malformed
    ],
)
def test_tampered_and_unsigned_commands_are_rejected(keys: Any, mutate: Any,
                                                     fragment: str) -> None:
    private, public = keys
    assert fragment in (check_command(mutate(make_command(private)), public, NOW, ["*"]) or "")


def test_a_valid_command_passes_and_expired_or_out_of_scope_do_not(keys: Any) -> None:
    private, public = keys
    assert check_command(make_command(private), public, NOW, ["*"]) is None
    assert "expired" in (check_command(make_command(private), public, NOW + 301, ["*"]) or "")
    assert "out of scope" in (check_command(make_command(private), public, NOW, ["search-*"])
                              or "")
    same = make_command(private, to_version="v2")
    assert "out of scope" in (check_command(same, public, NOW, ["*"]) or "")
    forged_id = make_command(private, command_id="cmd-0000000000000000")
    assert "out of scope" in (check_command(forged_id, public, NOW, ["*"]) or "")


def test_a_command_signed_by_another_key_is_rejected(keys: Any, tmp_path: Path) -> None:
    _, public = keys
    other_private, _ = generate_key_pair(tmp_path / "other", "intruder")
    forged = make_command(load_private_key(other_private))
    assert "bad signature" in (check_command(forged, public, NOW, ["*"]) or "")


def test_the_ledger_remembers_across_restarts(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    assert ledger.claim("cmd-1", NOW)
    assert not ledger.claim("cmd-1", NOW)
    ledger.close()
    reopened = Ledger(tmp_path / "ledger.sqlite3")
    assert not reopened.claim("cmd-1", NOW + 10)
    assert reopened.claim("cmd-2", NOW + 10)


def test_fields_fill_arguments_without_a_shell() -> None:
    argv = render_command("deploy-tool rollback {service} --to {to_version}",
                          {"service": "a; rm -rf /", "to_version": "v1"})
    assert argv == ["deploy-tool", "rollback", "a; rm -rf /", "--to", "v1"]


async def test_a_valid_command_runs_exactly_once(keys: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = keys
    monkeypatch.setattr("rollguard.streams.executor.time.time", lambda: NOW + 1)
    marker = tmp_path / "ran.txt"
    config = ExecutorConfig(
        exec_template=f"{sys.executable} -c \"import sys; open(sys.argv[1], 'a').write("
                      f"sys.argv[2] + chr(10))\" {marker} {{service}}",
        keyring=public, ledger_path=tmp_path / "ledger.sqlite3",
    )
    ledger = Ledger(config.ledger_path)
    raw = orjson.dumps(make_command(private))
    first = await handle_command(raw, config, ledger)
    second = await handle_command(raw, config, ledger)
    assert first["status"] == "executed", first
    assert second["status"] == "rejected" and "already executed" in second["reason"]
    assert marker.read_text().splitlines() == ["checkout"]
