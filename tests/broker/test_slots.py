"""The worker mode (issue 14): three slots over six input partitions decide exactly as replay,
on one worker and when workers join and die mid-run (docs/worker.md, "On Kafka: slots").

The timeline (worker_io.fleet_budget_timeline) spends the fleet rollback budget, trips the
fleet-wide guard and a service's budget, with its services spread over the three slots: the
fleet facts cross slots through the fleet topic and its barrier. Per slot, the state, the
outputs and the positions commit with its own transactional id to its changelog partition.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rollguard.streams.lead import partition_of
from rollguard.streams.settings import load_settings
from rollguard.streams.simulate_io import send_events
from rollguard.streams.topics import SlotsMismatch, check_slots
from tests.broker.conftest import WorkerRun, consume, worker_group
from tests.broker.worker_io import (
    assert_equal_to_replay,
    assert_one_command_per_deployment,
    fleet_budget_timeline,
    health,
    read_all,
    replay,
    role,
    until,
    worker_outputs,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

SEED = 5
SLOTS = 3
PARTITIONS = 6
SESSION_TIMEOUT = 6.0


@pytest.fixture
def crew(kafka_bootstrap: str, run_id: str, tmp_path: Path) -> Iterator[tuple[WorkerRun, ...]]:
    """Three workers of one app id in the worker mode (3 slots, 6 partitions); not started."""
    yield from worker_group(("a", "b", "c"), kafka_bootstrap, run_id, tmp_path,
                            ROLLGUARD_PARTITIONS=str(PARTITIONS),
                            ROLLGUARD_SCALE_OUT_SLOTS=str(SLOTS),
                            ROLLGUARD_SESSION_TIMEOUT_SECONDS=str(SESSION_TIMEOUT))


def _expected(events: list[dict[str, Any]]) -> list[bytes]:
    expected = replay(events)
    details = [r["detail"] for a in map(orjson.loads, expected) if a["type"] == "approval_request"
               for r in a["reasons"]]
    assert any("rollbacks fleet-wide in the last hour" in d for d in details), details
    assert any("services breaching in the same window" in d for d in details), details
    return expected


async def _misroute(run: WorkerRun, producer: AIOKafkaProducer,
                    events: list[dict[str, Any]]) -> None:
    """A metric keyed by its service but sent to another partition, and an approval response
    without a service."""
    metric = next(e for e in reversed(events) if e["type"] == "metric")
    service = metric["service"]
    wrong = (partition_of(service.encode(), PARTITIONS) + 1) % PARTITIONS
    await producer.send_and_wait(run.topic("telemetry.metrics"), orjson.dumps(metric),
                                 key=service.encode(), partition=wrong)
    answer = {"type": "approval_response", "request_id": "req-unknown", "approver": "alice",
              "decision": "approve", "ts": time.time()}
    await producer.send_and_wait(run.topic("rollback.approval-responses"),
                                 orjson.dumps(answer), key=b"req-unknown")


def _slots(run: WorkerRun) -> list[int] | None:
    if role(run) != "leader":
        return None
    try:
        return list(health(run).get("slots", []))
    except (OSError, ValueError):
        return None


def _held(*runs: WorkerRun) -> list[int]:
    """Every slot the live workers lead, sorted (a slot twice means two leads)."""
    return sorted(s for run in runs if run.alive() for s in (_slots(run) or []))


async def test_three_slots_on_one_worker_decide_as_replay(
    crew: tuple[WorkerRun, ...], producer: AIOKafkaProducer, kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    a = crew[0]
    events = fleet_budget_timeline(SEED)
    expected = _expected(events)
    started = time.monotonic()
    a.start()
    a.wait_healthy()
    await until(lambda: _held(a) == [0, 1, 2], 60, "one worker to lead every slot", a)
    await send_events(producer, events, a.settings())
    got = await worker_outputs(kafka_bootstrap, expected, a)
    assert_equal_to_replay(got, expected, a, tmp_path=tmp_path)
    await assert_one_command_per_deployment(kafka_bootstrap, a)
    reports = await read_all(kafka_bootstrap, a.env["ROLLGUARD_APP_ID"] + "-fleet")
    assert len({m.key for m in reports}) == SLOTS  # every slot reported on the fleet topic
    waits = a.metric("rollguard_fleet_barrier_wait_seconds_count")
    assert waits > 0  # and a slot's claims waited for the others' reports
    # Another slot count on the same app id is refused, naming the topic and the fix.
    other = load_settings(topic_prefix=a.prefix, bootstrap_servers=kafka_bootstrap,
                          app_id=a.env["ROLLGUARD_APP_ID"], scale_out_slots=2)
    with pytest.raises(SlotsMismatch, match="has 3 partitions but ROLLGUARD_SCALE_OUT_SLOTS is 2"):
        await check_slots(other)
    # A record off its service's partition would split the service's state over two slots:
    # a dead letter with its original bytes and the fix, like an approval response that names
    # no service (no slot could know it owns the request).
    await _misroute(a, producer, events)
    letters = await consume(kafka_bootstrap, a.topic("rollguard.dead-letters"), 2)
    errors = sorted(orjson.loads(m.value)["error"] for m in letters)
    assert errors[0].startswith("no service: in the worker mode"), errors
    assert "produce with Kafka's default partitioner" in errors[1], errors
    print(f"{len(events)} events, 3 slots on 1 worker: {len(got)} records as replay, "
          f"{len(reports)} fleet reports, {waits:.0f} waits at the barrier (mean "
          f"{a.metric('rollguard_fleet_barrier_wait_seconds_sum') / waits * 1000:.0f} ms), "
          f"in {time.monotonic() - started:.1f} s")


async def test_two_workers_from_the_start_decide_as_replay(
    crew: tuple[WorkerRun, ...], producer: AIOKafkaProducer, kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    a, b = crew[0], crew[1]
    events = fleet_budget_timeline(SEED)
    expected = _expected(events)
    started = time.monotonic()
    a.start()
    b.start()
    a.wait_healthy()
    b.wait_healthy()
    # Three slots over two workers: one leads two, the other one; every slot exactly once.
    await until(lambda: bool(_slots(a)) and bool(_slots(b)) and _held(a, b) == [0, 1, 2], 90,
                "two workers to share the three slots", a, b)
    await send_events(producer, events, a.settings())
    got = await worker_outputs(kafka_bootstrap, expected, a, b)
    assert_equal_to_replay(got, expected, a, b, tmp_path=tmp_path)
    await assert_one_command_per_deployment(kafka_bootstrap, a)
    print(f"{len(events)} events, 3 slots on 2 workers ({_slots(a)} / {_slots(b)}): "
          f"{len(got)} records as replay, in {time.monotonic() - started:.1f} s")


async def test_scale_up_then_kill_one_of_three_loses_and_duplicates_nothing(
    crew: tuple[WorkerRun, ...], producer: AIOKafkaProducer, kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    a, b, c = crew
    events = fleet_budget_timeline(SEED)
    expected = _expected(events)
    first, second = len(events) // 3, 2 * len(events) // 3
    started = time.monotonic()
    a.start()
    a.wait_healthy()
    await until(lambda: _held(a) == [0, 1, 2], 60, "one worker to lead every slot", a)
    await send_events(producer, events[:first], a.settings())
    commands = a.topic("rollback.commands")
    deadline = time.monotonic() + 90
    while not await read_all(kafka_bootstrap, commands):
        assert time.monotonic() < deadline, "no command yet:\n" + a.log_tail(30)
        await asyncio.sleep(0.2)

    # Scale-up 1 -> 3 mid-run: the group moves whole slots, each restored from its partition.
    b.start()
    c.start()
    b.wait_healthy()
    c.wait_healthy()
    await until(lambda: all(_slots(r) for r in crew) and _held(*crew) == [0, 1, 2], 90,
                "three workers to lead one slot each", *crew)
    await send_events(producer, events[first:second], a.settings())
    await asyncio.sleep(1.0)

    # kill -9 of one of three mid-run: its slot moves after the session timeout.
    victim = b
    assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
    await send_events(producer, events[second:], a.settings())
    await until(lambda: _held(a, c) == [0, 1, 2], SESSION_TIMEOUT * 3 + 30,
                "the two others to lead every slot", a, c)

    got = await worker_outputs(kafka_bootstrap, expected, a, c)
    assert_equal_to_replay(got, expected, a, b, c, tmp_path=tmp_path)
    await assert_one_command_per_deployment(kafka_bootstrap, a)
    print(f"scale-up 1 -> 3 and kill -9 of one: {len(got)} records as replay, "
          f"in {time.monotonic() - started:.1f} s")
