"""Helpers for broker tests that stop, kill or double the worker and compare it with replay.

- timelines: ``fleet_budget_timeline`` (exhausts the fleet rollback budget, trips the fleet
  guard and a service's budget) and ``renamed`` (one scenario's copy under other names);
- where to cut: ``output_index`` runs the core in file order (as replay does) and says which
  event makes a given output, so a test can stop the worker before or after that event;
- the worker: ``second_worker`` (same app id and prefix, its own web port and log), ``health``,
  ``wait_role``, ``wait_processed``, ``wait_checkpoint_after``;
- the outputs: ``worker_outputs`` (committed records of the four output topics), ``read_all``
  (to the end of a topic, aborted records included if asked), ``assert_equal_to_replay`` and
  ``assert_one_command_per_deployment``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from rollguard.streams.pipeline import Pipeline
from rollguard.streams.replay import replay_to_bytes
from rollguard.streams.serde import decode_line
from rollguard.streams.settings import load_policy
from rollguard.streams.simulate import generate
from tests.broker.conftest import REPO, WorkerRun, free_port

OUTPUT_TYPES = {
    "rollguard.decisions": "decision",
    "rollback.commands": "rollback_command",
    "rollback.approvals": "approval_request",
    "release.verdicts": "release_verdict",
}
SKEW = 1e10  # generated scenarios lie in the past (and preauth-expired in 2027)


def policy() -> Any:
    return load_policy(REPO / "config" / "policy.yaml")


# ------------------------------------------------------------------------------ timelines


def renamed(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """The events with every service, deployment and alert id suffixed by ``-tag``."""
    out = []
    for event in events:
        copy = dict(event, service=f"{event['service']}-{tag}")
        for name in ("deployment_id", "alert_id"):
            if name in copy:
                copy[name] = f"{copy[name]}-{tag}"
        out.append(copy)
    return out


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def fleet_budget_timeline(seed: int, bad_deploys: int = 7, spacing: float = 300.0,
                          ) -> list[dict[str, Any]]:
    """Fleet-wide state on one timeline, sorted by event time.

    ``bad_deploys`` copies of 'bad-deploy' (services renamed apart) deploy ``spacing`` seconds
    apart and stop a minute after their decision, so that their breaches do not overlap: the
    first five are rolled back, the rest hit the fleet budget (RATE_LIMITED, 5 per hour). Then
    'fleet-wide' (four services breach at once: FLEET_WIDE_ANOMALY) and 'budget-exhausted'
    (the service budget: RATE_LIMITED) follow.
    """
    rules = policy()
    t0 = generate("healthy", seed).start
    events: list[dict[str, Any]] = []
    for k in range(bad_deploys):
        probe = generate("bad-deploy", seed + k, start=t0)
        deploy = next(e["ts"] for e in probe.events if e["type"] == "deploy")
        scenario = generate("bad-deploy", seed + k, start=t0 + k * spacing + (t0 + 1500 - deploy))
        decided = next(
            _epoch(d["ts"]) for d in map(orjson.loads, replay(scenario.events, rules))
            if d["type"] == "decision" and d["action"] != "watch"
        )
        kept = [e for e in scenario.events if e["ts"] <= decided + 60]
        events.extend(renamed(kept, f"b{k}"))
    end = max(e["ts"] for e in events) + 120
    for name in ("fleet-wide", "budget-exhausted"):
        scenario = generate(name, seed, start=end)
        events.extend(scenario.events)
        end = max(e["ts"] for e in scenario.events) + 120
    events.sort(key=lambda e: e["ts"])
    return events


def scenario_timeline(names: list[str], seed: int, gap: float = 120.0) -> list[dict[str, Any]]:
    """Scenarios one after another on one timeline (as fleet_timeline lays them)."""
    events: list[dict[str, Any]] = []
    start = generate("healthy", seed).start
    for name in names:
        scenario = generate(name, seed, start=start)
        events.extend(scenario.events)
        start = max(e["ts"] for e in scenario.events) + gap
    return events


def replay(events: list[dict[str, Any]], rules: Any = None, signing_key: Any = None,
           ) -> list[bytes]:
    """What `rollguard replay` emits for ``events`` (one JSON line per record)."""
    return list(replay_to_bytes((orjson.dumps(e) for e in events), rules or policy(),
                                max_clock_skew_seconds=SKEW, signing_key=signing_key))


def output_index(events: list[dict[str, Any]], wanted: Any, rules: Any = None) -> int:
    """Index of the first event whose processing (in file order, as replay) emits an output
    for which ``wanted(output_record)`` is true."""
    pipeline = Pipeline(rules or policy())
    for number, event in enumerate(events):
        raw = orjson.dumps(event)
        decoded = decode_line(raw, line_number=number + 1, source="", reference_time=None,
                              max_clock_skew_seconds=SKEW, max_message_bytes=262144)
        assert decoded.record is not None, decoded.dead_letter
        if any(wanted(o) for o in pipeline.process(decoded.record, raw)):
            return number
    raise AssertionError("no event makes the wanted output")


def decision(deployment_id: str, *actions: str) -> Any:
    """A predicate for output_index: a decision on ``deployment_id`` with one of ``actions``."""
    return lambda o: (o.type == "decision" and o.deployment_id == deployment_id
                      and o.action in actions)


# ------------------------------------------------------------------------------ the worker


def second_worker(run: WorkerRun, log_path: Path, **env: str) -> WorkerRun:
    """Another worker of ``run``'s app id and prefix, with its own web port and log file."""
    port = free_port()
    return WorkerRun(env={**run.env, **env, "ROLLGUARD_WEB_PORT": str(port)}, prefix=run.prefix,
                     web_port=port, log_path=log_path)


