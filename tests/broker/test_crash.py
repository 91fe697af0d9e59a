"""Crash test (issue 4): `kill -9` the worker in the middle of a bad deploy, start it again.

The timeline is 'fleet-wide' then 'bad-deploy' (seed 3): by the time of the kill the worker has
baselines and detector state for every service, a fleet approval history, and the bad deploy on
trial with one breaching window (a 'watch' decision already published). The restarted worker
must restore all of it from its changelog, read the inputs on from the checkpointed positions,
and publish exactly what `rollguard replay` gives for the whole timeline: the same decisions,
the same signed command. Read with read_uncommitted, rollback.commands may hold a copy of the
command from an aborted checkpoint, but never a different command for one deployment.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from rollguard.streams.signing import generate_key_pair, load_private_key
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events
from tests.broker.conftest import WorkerRun
from tests.broker.worker_io import (
    assert_equal_to_replay,
    assert_one_command_per_deployment,
    decision,
    log_size,
    log_text,
    metric,
    output_index,
    partitions_of,
    read_all,
    replay,
    scenario_timeline,
    wait_processed,
    wait_role,
    worker_outputs,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

SEED = 3


def _timeline() -> tuple[list[dict[str, Any]], str, int, int]:
    """The events, the bad deploy's id, the index of the event that makes its 'watch'
    decision and of the one that makes its rollback (in replay's order)."""
    events = scenario_timeline(["fleet-wide", "bad-deploy"], SEED)
    deployment = next(iter(generate("bad-deploy", SEED).labels))
    deployed = next(i for i, e in enumerate(events)
                    if e["type"] == "deploy" and e["deployment_id"] == deployment)
    watch = output_index(events, decision(deployment, "watch"))
    act = output_index(events, decision(deployment, "auto_rollback"))
    assert deployed < watch < act - 2, (deployed, watch, act)
    return events, deployment, watch, act


def _cut_between_watch_and_rollback() -> tuple[list[dict[str, Any]], str, int]:
    """The timeline, the bad deploy's id, and a cut after its 'watch', before its rollback."""
    events, deployment, watch, act = _timeline()
    return events, deployment, watch + 1 + (act - watch - 1) // 2


def _signed(run: WorkerRun, tmp_path: Path) -> Any:
    private, _ = generate_key_pair(tmp_path / "keys", "gate")
    run.env.update(
        ROLLGUARD_SIGNING_KEY=str(private),
        ROLLGUARD_MAX_CLOCK_SKEW_SECONDS="1e10",  # generated scenarios lie in the past
        ROLLGUARD_SESSION_TIMEOUT_SECONDS="6",  # the dead leader's lease lapses sooner
    )
    return load_private_key(private)


def _restored_services(run: WorkerRun, since: int) -> int:
    found = re.findall(r"restored (\d+) services from the changelog", log_text(run, since))
    assert found, "the restarted worker logged no restore:\n" + run.log_tail(30)
    return int(found[0])


async def _restart_after_kill(run: WorkerRun) -> int:
    """kill -9, then the same worker again (same env: app id, prefix, web port, log)."""
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    since = log_size(run)
    run.start()
    run.wait_healthy()
    return since


async def test_kill_9_between_deploy_and_decision(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    events, deployment, cut = _cut_between_watch_and_rollback()
    key = _signed(worker_run, tmp_path)
    expected = replay(events, signing_key=key)
    assert any(b'"rollback_command"' in r for r in expected)

    started = time.monotonic()
    worker_run.start()
    worker_run.wait_healthy()
    await wait_role(worker_run, "leader")
    await send_events(producer, events[:cut], worker_run.settings())
    await wait_processed(worker_run, cut)  # every event through the core, then a checkpoint
    published = [orjson.loads(m.value) for m in
                 await read_all(kafka_bootstrap, worker_run.topic("rollguard.decisions"))]
    assert [d["action"] for d in published if d["deployment_id"] == deployment] == ["watch"]
    assert not await read_all(kafka_bootstrap, worker_run.topic("rollback.commands"))

    since = await _restart_after_kill(worker_run)
    await send_events(producer, events[cut:], worker_run.settings())
    await wait_role(worker_run, "leader")
    assert _restored_services(worker_run, since) == len({e["service"] for e in events[:cut]})

    got = await worker_outputs(kafka_bootstrap, expected, worker_run)
    assert_equal_to_replay(got, expected, worker_run, tmp_path=tmp_path)
    copies = await assert_one_command_per_deployment(kafka_bootstrap, worker_run)
    assert copies == {deployment: 1}, copies  # the only checkpoint with it was committed
    # It resumed from the checkpoint's positions: nothing before the kill was read again.
    assert metric(worker_run, "rollguard_events_in_total") == len(events) - cut
    print(f"{len(events)} events, killed after {cut}, {len(got)} records as replay, "
          f"in {time.monotonic() - started:.1f} s")


async def test_kill_9_as_the_command_is_published(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The kill lands as soon as the command shows on rollback.commands (read_uncommitted):
    just before or just after its checkpoint commits. Either way the outcome is replay's."""
    events, deployment, watch, act = _timeline()
    first = watch + 1
    second = act + 200  # the rollback and a few windows more: the rest comes after the restart
    key = _signed(worker_run, tmp_path)
    expected = replay(events, signing_key=key)

    started = time.monotonic()
    worker_run.start()
    worker_run.wait_healthy()
    await wait_role(worker_run, "leader")
    await send_events(producer, events[:first], worker_run.settings())
    await wait_processed(worker_run, first)

    tail = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None,
                            isolation_level="read_uncommitted")
    await tail.start()
    try:
        partitions = await partitions_of(kafka_bootstrap, worker_run.topic("rollback.commands"))
        tail.assign(partitions)
        await tail.seek_to_beginning(*partitions)
        await send_events(producer, events[first:second], worker_run.settings())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any((await tail.getmany(timeout_ms=20)).values()):
                break
        else:
            raise AssertionError("no command published:\n" + worker_run.log_tail(30))
        since = await _restart_after_kill(worker_run)
    finally:
        await tail.stop()
    committed = len(await read_all(kafka_bootstrap, worker_run.topic("rollback.commands"),
                                   timeout=60))
    await send_events(producer, events[second:], worker_run.settings())
    await wait_role(worker_run, "leader")
    assert _restored_services(worker_run, since) == len({e["service"] for e in events[:first]})

    got = await worker_outputs(kafka_bootstrap, expected, worker_run)
    assert_equal_to_replay(got, expected, worker_run, tmp_path=tmp_path)
    copies = await assert_one_command_per_deployment(kafka_bootstrap, worker_run)
    assert set(copies) == {deployment}
    print(f"killed as the command appeared ({'after' if committed else 'before'} its commit; "
          f"{copies[deployment]} cop{'y' if copies[deployment] == 1 else 'ies'} on the topic), "
          f"{len(got)} records as replay, in {time.monotonic() - started:.1f} s")
