"""Approvals in arrival order, live and in replay (DESIGN §6, §9).

Two deployments wait for a human. Alice denies B, then an approve of B signed one second
*before* the deny is published after it (a backdated approve), and Alice approves A. The worker
orders responses by the broker's arrival time (LogAppendTime), so the backdated approve is
rejected and only A is rolled back. ``rollguard export`` writes the input topics with each
response's arrival time (``received_at``), and replay of that file gives exactly the worker's
records.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from rollguard.models.events import ApprovalResponse
from rollguard.streams.approvers import load_approvers
from rollguard.streams.replay import replay_to_bytes
from rollguard.streams.serde import record_to_dict
from rollguard.streams.settings import load_policy
from rollguard.streams.signing import generate_key_pair, load_private_key, sign_record
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, shifted_to_now
from tests.broker.conftest import REPO, WorkerRun, consume
from tests.broker.worker_io import assert_equal_to_replay, worker_outputs

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def _events() -> tuple[list[dict[str, Any]], dict[str, str]]:
    a = list(generate("approval-only-service", 1).events)
    b = list(generate("data-writes", 3).events)
    services = {"A": next(e["service"] for e in a if e["type"] == "deploy"),
                "B": next(e["service"] for e in b if e["type"] == "deploy")}
    events = a + [e for e in b if e["service"] == services["B"]]
    return shifted_to_now(sorted(events, key=lambda e: e["ts"]), time.time()), services


def _response(key: Any, request_id: str, service: str, decision: str, ts: float) -> bytes:
    response = ApprovalResponse(request_id=request_id, approver="user:alice", decision=decision,
                                ts=ts, service=service, comment=f"{decision} at {ts}")
    data = record_to_dict(sign_record(response, key))
    data.pop("received_at", None)
    return orjson.dumps(data)


async def test_a_backdated_approve_after_a_deny_issues_no_command_live_or_in_replay(
        worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str,
        tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    for name in ("gate", "alice"):
        generate_key_pair(keys, name)
    approvers = tmp_path / "approvers.yaml"
    approvers.write_text(yaml.safe_dump({"approvers": {"user:alice": {
        "roles": ["sre-oncall"], "public_key": (keys / "alice.pub").read_text()}}}))
    worker_run.env.update(ROLLGUARD_APPROVERS=str(approvers),
                          ROLLGUARD_SIGNING_KEY=str(keys / "gate.key"),
                          # event time moves only with events, as in replay
                          ROLLGUARD_IDLE_ADVANCE_SECONDS="0")
    worker_run.start()
    worker_run.wait_healthy()
    events, services = _events()
    settings = worker_run.settings()
    await send_events(producer, events, settings)
    found = await consume(kafka_bootstrap, worker_run.topic("rollback.approvals"), 2, 120)
    requests = {orjson.loads(m.value)["service"]: orjson.loads(m.value) for m in found}
    assert set(requests) == set(services.values()), worker_run.log_tail()
    a, b = (requests[services[n]]["request_id"] for n in "AB")

    alice = load_private_key(keys / "alice.key")
    topic = worker_run.topic("rollback.approval-responses")
    denied_at = time.time()
    await producer.send_and_wait(topic, _response(alice, b, services["B"], "deny", denied_at),
                                 key=services["B"].encode())
    await asyncio.sleep(1.5)
    backdated = _response(alice, b, services["B"], "approve", denied_at - 1)
    await producer.send_and_wait(topic, backdated, key=services["B"].encode())
    await producer.send_and_wait(topic, _response(alice, a, services["A"], "approve",
                                                  time.time()), key=services["A"].encode())
    # A tick of event time past the lateness, so that the responses' times are reached.
    tick = {"type": "metric", "service": "tick", "name": "heartbeat", "value": 1.0,
            "ts": time.time() + 15, "source": "test"}
    await send_events(producer, [tick], settings)

    await consume(kafka_bootstrap, worker_run.topic("rollback.commands"), 1, 90)
    export = tmp_path / "export.jsonl"
    exported = worker_run.rollguard("export", "--out", str(export))
    assert exported.returncode == 0, exported.stderr
    lines = export.read_bytes().splitlines()
    answers = [orjson.loads(line) for line in lines if b'"approval_response"' in line]
    assert len(answers) == 3 and all("received_at" in r for r in answers), answers
    order = [r["decision"] for r in answers]
    assert order == ["deny", "approve", "approve"], order  # arrival order, not signed order

    expected = list(replay_to_bytes(lines, load_policy(REPO / "config" / "policy.yaml"),
                                    approvers=load_approvers(approvers),
                                    signing_key=load_private_key(keys / "gate.key"),
                                    max_clock_skew_seconds=settings.max_clock_skew_seconds,
                                    flush=False))
    got = await worker_outputs(kafka_bootstrap, expected, worker_run)
    assert_equal_to_replay(got, expected, worker_run, tmp_path=tmp_path)

    records = [orjson.loads(r) for r in got]
    commands = [r for r in records if r["type"] == "rollback_command"]
    assert [c["service"] for c in commands] == [services["A"]], commands
    rejected = [r for r in records if r["type"] == "decision"
                and "APPROVAL_REJECTED" in r["reasons"]]
    assert [r["evidence"]["cause"] for r in rejected] == ["request already denied"], rejected
