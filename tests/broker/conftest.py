"""Fixtures for tests against the real broker: a `rollguard worker` subprocess per test run."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from rollguard.streams.settings import Settings, load_settings
from tests.broker.secure import SecureBroker, secure_broker_session

REPO = Path(__file__).resolve().parents[2]
ROLLGUARD = str(Path(sys.executable).with_name("rollguard"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerRun:
    """A `rollguard worker` started for one test, isolated by topic prefix and app id."""

    env: dict[str, str]
    prefix: str
    web_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def topic(self, name: str) -> str:
        return self.prefix + name

    def settings(self) -> Settings:
        """The run's settings as the test process sees them (prefix, broker)."""
        return load_settings(topic_prefix=self.prefix,
                             bootstrap_servers=self.env["ROLLGUARD_BOOTSTRAP_SERVERS"])

    def rollguard(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ROLLGUARD, *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start(self) -> None:
        handle = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen([ROLLGUARD, "worker"], cwd=REPO, env=self.env,
                                        stdout=handle, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get(self, path: str) -> bytes:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            body: bytes = response.read()
            return body

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError("worker exited:\n" + self.log_tail())
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("worker did not become healthy:\n" + self.log_tail())

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample on /metrics matching ``labels``."""
        total = 0.0
        for line in self.get("/metrics").decode().splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total



def worker_group(
    names: tuple[str, ...], bootstrap: str, run_id: str, log_dir: Path, **settings: str
) -> Iterator[tuple[WorkerRun, ...]]:
    """Workers of one app id and prefix (one per name, each with its own web port and log),
    topics created, not started; every one stopped afterwards. ``settings`` are more
    ``ROLLGUARD_*`` variables (e.g. ``ROLLGUARD_PARTITIONS="4"``)."""
    runs = []
    for name in names:
        port = free_port()
        env = dict(os.environ)
        env.update(
            ROLLGUARD_BOOTSTRAP_SERVERS=bootstrap,
            ROLLGUARD_TOPIC_PREFIX=run_id,
            ROLLGUARD_APP_ID=f"rollguard-{run_id.rstrip('.')}",
            ROLLGUARD_WEB_PORT=str(port),
            ROLLGUARD_LOG_LEVEL="INFO",
            ROLLGUARD_MAX_CLOCK_SKEW_SECONDS="1e10",  # generated scenarios lie in the past
            **settings,
        )
        runs.append(WorkerRun(env=env, prefix=run_id, web_port=port,
                              log_path=log_dir / f"worker-{name}.log"))
    created = runs[0].rollguard("topics", "create")
    assert created.returncode == 0, created.stderr
    try:
        yield tuple(runs)
    finally:
        for run in runs:
            run.stop()

@pytest.fixture
def worker_run(kafka_bootstrap: str, run_id: str, tmp_path: Path) -> Iterator[WorkerRun]:
    env = dict(os.environ)
    web_port = free_port()
    env.update(
        ROLLGUARD_BOOTSTRAP_SERVERS=kafka_bootstrap,
        ROLLGUARD_TOPIC_PREFIX=run_id,
        ROLLGUARD_APP_ID=f"rollguard-{run_id.rstrip('.')}",
        ROLLGUARD_PARTITIONS="2",
        ROLLGUARD_WEB_PORT=str(web_port),
        ROLLGUARD_LOG_LEVEL="INFO",
    )
    run = WorkerRun(env=env, prefix=run_id, web_port=web_port, log_path=tmp_path / "worker.log")
    created = run.rollguard("topics", "create")
    assert created.returncode == 0, created.stderr
    yield run
    run.stop()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=2_000_000)
    await client.start()
    yield client
    await client.stop()


async def consume(bootstrap: str, topic: str, count: int, timeout: float = 60.0, *,
                  committed: bool = True) -> list[Any]:
    """Read ``count`` messages from the start of ``topic`` (or fail after ``timeout``).

    ``committed`` reads as remediation executors do (``read_committed``): the worker publishes
    in transactions, and records of an aborted checkpoint must not count.
    """
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None,
                                isolation_level="read_committed" if committed
                                else "read_uncommitted")
    await consumer.start()
    messages: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(messages) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                messages.extend(records)
    finally:
        await consumer.stop()
    return messages


def loads(data: bytes) -> Any:
    return orjson.loads(data)


async def eventually(predicate: Any, timeout: float = 60.0, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    assert predicate()


@pytest.fixture(scope="session")
def secure_broker() -> Iterator[SecureBroker]:
    """The secured broker (SASL/SCRAM, ACLs enforced), started for the session if needed."""
    yield from secure_broker_session()
