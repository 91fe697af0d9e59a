"""The reference remediation executor: verifies rollback commands and runs each at most once.

It holds only the gate's *public* keys (a keyring: streams/keyring.py, so the gate key can
rotate). A command runs only if it is signed by the key its ``key_id`` names, that key is in
the keyring and not retired,
untampered, unexpired, inside the executor's scope, internally consistent, and was never run
before — a durable ledger (SQLite, fsync'd before the command starts) makes "at most once" hold
across restarts. Every execution and every rejection is reported on ``rollback.results`` and in
the log. Kafka delivery is at least once (offsets are committed after handling); the ledger
turns a redelivered command into an ``already executed`` rejection instead of a second run.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import shlex
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from rollguard.models.events import format_ts, parse_ts, stable_id
from rollguard.streams.keyring import Keyring, KeyringFollower
from rollguard.streams.settings import Settings

__all__ = ["ExecutorConfig", "Ledger", "check_command", "run_executor", "render_command"]

log = logging.getLogger("rollguard.executor")

_REQUIRED = ("command_id", "deployment_id", "service", "from_version", "to_version",
             "expires_at", "issued_at", "authority")


@dataclass(frozen=True)
class ExecutorConfig:
    exec_template: str
    keyring: Keyring
    ledger_path: Path
    scope: tuple[str, ...] = ("*",)  # service name patterns this executor may act on
    group_id: str = "rollguard-executor"
    timeout_seconds: float = 600.0
    name: str = "executor"
    keyring_file: Path | None = None
    """Re-read when it changes (a key rotation needs no restart); ``keyring`` is the start."""
    announce_rollbacks: bool = True
    """Also publish a CDEvents ``service.rolledback`` on ``deploys`` for each executed command."""


class Ledger:
    """Durable record of command ids already started, so none ever runs twice."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS executed (command_id TEXT PRIMARY KEY, "
            "started_at REAL NOT NULL, status TEXT NOT NULL, exit_code INTEGER)"
        )

    def claim(self, command_id: str, now: float) -> bool:
        """Record the start of ``command_id``; False if it was ever started before."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO executed (command_id, started_at, status) VALUES (?, ?, ?)",
            (command_id, now, "started"),
        )
        return cursor.rowcount == 1

    def finish(self, command_id: str, status: str, exit_code: int | None) -> None:
        self._db.execute("UPDATE executed SET status = ?, exit_code = ? WHERE command_id = ?",
                         (status, exit_code, command_id))

    def status(self, command_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM executed WHERE command_id = ?",
                               (command_id,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        self._db.close()


def check_command(
    data: Any, keyring: Keyring, now: float, scope: Sequence[str]
) -> str | None:
    """Why this command must not run, or None if it may. Pure except for the signature math."""
    if not isinstance(data, dict) or data.get("type") != "rollback_command":
        return "malformed: not a rollback_command record"
    missing = [field for field in _REQUIRED if not data.get(field)]
    if missing:
        return f"malformed: missing {', '.join(missing)}"
    unverified = keyring.problem(data, now)
    if unverified is not None:
        return unverified
    try:
        expires_at = parse_ts(data["expires_at"])
    except ValueError as err:
        return f"malformed: expires_at: {err}"
    if expires_at <= now:
        return f"expired at {data['expires_at']} ({now - expires_at:.0f} s ago)"
    service = str(data["service"])
    if not any(fnmatch.fnmatchcase(service, pattern) for pattern in scope):
        return f"out of scope: service {service!r} is not in this executor's scope {list(scope)}"
    if data["from_version"] == data["to_version"]:
        return "out of scope: from_version equals to_version"
    if data["command_id"] != stable_id("cmd", service, str(data["deployment_id"])):
        return "out of scope: command_id is not the one of its (service, deployment)"
    return None


def render_command(template: str, data: dict[str, Any]) -> list[str]:
    """Split the template like a shell would, then fill fields into each argument (no shell)."""
    fields = {k: str(data.get(k, "")) for k in ("service", "to_version", "from_version",
                                                 "deployment_id", "command_id")}
    return [part.format(**fields) for part in shlex.split(template)]


def _result(data: Any, status: str, reason: str, config: ExecutorConfig,
            exit_code: int | None = None, output: str = "") -> dict[str, Any]:
    record = data if isinstance(data, dict) else {}
    return {
        "type": "rollback_result",
        "command_id": record.get("command_id"),
        "deployment_id": record.get("deployment_id"),
        "service": record.get("service"),
        "to_version": record.get("to_version"),
        "status": status,  # executed | failed | rejected
        "reason": reason,
        "exit_code": exit_code,
        "output": output[-2000:],
        "executor": config.name,
        "ts": format_ts(time.time()),
    }


async def handle_command(raw: bytes, config: ExecutorConfig, ledger: Ledger) -> dict[str, Any]:
    """Verify one command and run it if allowed; return the result record to publish."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return _result(None, "rejected", f"malformed: not JSON ({err})", config)
    now = time.time()
    reason = check_command(data, config.keyring, now, config.scope)
    if reason is not None:
        return _result(data, "rejected", reason, config)
    if not ledger.claim(data["command_id"], now):
        previous = ledger.status(data["command_id"])
        return _result(data, "rejected", f"already executed (ledger status: {previous})", config)
    argv = render_command(config.exec_template, data)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await asyncio.wait_for(process.communicate(), config.timeout_seconds)
    except (OSError, TimeoutError) as err:
        ledger.finish(data["command_id"], "failed", None)
        return _result(data, "failed", f"could not run {argv[0]!r}: {err}", config)
    code = process.returncode if process.returncode is not None else -1
    status = "executed" if code == 0 else "failed"
    ledger.finish(data["command_id"], status, code)
    text = output.decode("utf-8", errors="replace")
    return _result(data, status, "ran" if code == 0 else f"exit status {code}", config, code, text)


