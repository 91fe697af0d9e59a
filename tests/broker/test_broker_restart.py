"""A broker restart mid-scenario: the worker reconnects and decides as replay does."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.replay import replay_to_bytes
from streams.settings import load_policy
from streams.simulate import generate
from streams.simulate_io import send_events
from tests.broker.conftest import REPO, WorkerRun, consume, eventually

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(400),
    pytest.mark.skip(reason="faust-streaming issue 523: after the broker returns, the consumer "
                     "rejoins but fetches nothing; needs the persisted state of issue 4 so that a "
                     "stalled worker can exit and resume"),
]



def _kafka(verb: str) -> None:
    result = subprocess.run([str(REPO / "scripts" / "kafka.sh"), verb], cwd=REPO,
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr


def _canonical(records: list[bytes]) -> Counter[bytes]:
    return Counter(orjson.dumps(orjson.loads(r), option=orjson.OPT_SORT_KEYS) for r in records)


async def _publish(producer: AIOKafkaProducer, run: WorkerRun, events: list[dict]) -> None:
    await send_events(producer, events, run.settings())


async def test_worker_survives_a_broker_restart(worker_run: WorkerRun, kafka_bootstrap: str,
                                                tmp_path: Path) -> None:
    events = list(generate("approval-superseded", 4).events)
    policy = load_policy(REPO / "config" / "policy.yaml")
    expected = list(replay_to_bytes((orjson.dumps(e) for e in events), policy))
    half = len(events) * 2 // 3  # past the deploy, before the decisions

    worker_run.env["ROLLGUARD_MAX_CLOCK_SKEW_SECONDS"] = "1e10"
    worker_run.start()
    worker_run.wait_healthy()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await _publish(producer, worker_run, events[:half])
    finally:
        await producer.stop()

    await eventually(lambda: worker_run.metric("rollguard_events_in_total") >= half, 90)
    _kafka("stop")
    _kafka("start")
    assert worker_run.alive(), worker_run.log_tail()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await _publish(producer, worker_run, events[half:])
    finally:
        await producer.stop()

    got: list[bytes] = []
    for topic, kind in [("rollguard.decisions", "decision"), ("rollback.commands",
                        "rollback_command"), ("rollback.approvals", "approval_request"),
                        ("release.verdicts", "release_verdict")]:
        want = sum(1 for r in expected if orjson.loads(r)["type"] == kind)
        await consume(kafka_bootstrap, worker_run.topic(topic), want, timeout=180)
        got.extend(m.value for m in await consume(kafka_bootstrap, worker_run.topic(topic),
                                                  want + 1, timeout=5))
    assert _canonical(got) == _canonical(expected), worker_run.log_tail(40)
    assert worker_run.alive()
