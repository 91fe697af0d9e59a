"""Least-privilege ACLs on the secured broker (DESIGN §6, docs/security.md).

The administrator creates the topics and applies `rollguard acls --apply` for the shipped
principal mapping. Then every role does its job in the demo flow, each as its own SCRAM user:
the producer publishes a deploy that needs a human, the gate (the worker) asks for approval,
the approver answers with `rollguard approve`, the gate signs the command, the executor runs it
and reports, the analyst exports. The gate runs in the worker mode (two slots over the two input
partitions: its slot transactional ids and the fleet topic under the same ACLs; the single
leader's `{app_id}-engine` is refused to the other roles as well). And every write a role has
no business doing is refused by the broker with its authorization error, with nothing appended
to the topic; so is every read outside the role, the gate's transactional id and its leader
group.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from rollguard.streams.settings import load_settings
from rollguard.streams.signing import generate_key_pair, load_public_key, verify_mapping
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, shifted_to_now
from tests.broker.conftest import REPO, ROLLGUARD, WorkerRun, free_port
from tests.broker.secure import SecureBroker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

ROLES = ("gate", "executor", "approver", "producer", "analyst", "notifier", "console")
PUBLIC = ("deploys", "telemetry.metrics", "telemetry.alerts", "otlp_metrics",
          "rollback.approval-responses",
          "rollback.commands", "rollback.approvals", "release.verdicts", "rollguard.decisions",
          "rollguard.dead-letters", "rollback.results")
STATE, LEADER, FLEET = "<app>-state-changelog", "<app>-leader", "<app>-fleet"
# What each role may write, written out here (not derived from streams.acls) so that a change
# to the ACL set that widens a write fails this test.
MAY_WRITE = {
    "gate": {"rollback.commands", "rollback.approvals", "release.verdicts",
             "rollguard.decisions", "rollguard.dead-letters", STATE},
    "executor": {"rollback.results"},
    "approver": {"rollback.approval-responses"},
    "producer": {"deploys", "telemetry.metrics", "telemetry.alerts", "otlp_metrics"},
    "analyst": set(),
    "notifier": {"rollguard.dead-letters"},
    "console": {"rollback.approval-responses"},
}
MAY_READ = {
    "gate": {"deploys", "telemetry.metrics", "telemetry.alerts", "otlp_metrics",
             "rollback.approval-responses", STATE, LEADER},
    "executor": {"rollback.commands"},
    "approver": {"rollback.approvals"},
    "producer": set(),
    "analyst": set(PUBLIC),
    "notifier": {"rollback.approvals", "rollguard.decisions"},
    "console": {"rollback.approvals", "rollguard.decisions"},
}
FORBIDDEN = [(role, topic) for role in ROLES for topic in (*PUBLIC, STATE, LEADER)
             if topic not in MAY_WRITE[role]]
FORBIDDEN_READS = [(role, topic) for role in ROLES for topic in (*PUBLIC, STATE, LEADER)
                   if topic not in MAY_READ[role]]
# Writes the tests make themselves (the gate's are made by the worker in the demo flow).
ALLOWED = [(role, topic) for role in ROLES if role != "gate" for topic in sorted(MAY_WRITE[role])]


@dataclass(frozen=True)
class Secured:
    """One isolated rollguard installation on the secured broker, ACLs applied."""

    broker: SecureBroker
    prefix: str
    app_id: str
    acls_stdout: str

    def name(self, topic: str) -> str:
        return topic.replace("<app>", self.app_id) if topic.startswith("<app>") \
            else self.prefix + topic

    def env(self, user: str) -> dict[str, str]:
        env = self.broker.env(user)
        env.update(ROLLGUARD_TOPIC_PREFIX=self.prefix, ROLLGUARD_APP_ID=self.app_id,
                   ROLLGUARD_PARTITIONS="2", ROLLGUARD_SCALE_OUT_SLOTS="2",
                   ROLLGUARD_PRINCIPALS=str(
                       REPO / "config" / "principals.yaml"))
        return env

    def rollguard(self, user: str, *args: str, env: dict[str, str] | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ROLLGUARD, *args], cwd=REPO, env=env or self.env(user),
                              capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def secured(secure_broker: SecureBroker) -> Iterator[Secured]:
    run = uuid.uuid4().hex[:10]
    setup = Secured(secure_broker, prefix=f"s{run}.", app_id=f"rg-s{run}", acls_stdout="")
    created = setup.rollguard("admin", "topics", "create")
    assert created.returncode == 0, created.stderr
    applied = setup.rollguard("admin", "acls", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert " created, 0 already present" in applied.stderr, applied.stderr
    yield Secured(secure_broker, setup.prefix, setup.app_id, applied.stdout)


async def _read(secured: Secured, user: str, topic: str, count: int,
                timeout: float) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(secured.name(topic), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed",
                                **secured.broker.client_options(user))
    await consumer.start()
    values: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(values) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(orjson.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return values


def test_acls_output_names_this_installations_resources(secured: Secured) -> None:
    printed = secured.acls_stdout
    assert f"User:gate      ALLOW  WRITE  TRANSACTIONAL_ID  PREFIXED  {secured.app_id}-engine" \
        in printed
    names = {line.split()[-1] for line in printed.splitlines()
             if not line.startswith("#") and line.split()[3] == "TOPIC"}
    assert names == {secured.name(t) for t in (*PUBLIC, STATE, LEADER, FLEET)}


async def test_every_role_does_its_job(secured: Secured, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    for name in ("gate", "alice"):
        generate_key_pair(keys, name)
    (tmp_path / "approvers.yaml").write_text(yaml.safe_dump({"approvers": {
        "user:alice": {"roles": ["sre-oncall"], "public_key": (keys / "alice.pub").read_text()},
    }}))
    worker_env = secured.env("gate")
    web_port = free_port()
    worker_env.update(ROLLGUARD_SIGNING_KEY=str(keys / "gate.key"),
                      ROLLGUARD_APPROVERS=str(tmp_path / "approvers.yaml"),
                      ROLLGUARD_IDLE_ADVANCE_SECONDS="2", ROLLGUARD_WEB_PORT=str(web_port))
    worker = WorkerRun(env=worker_env, prefix=secured.prefix, web_port=web_port,
                       log_path=tmp_path / "worker.log")
    script = tmp_path / "rollback.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')\n")
    marker = tmp_path / "executed.txt"
    executor_log = open(tmp_path / "executor.log", "ab")  # noqa: SIM115 - owned by the process
    executor = subprocess.Popen(
        [ROLLGUARD, "executor", "--exec", f"{sys.executable} {script} {marker} {{service}} "
         "{to_version}", "--verify-key", str(keys / "gate.pub"),
         "--ledger", str(tmp_path / "ledger.db")],
        env=secured.env("executor"), cwd=REPO, stdout=executor_log, stderr=subprocess.STDOUT)
    worker.start()
    try:
        worker.wait_healthy()
        # The producer: a payments deploy (auto_rollback: false) that breaches → approval.
        events = shifted_to_now(list(generate("approval-only-service", 1).events), time.time())
        producer = AIOKafkaProducer(enable_idempotence=True,
                                    **secured.broker.client_options("producer"))
        await producer.start()
        try:
            await send_events(producer, events, load_settings(topic_prefix=secured.prefix))
        finally:
            await producer.stop()

        # The approver reads the request and answers it with `rollguard approve`.
        requests = await _read(secured, "approver", "rollback.approvals", 1, 120)
        assert requests, worker.log_tail()
        request_id = requests[0]["request_id"]
        approved = secured.rollguard("approver", "approve", request_id, "--as", "user:alice",
                                     "--key", str(keys / "alice.key"),
                                     "--verify-key", str(keys / "gate.pub"))
        assert approved.returncode == 0, approved.stderr

        # The gate signs the command; the executor runs it and reports; the analyst sees both.
        results = await _read(secured, "analyst", "rollback.results", 1, 90)
        assert results, (tmp_path / "executor.log").read_text()[-2000:] + worker.log_tail()
        assert results[0]["status"] == "executed", results
        commands = await _read(secured, "analyst", "rollback.commands", 1, 10)
        assert commands[0]["authority"] == "approved:user:alice"
        assert verify_mapping(commands[0], load_public_key(keys / "gate.pub"))
        assert marker.read_text().split() == [commands[0]["service"], commands[0]["to_version"]]
        decisions = await _read(secured, "analyst", "rollguard.decisions", 10_000, 5)
        assert any("APPROVED" in d["reasons"] for d in decisions), decisions
        # The analyst's tools read as the analyst: a replay file of the inputs (the events and
        # alice's approval).
        exported = secured.rollguard("analyst", "export", "--out", str(tmp_path / "x.jsonl"))
        assert exported.returncode == 0, exported.stderr
        assert len((tmp_path / "x.jsonl").read_bytes().splitlines()) == len(events) + 1
        assert "engine stopped" not in worker.log_tail(1000), worker.log_tail()
        for slot in (0, 1):  # the worker mode, each slot under the gate's ACLs
            assert f"slot {slot} leads input partitions" in worker.log_tail(1000)
    finally:
        worker.stop()
        executor.terminate()
        executor.wait(timeout=30)
        executor_log.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def producers(secured: Secured) -> AsyncIterator[dict[str, AIOKafkaProducer]]:
    """One authenticated producer per role, reused by every write case."""
    # Not idempotent: an analyst may write nowhere, so it may not even get a producer id.
    clients = {role: AIOKafkaProducer(**secured.broker.client_options(role)) for role in ROLES}
    for client in clients.values():
        await client.start()
    yield clients
    for client in clients.values():
        await client.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def offsets(secured: Secured) -> AsyncIterator[Any]:
    """End offsets of a topic as the administrator sees them: (partition → end)."""
    options = secured.broker.client_options("admin")
    admin = AIOKafkaAdminClient(**options)
    consumer = AIOKafkaConsumer(group_id=None, **options)
    await admin.start()
    await consumer.start()

    async def ends(topic: str) -> dict[int, int]:
        name = secured.name(topic)
        [described] = await admin.describe_topics([name])
        assert described["error_code"] == 0 and described["partitions"], described
        found = await consumer.end_offsets(
            [TopicPartition(name, p["partition"]) for p in described["partitions"]])
        return {tp.partition: end for tp, end in found.items()}

    yield ends
    await consumer.stop()
    await admin.close()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("role", "topic"), FORBIDDEN, ids=[f"{r}->{t}" for r, t in FORBIDDEN])
async def test_forbidden_write_is_refused(secured: Secured, producers: dict[str, Any],
                                          offsets: Any, role: str, topic: str) -> None:
    before = await offsets(topic)
    with pytest.raises(TopicAuthorizationFailedError):
        await producers[role].send_and_wait(secured.name(topic), b'{"type": "forged"}',
                                            key=b"checkout")
    assert await offsets(topic) == before


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("role", "topic"), ALLOWED, ids=[f"{r}->{t}" for r, t in ALLOWED])
async def test_allowed_write_lands(secured: Secured, producers: dict[str, Any], offsets: Any,
                                   role: str, topic: str) -> None:
    # The control for the refusals above: same clients, same topics, the right principal.
    before = sum((await offsets(topic)).values())
    await producers[role].send_and_wait(secured.name(topic), b"{}", key=b"acl-control")
    assert sum((await offsets(topic)).values()) == before + 1


@pytest.mark.parametrize(("role", "topic"), FORBIDDEN_READS,
                         ids=[f"{r}<-{t}" for r, t in FORBIDDEN_READS])
async def test_forbidden_read_is_refused(secured: Secured, role: str, topic: str) -> None:
    # The allowed reads are the demo flow's (each role reads as itself there).
    consumer = AIOKafkaConsumer(secured.name(topic), group_id=None,
                                auto_offset_reset="earliest",
                                **secured.broker.client_options(role))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await consumer.start()
            await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("port_offset", "user", "password"),
    [
        (0, None, None),  # no SASL on the client port
        (0, "gate", "not-the-password"),  # a wrong password
        (1, None, None),  # the controller port: no SASL
        (1, "gate", None),  # ... and only the admin's static PLAIN entry
    ],
)
async def test_unauthenticated_clients_are_refused(secured: Secured, port_offset: int,
                                                   user: str | None,
                                                   password: str | None) -> None:
    host, _, port = secured.broker.bootstrap.rpartition(":")
    options: dict[str, Any] = {}
    if user is not None:
        options = {"security_protocol": "SASL_PLAINTEXT", "sasl_plain_username": user,
                   "sasl_mechanism": secured.broker.mechanism if port_offset == 0 else "PLAIN",
                   "sasl_plain_password": password or secured.broker.passwords[user]}
    admin = AIOKafkaAdminClient(bootstrap_servers=f"{host}:{int(port) + port_offset}",
                                request_timeout_ms=5000, **options)
    try:
        with pytest.raises(KafkaConnectionError):
            await admin.start()
    finally:
        await admin.close()


@pytest.mark.parametrize("suffix", ["", "-1"])
@pytest.mark.parametrize("role", [r for r in ROLES if r != "gate"])
async def test_only_the_gate_uses_its_transactional_id(secured: Secured, role: str,
                                                       suffix: str) -> None:
    # InitProducerId with the gate's id (the leader's, a slot's) would fence the gate: refused.
    producer = AIOKafkaProducer(transactional_id=f"{secured.app_id}-engine{suffix}",
                                **secured.broker.client_options(role))
    try:
        with pytest.raises(TransactionalIdAuthorizationFailed):
            await producer.start()
    finally:
        await producer.stop()


@pytest.mark.parametrize("role", ["executor", "analyst"])
async def test_only_the_gate_joins_the_leader_group(secured: Secured, role: str) -> None:
    # A member of the group app_id could take the leader lease from the gate: refused.
    readable = "rollback.commands"  # both roles may read it; the group is what is refused
    consumer = AIOKafkaConsumer(secured.name(readable), group_id=secured.app_id,
                                **secured.broker.client_options(role))
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()  # joins the group (aiokafka 0.14), or else the first fetch
            await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()


def test_apply_reports_other_grants_and_prunes_its_own(secured: Secured) -> None:
    from confluent_kafka.admin import AclBinding, AclBindingFilter, AdminClient

    admin = AdminClient({"bootstrap.servers": secured.broker.bootstrap,
                         "security.protocol": "sasl_plaintext",
                         "sasl.mechanism": secured.broker.mechanism, "sasl.username": "admin",
                         "sasl.password": secured.broker.passwords["admin"]})
    commands = secured.name("rollback.commands")
    # A grant by hand on one of rollguard's topics, and a broad one that reaches all of them.
    rogue = AclBinding("TOPIC", commands, "LITERAL", "User:mallory", "*", "WRITE", "ALLOW")
    broad = AclBinding("TOPIC", secured.prefix, "PREFIXED", "User:analyst", "*", "WRITE", "ALLOW")
    for future in admin.create_acls([rogue, broad]).values():
        future.result()
    try:
        listed = secured.rollguard("admin", "acls", "--apply")
        assert listed.returncode == 0, listed.stderr
        assert f"also allowed (--prune deletes it): User:mallory  ALLOW  WRITE  TOPIC  LITERAL  " \
            f"{commands}" in listed.stderr
        assert "0 created, 46 already present, 2 other ALLOW ACLs" in listed.stderr
        pruned = secured.rollguard("admin", "acls", "--apply", "--prune")
        assert pruned.returncode == 0, pruned.stderr
        assert f"deleted: User:mallory  ALLOW  WRITE  TOPIC  LITERAL  {commands}" \
            in pruned.stderr, pruned.stderr
        assert f"kept (it reaches resources beyond this installation; delete it by hand): " \
            f"User:analyst  ALLOW  WRITE  TOPIC  PREFIXED  {secured.prefix}" in pruned.stderr
        left = admin.describe_acls(AclBindingFilter("TOPIC", commands, "LITERAL", None, None,
                                                    "ANY", "ANY")).result()
        assert {(b.principal, b.operation.name) for b in left} == {
            ("User:gate", "WRITE"), ("User:executor", "READ"), ("User:analyst", "READ")}
    finally:
        for future in admin.delete_acls([AclBindingFilter(
                "TOPIC", secured.prefix, "PREFIXED", "User:analyst", "*", "WRITE", "ALLOW")
        ]).values():
            future.result()
