"""Rotating the gate key on the real broker (docs/security.md, DESIGN §6).

The gate raises an approval request signed with its first key, then the documented procedure
runs: ``rollguard keys rotate`` (keyring: new key + old key for the overlap), the gate restarts
with the new key. The restarted gate resumes its state (sealed with the old key's secret), the
request signed before the rotation is still answerable with the keyring, and the command that
the approval issues is signed with the new key and verifies with the same keyring.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from rollguard.streams.keyring import load_keyring
from rollguard.streams.signing import generate_key_pair, key_id_of, load_public_key
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, shifted_to_now
from tests.broker.conftest import WorkerRun, consume
from tests.broker.worker_io import wait_checkpoint_after, wait_role

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


async def test_a_rotated_gate_resumes_and_old_requests_stay_answerable(
        worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str,
        tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    for name in ("gate", "alice"):
        generate_key_pair(keys, name)
    old_id = key_id_of(load_public_key(keys / "gate.pub"))
    approvers = tmp_path / "approvers.yaml"
    approvers.write_text(yaml.safe_dump({"approvers": {"user:alice": {
        "roles": ["sre-oncall"], "public_key": (keys / "alice.pub").read_text()}}}))
    keyring = tmp_path / "keyring.yaml"
    worker_run.env.update(ROLLGUARD_APPROVERS=str(approvers),
                          ROLLGUARD_SIGNING_KEY=str(keys / "gate.key"),
                          ROLLGUARD_KEYRING=str(keyring), ROLLGUARD_IDLE_ADVANCE_SECONDS="2")
    worker_run.start()
    worker_run.wait_healthy()
    events = shifted_to_now(list(generate("approval-only-service", 1).events), time.time())
    await send_events(producer, events, worker_run.settings())
    (found,) = await consume(kafka_bootstrap, worker_run.topic("rollback.approvals"), 1, 120)
    request = orjson.loads(found.value)
    assert request["key_id"] == old_id
    await wait_checkpoint_after(worker_run)
    worker_run.stop()

    rotated = worker_run.rollguard("keys", "rotate", "gate", "--dir", str(keys), "--keyring",
                                   str(keyring), "--overlap", "600")
    assert rotated.returncode == 0, rotated.stderr
    new_id = key_id_of(load_public_key(keys / "gate.pub"))
    assert new_id != old_id and set(load_keyring(keyring).keys) == {old_id, new_id}

    worker_run.start()  # the gate, restarted with the new key
    await wait_role(worker_run, "leader", 90)  # not "refused": its state still authenticates
    approved = worker_run.rollguard("approve", request["request_id"], "--as", "user:alice",
                                    "--key", str(keys / "alice.key"))
    assert approved.returncode == 0, approved.stderr  # the old key's request, in the overlap
    (message,) = await consume(kafka_bootstrap, worker_run.topic("rollback.commands"), 1, 90)
    command = orjson.loads(message.value)
    assert command["key_id"] == new_id
    assert load_keyring(keyring).problem(command, time.time()) is None
    # after the overlap the old key is refused
    assert "retired" in (load_keyring(keyring).problem(request, time.time() + 601) or "")
