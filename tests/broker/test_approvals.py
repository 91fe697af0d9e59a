"""Approval round trips on the real broker (DESIGN §6).

Three deployments need a human: A (payments: approval-only service), B (data writes) and C (data
writes, on a service whose requests expire after a minute). Responses published to
`rollback.approval-responses` — by `rollguard approve|deny` for the honest ones, by hand for the
forged ones — must give exactly one signed command (A, approved by alice) and an
APPROVAL_REJECTED decision naming the cause for every response that does not count.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from rollguard.models.events import ApprovalResponse
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import (
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign_record,
    verify_mapping,
)
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, shifted_to_now
from tests.broker.conftest import REPO, ROLLGUARD, WorkerRun, consume
from tests.broker.worker_io import read_all, settled

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]



def _deployed_service(events: list[dict[str, Any]]) -> str:
    return next(e["service"] for e in events if e["type"] == "deploy")


def _fleet() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Events of three deployments that need approval, shifted to end now; name → service."""
    events: list[dict[str, Any]] = []
    services: dict[str, str] = {}
    for name, (scenario, seed) in {"A": ("approval-only-service", 1), "B": ("data-writes", 3),
                                   "C": ("data-writes", 10)}.items():
        generated = list(generate(scenario, seed).events)
        service = _deployed_service(generated)
        services[name] = service
        # Keep the neighbours of A only, so no two scenarios publish the same service.
        events.extend(e for e in generated if name == "A" or e["service"] == service)
    return shifted_to_now(sorted(events, key=lambda e: e["ts"]), time.time()), services


@pytest.fixture
def people(tmp_path: Path) -> dict[str, Any]:
    keys = tmp_path / "keys"
    for name in ("gate", "alice", "bob", "deployer", "mallory"):
        generate_key_pair(keys, name)
    approvers = {
        "user:alice": {"roles": ["sre-oncall"], "public_key": (keys / "alice.pub").read_text()},
        "user:bob": {"roles": ["viewer"], "public_key": (keys / "bob.pub").read_text()},
        # The deploy actor of every scenario: it may approve in general, never its own release.
        "svc:ci-deployer": {"roles": ["sre-oncall"],
                            "public_key": (keys / "deployer.pub").read_text()},
    }
    (tmp_path / "approvers.yaml").write_text(yaml.safe_dump({"approvers": approvers}))
    return {"keys": keys, "approvers": tmp_path / "approvers.yaml"}


def _signed_response(key_path: Path, **fields: Any) -> bytes:
    response = ApprovalResponse(**fields)
    return orjson.dumps(record_to_dict(sign_record(response, load_private_key(key_path))))