def health(run: WorkerRun) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(run.get("/health"))
    return data


def role(run: WorkerRun) -> str | None:
    """The worker's /health role, or None if it does not answer (dead, not up yet)."""
    if not run.alive():
        return None
    try:
        return str(health(run)["role"])
    except (OSError, ValueError, KeyError):
        return None


def processed(run: WorkerRun) -> int:
    """Events the decision core of the current lead has processed (/health 'events')."""
    try:
        return sum(health(run).get("events", {}).values())
    except (OSError, ValueError):
        return -1


def metric(run: WorkerRun, name: str, **labels: str) -> float:
    try:
        return run.metric(name, **labels)
    except (OSError, ValueError):
        return -1.0


async def until(predicate: Any, timeout: float, what: str, *runs: WorkerRun,
                interval: float = 0.2) -> None:
    """Poll ``predicate`` until true; fail with ``what`` and the workers' log tails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    if predicate():
        return
    tails = "\n".join(f"--- {r.log_path.name}:\n{r.log_tail(30)}" for r in runs)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


async def wait_role(run: WorkerRun, wanted: str, timeout: float = 60.0) -> None:
    await until(lambda: role(run) == wanted, timeout, f"{run.log_path.name} to be {wanted}", run)


async def wait_processed(run: WorkerRun, count: int, timeout: float = 90.0) -> None:
    """Until the core has processed ``count`` events and a checkpoint has followed."""
    await until(lambda: processed(run) >= count, timeout, f"{count} events processed", run)
    assert processed(run) == count, (processed(run), count)
    await wait_checkpoint_after(run)


async def wait_checkpoint_after(run: WorkerRun, timeout: float = 30.0) -> None:
    """Until a checkpoint is committed after this call (the state written covers 'now')."""
    before = metric(run, "rollguard_checkpoints_total")
    await until(lambda: metric(run, "rollguard_checkpoints_total") > before, timeout,
                "a checkpoint", run)


def log_text(run: WorkerRun, since: int = 0) -> str:
    """The worker's log from byte ``since`` (the log file is appended to across restarts)."""
    with open(run.log_path, "rb") as handle:
        handle.seek(since)
        return handle.read().decode(errors="replace")


def log_size(run: WorkerRun) -> int:
    try:
        return run.log_path.stat().st_size
    except OSError:
        return 0


# ------------------------------------------------------------------------------ the outputs


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = sorted(p["partition"] for p in described["partitions"])
    assert found, f"no topic {topic}: {described}"
    return [TopicPartition(topic, p) for p in found]