class KeyringWatch:
    """Follows the keyring file (``KeyringFollower``): ``refresh`` gives the config with the
    file's current keys (plus the fixed ``--verify-key`` ones) when it changed, and keeps the
    last good keyring when the new file cannot be read."""

    def __init__(self, config: ExecutorConfig, fixed: Keyring) -> None:
        self.follower = KeyringFollower(fixed, config.keyring_file, initial=config.keyring)

    def refresh(self, config: ExecutorConfig) -> ExecutorConfig:
        keyring = self.follower.refresh()
        return config if keyring is None else replace(config, keyring=keyring)


async def _announce(producer: Any, settings: Settings, config: ExecutorConfig,
                    raw: bytes) -> None:
    """Report an executed rollback as a CDEvents ``service.rolledback`` (binary mode).

    The announcement is a courtesy to CD tooling, not part of the rollback: a broker that
    refuses it (on a secured cluster executors may write only ``rollback.results``, DESIGN §6,
    unless an administrator grants ``deploys`` on purpose: docs/security.md) is logged, and the
    executor goes on.
    """
    from aiokafka.errors import KafkaError

    from rollguard.streams.ingest.cdevents import rolledback_event

    command = orjson.loads(raw)
    headers, value = rolledback_event(command, f"rollguard-executor/{config.name}")
    try:
        await producer.send_and_wait(settings.topic("deploys"), value,
                                     key=str(command["service"]).encode(),
                                     headers=list(headers.items()))
    except KafkaError as err:
        log.warning("rollback of %s not announced on %s (%s); run with --no-cdevents, or grant "
                    "this executor WRITE on that topic", command.get("command_id"),
                    settings.topic("deploys"), type(err).__name__)


async def run_executor(settings: Settings, config: ExecutorConfig,
                       stop: asyncio.Event | None = None, fixed: Keyring | None = None) -> None:
    """Consume ``rollback.commands`` until ``stop`` is set (or forever). ``fixed``: the keys
    kept whatever the keyring file says (``--verify-key``)."""
    fixed = fixed if fixed is not None else Keyring()
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    stop = stop or asyncio.Event()
    ledger = Ledger(config.ledger_path)
    watch = KeyringWatch(config, fixed)
    options = settings.kafka_client_options()
    consumer = AIOKafkaConsumer(
        settings.topic("commands"), bootstrap_servers=settings.bootstrap_servers,
        group_id=config.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed",  # never act on a command of an aborted checkpoint
        **options,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                enable_idempotence=True, **options)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for partition, messages in batches.items():
                for message in messages:
                    config = watch.refresh(config)
                    result = await handle_command(message.value or b"", config, ledger)
                    log.info("%s", orjson.dumps(result).decode())
                    await producer.send_and_wait(
                        settings.topic("results"), orjson.dumps(result), key=message.key
                    )
                    if result["status"] == "executed" and config.announce_rollbacks:
                        await _announce(producer, settings, config, message.value or b"")
                    await consumer.commit({partition: message.offset + 1})
    finally:
        await consumer.stop()
        await producer.stop()
        ledger.close()
