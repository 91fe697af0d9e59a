"""A poisoned state changelog (issue 9 item 2): records written by a plain Kafka client to
``{app_id}-state-changelog`` — a real pickle that would run a command, a record with a forged
MAC, a tampered copy of the gate's own fleet record, garbage — are refused on restore, logged
and counted; nothing is executed, the worker leads on from the genuine records (no restart
loop) and decides exactly as replay does. A changelog from which a genuine record was deleted
is refused as a whole: the worker says so on /health (503, role ``refused``) and waits.
"""

from __future__ import annotations

import os
import pickle
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rollguard.streams.signing import generate_key_pair, load_private_key
from rollguard.streams.simulate_io import send_events
from tests.broker.conftest import WorkerRun
from tests.broker.worker_io import (
    assert_equal_to_replay,
    log_size,
    log_text,
    metric,
    read_all,
    replay,
    scenario_timeline,
    until,
    wait_processed,
    wait_role,
    worker_outputs,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

SEED = 3


class _Payload:
    """Unpickled, it runs ``touch <marker>``: the code execution the old format allowed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _health(run: WorkerRun) -> tuple[int, dict[str, Any]]:
    """/health's status code and document (also when it is 503), or (0, {}) if down."""
    url = f"http://127.0.0.1:{run.web_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())
    except OSError:
        return 0, {}


def _state_topic(run: WorkerRun) -> str:
    return f"{run.env['ROLLGUARD_APP_ID']}-state-changelog"


async def _start_and_checkpoint(run: WorkerRun, producer: AIOKafkaProducer, tmp_path: Path,
                                events: list[dict[str, Any]]) -> Any:
    private, _ = generate_key_pair(tmp_path / "keys", "gate")
    run.env.update(ROLLGUARD_SIGNING_KEY=str(private),
                   ROLLGUARD_MAX_CLOCK_SKEW_SECONDS="1e10")
    run.start()
    run.wait_healthy()
    await wait_role(run, "leader")
    await send_events(producer, events, run.settings())
    await wait_processed(run, len(events))
    assert run.stop(signal.SIGTERM) == 0
    return load_private_key(private)


async def test_poisoned_records_are_refused_not_executed_and_the_worker_leads_on(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    events = scenario_timeline(["fleet-wide", "bad-deploy"], SEED)
    cut = len(events) // 2
    key = await _start_and_checkpoint(worker_run, producer, tmp_path, events[:cut])
    expected = replay(events, signing_key=key)
    topic = _state_topic(worker_run)
    genuine = {m.key: m.value for m in await read_all(kafka_bootstrap, topic)}
    service = next(k for k in genuine if k.startswith(b"svc:"))
    tampered = bytearray(genuine[b"fleet"])
    tampered[-3] ^= 0x01

    marker = tmp_path / "code-was-executed"
    poison = [
        (service, b"\x01" + pickle.dumps(_Payload(marker))),  # the old format: a pickle
        (service, b"\x02" + b"\x00" * 32 + pickle.dumps(_Payload(marker))),  # forged MAC
        (b"fleet", bytes(tampered)),  # the gate's own record, one bit changed
        (b"svc:intruder", b"\xff\xfe garbage"),
    ]
    for k, v in poison:  # a plain client, no transaction: what any writer could do
        await producer.send_and_wait(topic, v, key=k, partition=0)

    since = log_size(worker_run)
    worker_run.start()
    worker_run.wait_healthy()
    await wait_role(worker_run, "leader")
    await send_events(producer, events[cut:], worker_run.settings())
    got = await worker_outputs(kafka_bootstrap, expected, worker_run)
    assert_equal_to_replay(got, expected, worker_run, tmp_path=tmp_path)

    assert not marker.exists()
    assert metric(worker_run, "rollguard_state_records_refused_total") == len(poison)
    for reason, count in (("pickle", 1), ("authentication", 2), ("format", 1)):
        assert metric(worker_run, "rollguard_state_records_refused_total",
                      reason=reason) == count, reason
    assert metric(worker_run, "rollguard_engine_restarts_total") == 0
    text = log_text(worker_run, since)
    refused = [line for line in text.splitlines() if "refused:" in line]
    assert len(refused) == len(poison), text[-3000:]
    assert any("pickle" in line for line in refused)
    assert sum("authentication failed" in line for line in refused) == 2
    # The next checkpoint repaired the keys: the latest record of each is the gate's again, or
    # a tombstone, so compaction keeps nothing of the poison.
    latest: dict[bytes, bytes | None] = {}
    for message in await read_all(kafka_bootstrap, topic):
        latest[message.key] = message.value
    assert latest[b"svc:intruder"] is None
    assert latest[service] not in {v for _, v in poison}
    assert latest[b"fleet"] != bytes(tampered)


async def test_a_deleted_record_makes_the_worker_refuse_to_lead_without_a_restart_loop(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    events = scenario_timeline(["bad-deploy"], SEED)
    await _start_and_checkpoint(worker_run, producer, tmp_path, events[: len(events) // 2])
    topic = _state_topic(worker_run)
    service = next(m.key for m in await read_all(kafka_bootstrap, topic)
                   if m.key.startswith(b"svc:"))
    await producer.send_and_wait(topic, None, key=service, partition=0)  # a tombstone

    since = log_size(worker_run)
    worker_run.start()
    await until(lambda: _health(worker_run)[1].get("role") == "refused", 90,
                "the worker to refuse its state", worker_run)
    code, status = _health(worker_run)
    assert code == 503, (code, status)
    assert "no authentic record of service" in status["last_error"], status
    assert metric(worker_run, "rollguard_engine_restarts_total") == 0
    assert metric(worker_run, "rollguard_state_records_refused_total") == 1
    lines = [line for line in log_text(worker_run, since).splitlines() if "not leading" in line]
    # One line, no traceback, no engine restart: it checks again in a minute, not in a loop.
    assert len(lines) == 1, lines
    assert not await read_all(kafka_bootstrap, worker_run.topic("rollback.commands"))
