"""`rollguard notify` against the real broker and a running worker (issue 13).

Forged requests written to the approvals topic by a plain client (unsigned, signed by a foreign
key, tampered copies of a genuine one) are posted to nobody: each is dead-lettered with its
original bytes and the reason it does not verify against the gate's key.

Two deployments need a human (payments: approval-only; a data-writes release). Alice approves
the first (after bob's answer is rejected for lack of role) and denies the second. A local HTTP
receiver fails the first two posts of every idempotency key: each request and each change must
still be accepted exactly once per key, in order per request. A webhook that hangs and then
fails ends in dead letters naming it, and meanwhile the worker's decision loop is not held: the
approval → command latency is printed as a figure (Kafka timestamps), not asserted.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer

from rollguard.models.events import ApprovalRequest
from rollguard.streams.keyring import Keyring
from rollguard.streams.notify import Notifier
from rollguard.streams.notify_config import NotifyConfig
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import (
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign_record,
)
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, shifted_to_now
from tests.broker.conftest import REPO, ROLLGUARD, WorkerRun, consume, eventually

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def approval_fleet() -> tuple[list[dict[str, Any]], list[str]]:
    """Events of two deployments that need approval, shifted to end now; their services."""
    events: list[dict[str, Any]] = []
    services: list[str] = []
    for scenario, seed in (("approval-only-service", 1), ("data-writes", 3)):
        generated = list(generate(scenario, seed).events)
        service = next(e["service"] for e in generated if e["type"] == "deploy")
        services.append(service)
        events.extend(e for e in generated if not services[:-1] or e["service"] == service)
    return shifted_to_now(sorted(events, key=lambda e: e["ts"]), time.time()), services


def approvers(tmp_path: Path) -> dict[str, Path]:
    keys = tmp_path / "keys"
    for name in ("gate", "alice", "bob", "mallory"):
        generate_key_pair(keys, name)
    document = {"approvers": {
        "user:alice": {"roles": ["sre-oncall"], "public_key": (keys / "alice.pub").read_text()},
        "user:bob": {"roles": ["viewer"], "public_key": (keys / "bob.pub").read_text()}}}
    (tmp_path / "approvers.yaml").write_text(yaml.safe_dump(document))
    return {"keys": keys, "approvers": tmp_path / "approvers.yaml"}


class Receiver:
    """Fails the first ``failures`` posts of each idempotency key on /flaky; /dead hangs."""

    def __init__(self, failures: int = 2) -> None:
        self.failures = failures
        self.tries: Counter[str] = Counter()
        self.accepted: list[dict[str, Any]] = []
        self.dead_tries = 0

    async def flaky(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        body = await request.json()
        assert body["idempotency_key"] == key
        self.tries[key] += 1
        if self.tries[key] <= self.failures:
            return web.Response(status=503)
        self.accepted.append(body)
        return web.Response(status=200)

    async def dead(self, request: web.Request) -> web.Response:
        self.dead_tries += 1
        await asyncio.sleep(2.0)  # longer than the webhook's timeout
        return web.Response(status=503)


FORGED_WHY = {"unsigned": "unsigned: no signature",
              "foreign key": "is not in the keyring",
              "tampered copy": "tampered, or signed by another key",
              "tampered, new id": "tampered, or signed by another key"}


def forgeries(payments: dict[str, Any], writes: dict[str, Any],
              foreign_key: Path) -> dict[str, bytes]:
    """Requests a plain client could write, built from the genuine ones."""
    unsigned = {**payments, "request_id": "apr-forged-unsigned", "signature": "", "key_id": ""}
    foreign = record_to_dict(sign_record(ApprovalRequest.model_validate(
        {**payments, "request_id": "apr-forged-foreign"}), load_private_key(foreign_key)))
    return {"unsigned": orjson.dumps(unsigned),
            "foreign key": orjson.dumps(foreign),
            "tampered copy": orjson.dumps({**writes, "to_version": "v0.0.1-evil"}),
            "tampered, new id": orjson.dumps({**payments, "request_id": "apr-forged-tampered"})}


async def test_every_change_arrives_once_per_key_and_a_dead_webhook_is_dead_lettered(
        worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str,
        tmp_path: Path) -> None:
    people = approvers(tmp_path)
    worker_run.env.update(ROLLGUARD_APPROVERS=str(people["approvers"]),
                          ROLLGUARD_SIGNING_KEY=str(people["keys"] / "gate.key"),
                          ROLLGUARD_VERIFY_KEY=str(people["keys"] / "gate.pub"),
                          ROLLGUARD_IDLE_ADVANCE_SECONDS="2")
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/flaky", receiver.flaky)
    app.router.add_post("/dead", receiver.dead)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    events, (payments, writes) = approval_fleet()
    config = NotifyConfig.model_validate({
        "webhooks": [{"name": "everything", "url": f"http://127.0.0.1:{port}/flaky"},
                     {"name": "broken-pager", "url": f"http://127.0.0.1:{port}/dead",
                      "services": [payments]}],
        "retry": {"attempts": 4, "initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2,
                  "timeout_seconds": 0.5}})
    settings = worker_run.settings()
    keyring = Keyring.of(load_public_key(people["keys"] / "gate.pub"))
    notifier = Notifier(settings, config, f"{worker_run.prefix}notify", keyring)
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.run(stop))
    try:
        worker_run.start()
        worker_run.wait_healthy()
        await send_events(producer, events, settings)
        raised = await consume(kafka_bootstrap, worker_run.topic("rollback.approvals"), 2, 120)
        ids = {orjson.loads(m.value)["service"]: orjson.loads(m.value)["request_id"]
               for m in raised}
        assert set(ids) == {payments, writes}, worker_run.log_tail()
        genuine = {orjson.loads(m.value)["service"]: orjson.loads(m.value) for m in raised}
        await eventually(lambda: {(b["request_id"], b["state"]) for b in receiver.accepted}
                         >= {(ids[payments], "requested"), (ids[writes], "requested")},
                         timeout=60)
        forged = forgeries(genuine[payments], genuine[writes], people["keys"] / "mallory.key")
        for value in forged.values():
            await producer.send_and_wait(worker_run.topic("rollback.approvals"), value,
                                         key=payments.encode())

        def answer(verb: str, service: str, who: str) -> None:
            result = worker_run.rollguard(verb, ids[service], "--as", f"user:{who}", "--key",
                                          str(people["keys"] / f"{who}.key"), "--service",
                                          service, timeout=60)
            assert result.returncode == 0, result.stderr

        # What the on-call engineer sees first: the pending requests, then one's evidence.
        listed = await asyncio.to_thread(worker_run.rollguard, "approvals", "list")
        assert listed.returncode == 0, listed.stderr
        assert all(ids[s] in listed.stdout and s in listed.stdout for s in ids), listed.stdout
        shown = await asyncio.to_thread(worker_run.rollguard, "approvals", "show", ids[payments])
        assert shown.returncode == 0, shown.stderr
        for text in ("POLICY_REQUIRES_APPROVAL", "never rolls back without a human",
                     "error_rate", "BREACH", "baseline",
                     f"rollguard approve {ids[payments]} --service {payments}"):
            assert text in shown.stdout, (text, shown.stdout)
        missing = await asyncio.to_thread(worker_run.rollguard, "approvals", "show", "apr-nope")
        assert missing.returncode == 1 and "not found" in missing.stderr

        await asyncio.to_thread(answer, "approve", payments, "bob")  # lacks the role
        await asyncio.sleep(1.0)
        await asyncio.to_thread(answer, "approve", payments, "alice")
        await asyncio.to_thread(answer, "deny", writes, "alice")

        def keys_of(rid: str) -> list[str]:
            return [b["idempotency_key"].split("/")[1] for b in receiver.accepted
                    if b["request_id"] == rid]

        await eventually(lambda: keys_of(ids[payments])[-1:] == ["approved"]
                         and keys_of(ids[writes])[-1:] == ["denied"], timeout=120)
        assert keys_of(ids[payments]) == ["requested", "rejected", "approved"]
        assert keys_of(ids[writes]) == ["requested", "denied"]
        keys = [b["idempotency_key"] for b in receiver.accepted]
        assert len(keys) == len(set(keys)), keys  # exactly once per key
        assert all(receiver.tries[k] == receiver.failures + 1 for k in keys)
        rejected = next(b for b in receiver.accepted if b["state"] == "rejected")
        assert rejected["approver"] == "user:bob" and "lacks role" in rejected["detail"]

        letters = await consume(kafka_bootstrap, worker_run.topic("rollguard.dead-letters"),
                                3 + len(forged), 60)
        ours = [orjson.loads(m.value) for m in letters
                if orjson.loads(m.value)["error"].startswith("notify webhook broken-pager")]
        assert len(ours) == 3, [orjson.loads(m.value)["error"] for m in letters]
        # No forged request reached anyone; each is a dead letter with its bytes and why.
        posted = {b["request_id"] for b in receiver.accepted}
        assert posted == {ids[payments], ids[writes]}, posted
        refused = {base64.b64decode(d["value_b64"]): d["error"] for d in
                   (orjson.loads(m.value) for m in letters)
                   if d["error"].startswith("approval request")}
        assert set(refused) == set(forged.values()), list(refused.values())
        for name, value in forged.items():
            assert "not notified: cannot be verified" in refused[value], refused[value]
            assert FORGED_WHY[name] in refused[value], (name, refused[value])
        assert len(notifier.refused) == len(forged) == notifier.book.refused_total
        assert all("after 4 tries" in d["error"] for d in ours)
        bodies = [orjson.loads(base64.b64decode(d["value_b64"])) for d in ours]
        assert [b["state"] for b in bodies] == ["requested", "rejected", "approved"]
        assert receiver.dead_tries == 12

        # The figure: approval response → rollback command, while the pager webhook hung.
        responses = await consume(kafka_bootstrap,
                                  worker_run.topic("rollback.approval-responses"), 3, 30)
        commands = await consume(kafka_bootstrap, worker_run.topic("rollback.commands"), 1, 30)
        approved_at = max(m.timestamp for m in responses
                          if orjson.loads(m.value)["approver"] == "user:alice"
                          and orjson.loads(m.value)["decision"] == "approve")
        print(f"\nFIGURE approval→command latency {commands[0].timestamp - approved_at} ms "
              f"while the broken webhook took {receiver.dead_tries} tries of 0.5 s timeout")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await runner.cleanup()
    # A restarted notifier resumes after the committed offsets: nothing is posted again.
    # A new group treats what is already on the topics as history: it reads it, posts nothing.
    before = len(receiver.accepted) + receiver.dead_tries
    for group in ("notify", "notify-new"):
        stop = asyncio.Event()
        again = Notifier(settings, config, f"{worker_run.prefix}{group}", keyring)
        task = asyncio.create_task(again.run(stop))
        await eventually(lambda: len(again.book.requests) == 2, timeout=30)  # noqa: B023
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, 30)
        assert again.deliveries == [], (group, again.deliveries)
    assert len(receiver.accepted) + receiver.dead_tries == before


def test_notify_refuses_bad_config(tmp_path: Path) -> None:
    (tmp_path / "notify.yaml").write_text("webhooks: [{name: a, url: nope}]\n")
    result = subprocess.run([ROLLGUARD, "notify", "--config", str(tmp_path / "notify.yaml")],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "notify.yaml: webhooks.0.url" in result.stderr
