"""Every simulated scenario, published to Kafka, gives the worker's topics what replay gives.

All scenarios are laid one after another on one timeline (a fleet's two days), written to one
replay file and published to the input topics of one worker. The worker reads four topics over
two partitions in whatever order faust fetches them; replay reads the file in order. Both must
emit exactly the same records.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rollguard.streams.replay import replay_to_bytes
from rollguard.streams.settings import load_policy
from rollguard.streams.simulate import SCENARIOS, generate
from rollguard.streams.simulate_io import send_events
from tests.broker.conftest import REPO, WorkerRun
from tests.broker.worker_io import worker_outputs

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

GAP_SECONDS = 120.0


def fleet_timeline(seed: int) -> list[dict[str, Any]]:
    """Every scenario, one after another, an hour apart (preauth-expired keeps its 2027 date)."""
    events: list[dict[str, Any]] = []
    start = generate("healthy", seed).start
    for name in SCENARIOS:
        if name == "preauth-expired":
            continue
        scenario = generate(name, seed, start=start)
        events.extend(scenario.events)
        start = max(e["ts"] for e in scenario.events) + GAP_SECONDS
    events.extend(generate("preauth-expired", seed).events)
    return events


def canonical(records: list[bytes]) -> Counter[bytes]:
    return Counter(orjson.dumps(orjson.loads(r), option=orjson.OPT_SORT_KEYS) for r in records)


async def test_every_scenario_on_kafka_decides_as_replay_does(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    events = fleet_timeline(seed=5)
    replay_file = tmp_path / "fleet.jsonl"
    replay_file.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    policy = load_policy(REPO / "config" / "policy.yaml")
    with open(replay_file, "rb") as lines:
        expected = list(replay_to_bytes(lines, policy, max_clock_skew_seconds=1e10))
    expected_counts = canonical(expected)
    # The corpus decides things (5 rollbacks: see test_partitioned's timeline test).
    assert sum(1 for r in expected if b'"auto_rollback"' in r) >= 5

    worker_run.env["ROLLGUARD_MAX_CLOCK_SKEW_SECONDS"] = "1e10"  # the timeline runs into 2027
    worker_run.start()
    worker_run.wait_healthy()
    started = time.monotonic()
    await send_events(producer, events, worker_run.settings())

    # Every record replay has, then — once the worker has read and decided everything — any
    # extra one it would publish (worker_outputs: caught up, a checkpoint interval more).
    got = await worker_outputs(kafka_bootstrap, expected, worker_run, timeout=240)
    elapsed = time.monotonic() - started
    (tmp_path / "expected.jsonl").write_bytes(b"".join(expected))
    (tmp_path / "worker.jsonl").write_bytes(b"".join(r + b"\n" for r in got))
    missing = expected_counts - canonical(got)
    extra = canonical(got) - expected_counts
    assert not missing and not extra, (
        f"{sum(missing.values())} records missing, {sum(extra.values())} extra:\n"
        + _first_difference(list(missing.elements()), list(extra.elements()))
    )
    print(f"{len(events)} events, {len(got)} records, identical to replay, in {elapsed:.1f} s")


def _first_difference(missing: list[bytes], extra: list[bytes]) -> str:
    """The first record replay has and the worker lacks, set against its worker counterpart."""
    def key(raw: bytes) -> tuple[str, ...]:
        r = orjson.loads(raw)
        return (r["type"], str(r.get("deployment_id")), str(r.get("action") or r.get("verdict")))

    kinds = Counter(key(r)[0] + ":" + key(r)[2] for r in missing)
    lines = [f"missing by kind {dict(kinds)}",
             f"extra by kind {dict(Counter(key(r)[0] + ':' + key(r)[2] for r in extra))}"]
    extra_by_key = {key(r): orjson.loads(r) for r in extra}
    for raw in sorted(missing, key=lambda r: orjson.loads(r).get("ts") or "")[:3]:
        want = orjson.loads(raw)
        have = extra_by_key.get(key(raw))
        lines.append(f"replay: {key(raw)} at {want.get('ts')}")
        if have is None:
            lines.append("  worker: nothing of that kind")
            continue
        for field in sorted(set(want) | set(have)):
            if want.get(field) != have.get(field):
                lines.append(f"  {field}: replay {str(want.get(field))[:300]}")
                lines.append(f"  {field}: worker {str(have.get(field))[:300]}")
    return "\n".join(lines)