async def test_approval_round_trips(worker_run: WorkerRun, producer: AIOKafkaProducer,
                                    kafka_bootstrap: str, people: dict[str, Any],
                                    tmp_path: Path) -> None:
    events, services = _fleet()
    policy = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())
    policy["services"][services["C"]] = {"approval_ttl_seconds": 60}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    keys = people["keys"]
    worker_run.env.update(ROLLGUARD_APPROVERS=str(people["approvers"]),
                          ROLLGUARD_SIGNING_KEY=str(keys / "gate.key"),
                          ROLLGUARD_VERIFY_KEY=str(keys / "gate.pub"),
                          ROLLGUARD_POLICY=str(tmp_path / "policy.yaml"),
                          ROLLGUARD_IDLE_ADVANCE_SECONDS="2")
    worker_run.start()
    worker_run.wait_healthy()
    await send_events(producer, events, worker_run.settings())

    requests = await consume(kafka_bootstrap, worker_run.topic("rollback.approvals"), 3, 120)
    by_service = {orjson.loads(m.value)["service"]: orjson.loads(m.value) for m in requests}
    assert set(by_service) == set(services.values()), worker_run.log_tail()
    a, b, c = (by_service[services[n]]["request_id"] for n in "ABC")

    def cli(verb: str, request_id: str, identity: str, key: str) -> None:
        result = subprocess.run([ROLLGUARD, verb, request_id, "--as", identity, "--key",
                                 str(keys / f"{key}.key"), "--comment", "test"],
                                env=worker_run.env, cwd=REPO, capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stderr

    topic = worker_run.topic("rollback.approval-responses")
    now = time.time()
    forged = [
        # unknown approver: mallory signs with her own key but is not in approvers.yaml
        (services["A"], _signed_response(keys / "mallory.key", request_id=a,
                                         approver="user:mallory", decision="approve", ts=now,
                                         service=services["A"])),
        # missing role: bob is a known approver, but only a viewer
        (services["A"], _signed_response(keys / "bob.key", request_id=a, approver="user:bob",
                                         decision="approve", ts=now, service=services["A"])),
        # bad signature: claims to be alice, signed by mallory
        (services["A"], _signed_response(keys / "mallory.key", request_id=a,
                                         approver="user:alice", decision="approve", ts=now,
                                         service=services["A"])),
        # self-approval: the identity that deployed approves its own rollback
        (services["A"], _signed_response(keys / "deployer.key", request_id=a,
                                         approver="svc:ci-deployer", decision="approve", ts=now,
                                         service=services["A"])),
        # late: C's request expired a minute after it was raised
        (services["C"], _signed_response(keys / "alice.key", request_id=c,
                                         approver="user:alice", decision="approve", ts=now,
                                         service=services["C"])),
    ]
    for key, value in forged:
        await producer.send_and_wait(topic, value, key=key.encode())
    cli("approve", a, "user:alice", "alice")
    cli("deny", b, "user:alice", "alice")
    time.sleep(1)
    cli("approve", b, "user:alice", "alice")  # B was already denied
    # A replayed response: alice's approval of A, published a second time, byte for byte.
    responses = await consume(kafka_bootstrap, topic, len(forged) + 3, 30)
    alice_a = next(m for m in responses if orjson.loads(m.value)["request_id"] == a
                   and orjson.loads(m.value)["approver"] == "user:alice"
                   and verify_mapping(orjson.loads(m.value), load_public_key(keys / "alice.pub")))
    await producer.send_and_wait(topic, alice_a.value, key=alice_a.key)

    await consume(kafka_bootstrap, worker_run.topic("rollback.commands"), 1, 60)
    # Until every answer above is ruled on (each rejection and outcome below is decided), and
    # then until the worker has nothing more to publish: a second command would be there.
    decisions_topic = worker_run.topic("rollguard.decisions")
    deadline = time.monotonic() + 60
    while not _all_ruled([orjson.loads(m.value)
                          for m in await read_all(kafka_bootstrap, decisions_topic)]):
        if time.monotonic() > deadline:
            break  # the assertions below say which is missing
        await asyncio.sleep(0.5)
    await settled(worker_run)
    commands = await read_all(kafka_bootstrap, worker_run.topic("rollback.commands"))
    assert len(commands) == 1, commands
    command = orjson.loads(commands[0].value)
    assert command["authority"] == "approved:user:alice"
    assert command["service"] == services["A"]
    assert verify_mapping(command, load_public_key(keys / "gate.pub"))
    assert base64.b64decode(command["signature"])

    # 8 rejections (5 forged, replayed A, approve after deny, late C) and the outcomes.
    decisions = [orjson.loads(m.value) for m in await read_all(kafka_bootstrap, decisions_topic)]
    rejected = [d for d in decisions if "APPROVAL_REJECTED" in d["reasons"]]
    causes = {(d["evidence"]["approver"], d["evidence"]["cause"]) for d in rejected}
    text = "\n".join(f"{who}: {cause}" for who, cause in sorted(causes))
    for wanted, (who, cause) in zip(_ruled(decisions), RULINGS, strict=True):
        assert wanted, f"no rejection of {who} for {cause!r}:\n{text}"
    assert any("APPROVAL_EXPIRED" in d["reasons"] for d in decisions)
    assert any("DENIED" in d["reasons"] for d in decisions)
    assert any("APPROVED" in d["reasons"] for d in decisions)


# The rejections (the forged ones, the replayed A, approve after deny, late C): who, why.
RULINGS = [
    ("user:mallory", "unknown approver"),
    ("user:bob", "lacks role"),
    ("user:alice", "signature"),
    ("svc:ci-deployer", "self-approval"),
    ("user:alice", "already approved"),  # the replayed response
    ("user:alice", "already denied"),
    ("user:alice", "expired"),  # late, for C
]


def _ruled(decisions: list[dict[str, Any]]) -> list[bool]:
    """For each of RULINGS, whether a decision rejects that approver for that cause."""
    causes = {(d["evidence"]["approver"], d["evidence"]["cause"]) for d in decisions
              if "APPROVAL_REJECTED" in d["reasons"]}
    return [any(w == who and cause in c for w, c in causes) for who, cause in RULINGS]


def _all_ruled(decisions: list[dict[str, Any]]) -> bool:
    return all(_ruled(decisions)) and all(
        any(reason in d["reasons"] for d in decisions)
        for reason in ("APPROVAL_EXPIRED", "DENIED", "APPROVED"))
