"""Two workers of one app id (one consumer group) over a four-partition fleet (issue 4).

The timeline (worker_io.fleet_budget_timeline) needs state that spans every partition: seven
bad deploys of different services five minutes apart — five are rolled back, the sixth and
seventh meet the fleet rollback budget (RATE_LIMITED, "5 rollbacks fleet-wide") — then four
services breaching in one window (FLEET_WIDE_ANOMALY) and a service's own budget.

Only the leader (the owner of the lease, streams/lease.py) runs the decision core, so two
workers must decide exactly as one, and as replay. When the leader goes — SIGTERM (it writes a
last checkpoint and leaves the group) or kill -9 (its session lapses) — between the fifth
rollback and the sixth decision, the standby must take over with the fleet budget's history
and still decide as replay.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events
from tests.broker.conftest import WorkerRun, worker_group
from tests.broker.worker_io import (
    assert_equal_to_replay,
    assert_one_command_per_deployment,
    decision,
    fleet_budget_timeline,
    log_size,
    log_text,
    metric,
    output_index,
    read_all,
    replay,
    role,
    until,
    wait_role,
    worker_outputs,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

SEED = 5
BAD_DEPLOYS = 7
SESSION_TIMEOUT = 6.0


@pytest.fixture
def pair(kafka_bootstrap: str, run_id: str, tmp_path: Path) -> Iterator[tuple[WorkerRun, ...]]:
    """Two workers of one app id and prefix, four partitions per topic; not started."""
    yield from worker_group(("a", "b"), kafka_bootstrap, run_id, tmp_path,
                            ROLLGUARD_PARTITIONS="4",
                            ROLLGUARD_SESSION_TIMEOUT_SECONDS=str(SESSION_TIMEOUT))


def _bad_deploy_ids() -> list[str]:
    return [f"{next(iter(generate('bad-deploy', SEED + k).labels))}-b{k}"
            for k in range(BAD_DEPLOYS)]


def _expected(events: list[dict]) -> list[bytes]:
    expected = replay(events)
    details = [r["detail"] for a in map(orjson.loads, expected) if a["type"] == "approval_request"
               for r in a["reasons"]]
    # The timeline does what it is for: the fleet budget, the fleet guard, a service budget.
    assert any("rollbacks fleet-wide in the last hour" in d for d in details), details
    assert any("services breaching in the same window" in d for d in details), details
    assert any("rollbacks of" in d for d in details), details
    return expected


async def _start_pair(a: WorkerRun, b: WorkerRun) -> None:
    a.start()
    a.wait_healthy()
    await wait_role(a, "leader")
    b.start()
    b.wait_healthy()
    # b's joining the group makes a rebalance; aiokafka's eager protocol revokes the lease from
    # a (which checkpoints and stops leading) and the sticky assignor gives it back to a, which
    # restores and leads again. Wait for that to be over before any input.
    await until(lambda: "Successfully synced group" in log_text(b)
                and _roles(a, b) == ["leader", "standby"], 60, "the group to settle", a, b)


def _roles(*runs: WorkerRun) -> list[str | None]:
    return [role(r) for r in runs]


async def test_two_workers_decide_as_one(
    pair: tuple[WorkerRun, WorkerRun], producer: AIOKafkaProducer, kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    a, b = pair
    events = fleet_budget_timeline(SEED, BAD_DEPLOYS)
    expected = _expected(events)
    started = time.monotonic()
    await _start_pair(a, b)
    assert (metric(a, "rollguard_leader"), metric(b, "rollguard_leader")) == (1, 0)

    await send_events(producer, events, a.settings())
    got = await worker_outputs(kafka_bootstrap, expected, a, b)
    assert_equal_to_replay(got, expected, a, b, tmp_path=tmp_path)
    assert _roles(a, b) == ["leader", "standby"]
    # The standby read nothing: the core ran once, on the leader.
    assert metric(b, "rollguard_events_in_total") == 0
    assert metric(a, "rollguard_events_in_total") == len(events)
    await assert_one_command_per_deployment(kafka_bootstrap, a)
    print(f"{len(events)} events over 4 partitions, {len(got)} records as replay, "
          f"in {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_standby_takes_over_mid_stream(
    pair: tuple[WorkerRun, WorkerRun], producer: AIOKafkaProducer, kafka_bootstrap: str,
    tmp_path: Path, sig: int,
) -> None:
    a, b = pair
    events = fleet_budget_timeline(SEED, BAD_DEPLOYS)
    expected = _expected(events)
    ids = _bad_deploy_ids()
    fifth = output_index(events, decision(ids[4], "auto_rollback"))
    sixth = output_index(events, decision(ids[5], "request_approval"))
    cut = (fifth + sixth) // 2
    started = time.monotonic()
    await _start_pair(a, b)

    await send_events(producer, events[:cut], a.settings())
    # The leader goes once the fifth rollback is committed: the budget it used must survive.
    commands = a.topic("rollback.commands")
    deadline = time.monotonic() + 90
    while len(await read_all(kafka_bootstrap, commands)) < 5:
        assert time.monotonic() < deadline, "no fifth command:\n" + a.log_tail(30)
        await asyncio.sleep(0.1)
    since = log_size(b)
    stopped = time.monotonic()
    code = a.stop(sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), (code, a.log_tail(30))
    await send_events(producer, events[cut:], a.settings())
    await wait_role(b, "leader", timeout=SESSION_TIMEOUT * 3 + 30)
    took = time.monotonic() - stopped
    if sig == signal.SIGTERM:
        assert "writing a last checkpoint" in log_text(a), a.log_tail(30)
        assert took < SESSION_TIMEOUT, f"no hand-over: the standby waited {took:.1f} s"
    assert "restored" in log_text(b, since)

    got = await worker_outputs(kafka_bootstrap, expected, b)
    assert_equal_to_replay(got, expected, a, b, tmp_path=tmp_path)
    await assert_one_command_per_deployment(kafka_bootstrap, b)
    assert _roles(a, b) == [None, "leader"]
    print(f"{signal.Signals(sig).name}: standby led {took:.1f} s after the stop; "
          f"{len(got)} records as replay, in {time.monotonic() - started:.1f} s")
