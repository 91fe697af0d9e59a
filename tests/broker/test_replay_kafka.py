"""`rollguard replay --from-kafka` and `rollguard export` read a time range of the input topics.

Three scenarios go to the input topics (2 partitions, keyed by service) with Kafka record
timestamps equal to their event times, half an hour apart. A range around the middle one selects
it alone; replaying it from Kafka, exporting it, and replaying the export must give the same bytes
— and the same bytes as replaying the scenario's own file.
"""

from __future__ import annotations

import time
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rollguard.models.events import format_ts
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, write_scenario
from tests.broker.conftest import WorkerRun

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

async def _publish(producer: AIOKafkaProducer, run: WorkerRun, events: list[dict[str, Any]],
                   ) -> None:
    await send_events(producer, events, run.settings(), record_timestamps=True)


def _ok(result: Any) -> None:
    assert result.returncode == 0, result.stderr


async def test_a_time_range_from_kafka_replays_exactly_like_its_export(
    worker_run: WorkerRun, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    # Recent history: the broker keeps it (retention) and accepts its timestamps.
    start = time.time() - 3 * 3600
    before = generate("healthy", 3, start=start)
    before_end = max(e["ts"] for e in before.events)
    chosen = generate("bad-deploy", 3, start=before_end + 1800)
    chosen_start = min(e["ts"] for e in chosen.events)
    chosen_end = max(e["ts"] for e in chosen.events)
    after = generate("one-window-blip", 3, start=chosen_end + 1800)
    assert max(e["ts"] for e in after.events) < time.time()
    await _publish(producer, worker_run, before.events)
    await _publish(producer, worker_run, chosen.events)
    # Two records inside the range that cannot be decoded: they must be dead letters.
    bad_ts = round((chosen_start + 60) * 1000)
    await producer.send(worker_run.topic("telemetry.metrics"), b"{not json", key=b"cart",
                        timestamp_ms=bad_ts)
    wrong_key = dict(next(e for e in chosen.events if e["type"] == "metric"), service="cart")
    await producer.send(worker_run.topic("telemetry.metrics"), orjson.dumps(wrong_key),
                        key=b"search", timestamp_ms=bad_ts)
    # Published last: reading stops at the first record after --until, so anything appended
    # behind these (whatever its timestamp) is out of the range.
    await _publish(producer, worker_run, after.events)
    await producer.flush()

    since, until = format_ts(chosen_start - 1), str(chosen_end + 1)  # both forms of T
    from_kafka, export, replayed = (tmp_path / n for n in ("kafka.jsonl", "export.jsonl",
                                                           "file.jsonl"))
    summary = tmp_path / "summary.json"
    _ok(worker_run.rollguard("replay", "--from-kafka", "--since", since, "--until", until,
                             "--out", str(from_kafka), "--summary-json", str(summary)))
    _ok(worker_run.rollguard("export", "--since", since, "--until", until, "--out", str(export)))
    _ok(worker_run.rollguard("replay", str(export), "--out", str(replayed)))

    # The range holds the chosen scenario and nothing of the other one.
    exported = [orjson.loads(line) for line in export.read_bytes().splitlines()]
    canonical = sorted(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in exported)
    assert canonical == sorted(orjson.dumps(e, option=orjson.OPT_SORT_KEYS)
                               for e in chosen.events)
    # Merged by event time; each partition keeps its own (arrival) order, which the simulator
    # makes a little out of order, well within the allowed lateness.
    newest = list(accumulate((e["ts"] for e in exported), max))
    assert all(e["ts"] >= top - 10 for e, top in zip(exported, newest, strict=True))
    assert exported != sorted(exported, key=lambda e: e["ts"])  # the disorder is really there
    letters = (tmp_path / "export.dead-letters.jsonl").read_bytes().splitlines()
    assert len(letters) == 2

    # Kafka replay = file replay of the export, byte for byte (plus its two dead letters).
    kafka_lines = from_kafka.read_bytes().splitlines(keepends=True)
    dead = [line for line in kafka_lines if orjson.loads(line)["type"] == "dead_letter"]
    assert sorted(orjson.loads(d)["error"][:16] for d in dead) == [
        "key 'search' doe", "not valid JSON: "]
    decided = b"".join(line for line in kafka_lines if line not in dead)
    assert decided == replayed.read_bytes()
    assert b'"auto_rollback"' in decided
    (deployment,) = chosen.labels
    assert deployment.encode() in decided
    assert not any(other.encode() in decided for other in [*before.labels, *after.labels])

    # ... and the same as replaying the scenario's own file.
    original, _ = write_scenario(chosen, tmp_path / "chosen.jsonl")
    _ok(worker_run.rollguard("replay", str(original), "--out", str(tmp_path / "orig.out")))
    assert (tmp_path / "orig.out").read_bytes() == decided

    numbers = orjson.loads(summary.read_bytes())
    assert numbers["range"]["partitions"] == 10  # 5 input topics (otlp_metrics too) x 2
    assert sum(numbers["range"]["records"].values()) == len(chosen.events) + 2
    assert numbers["replay"]["dead_letters"] == 2


async def test_an_unknown_prefix_is_one_line_and_exit_1(worker_run: WorkerRun) -> None:
    worker_run.env["ROLLGUARD_TOPIC_PREFIX"] = worker_run.prefix + "missing."
    result = worker_run.rollguard("export", "--since", "0", "--out", "/dev/null")
    assert result.returncode == 1
    assert "does not exist" in result.stderr and len(result.stderr.strip().splitlines()) == 1
