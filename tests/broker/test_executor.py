"""The reference executor on the real broker: runs each valid command once, reports every rejection.

Commands are published to `rollback.commands`; the executor (`rollguard executor`, a subprocess
with the gate's public key only) must run the valid one exactly once — even when it is delivered
again and across a restart of the executor — and put a `rejected` result with the reason for
each unsigned, tampered, expired, out-of-scope or already-executed command on
`rollback.results`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rollguard.models.events import RollbackCommand, stable_id
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import generate_key_pair, load_private_key, sign_record
from tests.broker.conftest import REPO, ROLLGUARD, WorkerRun, consume

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


def _command(key: Any, deployment: str, **changes: Any) -> dict[str, Any]:
    now = time.time()
    service = changes.get("service", "checkout")
    fields: dict[str, Any] = dict(
        command_id=stable_id("cmd", service, deployment), deployment_id=deployment,
        service=service,
        from_version="v2.4.1", to_version="v2.4.0", authority="auto",
        issued_by="svc:rollguard", issued_at=now, expires_at=now + 300,
        reasons=("THRESHOLD_BREACH",), evidence={}, policy_version="test",
    )
    fields.update(changes)
    return record_to_dict(sign_record(RollbackCommand(**fields), key))


def _start_executor(run: WorkerRun, tmp_path: Path, marker: Path) -> subprocess.Popen[bytes]:
    script = tmp_path / "rollback.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')\n")
    log = open(tmp_path / "executor.log", "ab")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(
        [ROLLGUARD, "executor", "--exec", f"{sys.executable} {script} {marker} {{service}} "
         "{to_version} {command_id}", "--verify-key", str(tmp_path / "keys" / "gate.pub"),
         "--scope", "checkout", "--scope", "cart-*", "--ledger", str(tmp_path / "ledger.db")],
        env=run.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


async def test_executor_runs_valid_commands_once_and_reports_rejections(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    generate_key_pair(tmp_path / "keys", "gate")
    generate_key_pair(tmp_path / "keys", "intruder")
    gate = load_private_key(tmp_path / "keys" / "gate.key")
    intruder = load_private_key(tmp_path / "keys" / "intruder.key")
    marker = tmp_path / "executed.txt"
    valid = _command(gate, "dep-valid")
    tampered = {**_command(gate, "dep-tampered"), "to_version": "v1.0.0"}
    cases = [
        ("valid", valid, "executed", "ran"),
        ("unsigned", {**_command(gate, "dep-unsigned"), "signature": ""}, "rejected", "unsigned"),
        ("tampered", tampered, "rejected", "bad signature"),
        ("other key", _command(intruder, "dep-forged"), "rejected", "bad signature"),
        ("expired", _command(gate, "dep-expired", issued_at=time.time() - 600,
                             expires_at=time.time() - 300), "rejected", "expired"),
        ("out of scope", _command(gate, "dep-scope", service="payments"), "rejected",
         "out of scope"),
        ("again", valid, "rejected", "already executed"),
    ]
    topic = worker_run.topic("rollback.commands")
    executor = _start_executor(worker_run, tmp_path, marker)
    try:
        for _, command, _, _ in cases:
            await producer.send_and_wait(topic, orjson.dumps(command),
                                         key=str(command["service"]).encode())
        results = await consume(kafka_bootstrap, worker_run.topic("rollback.results"),
                                len(cases), timeout=90)
    finally:
        _stop(executor)
    assert len(results) == len(cases), (tmp_path / "executor.log").read_text()[-2000:]
    # Results of one command id keep their order (same key, same partition).
    by_id: dict[str, list[dict[str, Any]]] = {}
    for message in results:
        result = orjson.loads(message.value)
        by_id.setdefault(result["command_id"], []).append(result)
    for name, command, status, fragment in cases:
        result = by_id[command["command_id"]].pop(0)
        assert result["status"] == status, (name, result)
        assert fragment in result["reason"], (name, result)

    # Restart the executor; the same valid command delivered again must not run again.
    executor = _start_executor(worker_run, tmp_path, marker)
    try:
        await producer.send_and_wait(topic, orjson.dumps(valid), key=b"checkout")
        results = await consume(kafka_bootstrap, worker_run.topic("rollback.results"),
                                len(cases) + 1, timeout=90)
    finally:
        _stop(executor)
    last = [orjson.loads(m.value) for m in results
            if orjson.loads(m.value)["command_id"] == valid["command_id"]][-1]
    assert last["status"] == "rejected" and "already executed" in last["reason"], last
    assert marker.read_text().splitlines() == [f"checkout v2.4.0 {valid['command_id']}"]
