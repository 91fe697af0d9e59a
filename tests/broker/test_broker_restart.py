"""A broker restart mid-scenario: the worker reconnects by itself and decides as replay does.

The shared broker on 9092 is never touched: this module starts its own (``scripts/kafka.sh``
with ``KAFKA_PORT``, its own data dir ``.cache/kafka/run-PORT``) for its two cases, each of
which stops and starts it in the middle of a bad deploy — after the first breaching window,
before the rollback — and removes it at the end. The worker must come back on its own (the
engine restarts from its last checkpoint on Kafka errors), then decide the rest exactly as
replay of the whole timeline does.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events
from tests.broker.conftest import REPO, WorkerRun, free_port
from tests.broker.worker_io import (
    assert_equal_to_replay,
    assert_one_command_per_deployment,
    decision,
    log_size,
    log_text,
    metric,
    output_index,
    replay,
    role,
    scenario_timeline,
    until,
    wait_processed,
    wait_role,
    worker_outputs,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(400)]

SEED = 3
KAFKA_HOME = Path(os.environ.get("ROLLGUARD_KAFKA_HOME", REPO / ".cache" / "kafka"))


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _broker_port() -> int:
    """A client port P with P+1 (the controller's) free too, below the ephemeral range (a
    client's outgoing connection must not take the port while the broker is down), and no
    data dir of another broker on it."""
    for _ in range(200):
        port = random.randrange(20000, 31000, 2)
        if (_bindable(port) and _bindable(port + 1)
                and not (KAFKA_HOME / f"run-{port}").exists()):
            return port
    raise AssertionError("no free pair of ports for a broker")


class Broker:
    """scripts/kafka.sh on its own port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.run_dir = KAFKA_HOME / f"run-{port}"

    def kafka(self, verb: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KAFKA_PORT": str(self.port)}
        return subprocess.run([str(REPO / "scripts" / "kafka.sh"), verb], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=240, check=False)

    def start(self) -> float:
        started = time.monotonic()
        result = self.kafka("start")
        assert result.returncode == 0, f"kafka.sh start on {self.port}:\n{result.stderr}"
        return time.monotonic() - started

    def stop(self) -> float:
        started = time.monotonic()
        result = self.kafka("stop")
        assert result.returncode == 0, f"kafka.sh stop on {self.port}:\n{result.stderr}"
        return time.monotonic() - started


@pytest.fixture(scope="module")
def module_broker(kafka_bootstrap: str) -> Iterator[Broker]:
    """A broker of this module's own (kafka_bootstrap: only where broker tests may run), shared
    by its tests (each isolated by its topic prefix and app id) and removed at the end."""
    broker = Broker(_broker_port())
    try:
        yield broker
    finally:
        broker.kafka("stop")
        shutil.rmtree(broker.run_dir, ignore_errors=True)


@pytest.fixture
def own_broker(module_broker: Broker) -> Broker:
    """The module's broker, running (started again if a test before left it stopped)."""
    result = module_broker.kafka("start")  # idempotent: a running broker is left as it is
    if result.returncode != 0:
        message = f"cannot start a broker on {module_broker.port}:\n{result.stderr[-2000:]}"
        if os.environ.get("ROLLGUARD_REQUIRE_BROKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return module_broker


@pytest.fixture
def own_worker(own_broker: Broker, run_id: str, tmp_path: Path) -> Iterator[WorkerRun]:
    env = dict(os.environ)
    web_port = free_port()
    env.update(
        ROLLGUARD_BOOTSTRAP_SERVERS=own_broker.bootstrap,
        ROLLGUARD_TOPIC_PREFIX=run_id,
        ROLLGUARD_APP_ID=f"rollguard-{run_id.rstrip('.')}",
        ROLLGUARD_PARTITIONS="2",
        ROLLGUARD_WEB_PORT=str(web_port),
        ROLLGUARD_LOG_LEVEL="INFO",
        ROLLGUARD_MAX_CLOCK_SKEW_SECONDS="1e10",  # generated scenarios lie in the past
    )
    run = WorkerRun(env=env, prefix=run_id, web_port=web_port, log_path=tmp_path / "worker.log")
    created = run.rollguard("topics", "create")
    assert created.returncode == 0, created.stderr
    try:
        yield run
    finally:
        run.stop()


async def _publish(bootstrap: str, run: WorkerRun, events: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await send_events(producer, events, run.settings())
    finally:
        await producer.stop()


@pytest.mark.parametrize("outage", ["brief", "until-noticed"])
async def test_worker_survives_a_broker_restart(own_broker: Broker, own_worker: WorkerRun,
                                                tmp_path: Path, outage: str) -> None:
    """'brief': the broker is started again at once (its clients reconnect on their own);
    'until-noticed': it stays down until the engine's look-up of the end offsets times out
    (the request timeout, 40 s) and the engine restarts, failing to reconnect until it is up."""
    run = own_worker
    events = scenario_timeline(["fleet-wide", "bad-deploy"], SEED)
    deployment = next(iter(generate("bad-deploy", SEED).labels))
    watch = output_index(events, decision(deployment, "watch"))
    act = output_index(events, decision(deployment, "auto_rollback"))
    cut = watch + 1 + (act - watch - 1) // 2  # after the first breaching window, before the act
    expected = replay(events)

    started = time.monotonic()
    run.start()
    run.wait_healthy()
    await wait_role(run, "leader")
    await _publish(own_broker.bootstrap, run, events[:cut])
    await wait_processed(run, cut)

    since = log_size(run)
    down = own_broker.stop()
    await until(lambda: "Connect call failed" in log_text(run, since), 60,
                "the worker to see the broker gone", run)
    if outage == "until-noticed":
        await until(lambda: role(run) == "recovering", 120, "the engine to give up", run)
    up = own_broker.start()
    assert run.alive(), run.log_tail(40)
    await wait_role(run, "leader", timeout=120)
    restarts = metric(run, "rollguard_engine_restarts_total")
    if outage == "until-noticed":
        assert restarts >= 1
        assert "restarting from the last checkpoint" in log_text(run, since)

    await _publish(own_broker.bootstrap, run, events[cut:])
    got = await worker_outputs(own_broker.bootstrap, expected, run, timeout=180)
    assert_equal_to_replay(got, expected, run, tmp_path=tmp_path)
    assert await assert_one_command_per_deployment(own_broker.bootstrap, run) == {deployment: 1}
    assert run.alive(), run.log_tail(40)
    print(f"{outage}: broker stopped in {down:.1f} s, started in {up:.1f} s; engine restarts "
          f"{restarts:.0f}; {len(got)} records as replay, in {time.monotonic() - started:.1f} s")