async def read_all(bootstrap: str, topic: str, *, committed: bool = True,
                   timeout: float = 30.0) -> list[Any]:
    """Every message of ``topic`` up to its current end (read_committed: the last stable
    offset; read_uncommitted: the high watermark, records of aborted transactions included)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed" if committed
                                else "read_uncommitted")
    partitions = await partitions_of(bootstrap, topic)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                break
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                messages.extend(records)
        else:
            raise AssertionError(f"could not read {topic} to its end in {timeout} s")
    finally:
        await consumer.stop()
    return messages


async def settled(*runs: WorkerRun) -> None:
    """Until whatever the worker would still publish is committed. Extra records, if any,
    would come from events still buffered or unread: wait until the leader among ``runs`` has
    read and processed everything, then give a checkpoint interval to commit."""
    leaders = [w for w in runs if role(w) == "leader"]
    if leaders:
        await until(lambda: metric(leaders[0], "rollguard_events_buffered") == 0
                    and metric(leaders[0], "rollguard_consumer_lag") == 0, 30,
                    "the leader to be caught up", *runs)
    await asyncio.sleep(2.0)


async def worker_outputs(bootstrap: str, expected: list[bytes], *runs: WorkerRun,
                         timeout: float = 120.0) -> list[bytes]:
    """The committed records of the four output topics (of ``runs``' prefix), once there are
    at least as many of each type as ``expected`` has (or ``timeout`` passed), and one more
    checkpoint of the leader among ``runs`` has passed (extra records would come with it)."""
    run = runs[0]
    wanted = Counter(orjson.loads(r)["type"] for r in expected)
    deadline = time.monotonic() + timeout
    got: list[bytes] = []
    for topic, kind in OUTPUT_TYPES.items():
        while True:
            messages = await read_all(bootstrap, run.topic(topic))
            if len(messages) >= wanted[kind] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        got.extend(m.value for m in messages)
    await settled(*runs)
    got = []
    for topic in OUTPUT_TYPES:
        got.extend(m.value for m in await read_all(bootstrap, run.topic(topic)))
    return got


def canonical(records: list[bytes]) -> Counter[bytes]:
    return Counter(orjson.dumps(orjson.loads(r), option=orjson.OPT_SORT_KEYS) for r in records)


def assert_equal_to_replay(got: list[bytes], expected: list[bytes], *runs: WorkerRun,
                           tmp_path: Path | None = None) -> None:
    """The multiset of canonical JSON records is the same (the order across topics is not)."""
    from tests.broker.test_kafka_equals_replay import _first_difference

    if tmp_path is not None:
        (tmp_path / "expected.jsonl").write_bytes(b"".join(expected))
        (tmp_path / "worker.jsonl").write_bytes(b"".join(r + b"\n" for r in got))
    want, have = canonical(expected), canonical(got)
    missing, extra = want - have, have - want
    if missing or extra:
        tails = "\n".join(f"--- {r.log_path.name}:\n{r.log_tail(25)}" for r in runs)
        raise AssertionError(
            f"{sum(missing.values())} records missing, {sum(extra.values())} extra:\n"
            + _first_difference(list(missing.elements()), list(extra.elements()))
            + "\n" + tails
        )


async def assert_one_command_per_deployment(bootstrap: str, run: WorkerRun) -> dict[str, int]:
    """Every command on rollback.commands, aborted ones included: one command_id and one
    content per deployment. Returns how many copies (committed or not) each deployment has."""
    messages = await read_all(bootstrap, run.topic("rollback.commands"), committed=False)
    by_deployment: defaultdict[str, set[bytes]] = defaultdict(set)
    ids: defaultdict[str, set[str]] = defaultdict(set)
    copies: Counter[str] = Counter()
    for message in messages:
        command = orjson.loads(message.value)
        by_deployment[command["deployment_id"]].add(
            orjson.dumps(command, option=orjson.OPT_SORT_KEYS))
        ids[command["deployment_id"]].add(command["command_id"])
        copies[command["deployment_id"]] += 1
    for deployment, contents in by_deployment.items():
        assert len(ids[deployment]) == 1, f"{deployment}: command ids {sorted(ids[deployment])}"
        assert len(contents) == 1, (
            f"{deployment}: {len(contents)} different commands:\n"
            + "\n".join(c.decode() for c in sorted(contents))
        )
    return dict(copies)
