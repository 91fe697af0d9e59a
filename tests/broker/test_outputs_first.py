"""Outputs before the state (docs/worker.md): a decision is published at once in an output
transaction, without waiting for a checkpoint, and a leader restored from an older checkpoint
derives it again and drops it — kill -9 between the two publishes nothing twice.

The worker here takes no checkpoint at all before the kill (its commit interval is an hour):
every output it published went out in output transactions, and the restarted worker, which
restores nothing, re-reads every input from the start.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rollguard.streams.simulate_io import send_events
from tests.broker.conftest import WorkerRun
from tests.broker.test_crash import (
    _cut_between_watch_and_rollback,
    _restart_after_kill,
    _signed,
)
from tests.broker.worker_io import (
    OUTPUT_TYPES,
    assert_equal_to_replay,
    assert_one_command_per_deployment,
    metric,
    processed,
    read_all,
    replay,
    until,
    wait_role,
    worker_outputs,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


async def test_outputs_published_between_checkpoints_are_not_published_again_after_kill_9(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    events, deployment, cut = _cut_between_watch_and_rollback()
    key = _signed(worker_run, tmp_path)
    worker_run.env["ROLLGUARD_COMMIT_INTERVAL_SECONDS"] = "3600"
    expected = replay(events, signing_key=key)

    worker_run.start()
    worker_run.wait_healthy()
    await wait_role(worker_run, "leader")
    await send_events(producer, events[:cut], worker_run.settings())
    await until(lambda: processed(worker_run) >= cut, 90, f"{cut} events processed", worker_run)
    await until(lambda: metric(worker_run, "rollguard_output_commit_seconds_count") > 0, 30,
                "an output transaction", worker_run)
    published = {topic: [orjson.loads(m.value) for m in
                         await read_all(kafka_bootstrap, worker_run.topic(topic))]
                 for topic in OUTPUT_TYPES}
    decisions = published["rollguard.decisions"]
    assert [d["action"] for d in decisions if d["deployment_id"] == deployment] == ["watch"]
    assert metric(worker_run, "rollguard_checkpoints_total") == 0  # all went out without one

    await _restart_after_kill(worker_run)
    await wait_role(worker_run, "leader")
    await send_events(producer, events[cut:], worker_run.settings())

    got = await worker_outputs(kafka_bootstrap, expected, worker_run)
    assert_equal_to_replay(got, expected, worker_run, tmp_path=tmp_path)
    assert await assert_one_command_per_deployment(kafka_bootstrap, worker_run) == {deployment: 1}
    # Every output published before the kill was derived again, and dropped.
    count = sum(len(records) for records in published.values())
    assert metric(worker_run, "rollguard_outputs_rederived_total") == count > 1
