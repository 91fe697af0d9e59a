"""Foreign inputs on the real broker: OTLP metrics and CDEvents decide as native JSON does;
outputs carry CloudEvents headers; the executor announces each rollback as a CDEvent."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from rollguard.streams.ingest.cdevents import decode_cdevent
from rollguard.streams.serde import dumps
from tests.broker.conftest import WorkerRun, consume
from tests.broker.worker_io import (
    assert_equal_to_replay,
    read_all,
    replay,
    scenario_timeline,
    worker_outputs,
)
from tests.cdevents_messages import cdevent, kafka_message
from tests.otlp_messages import encode, gauge, number, request

pytestmark = [pytest.mark.broker, pytest.mark.timeout(400)]

METRICS = ("error_rate", "latency_p99_ms", "request_rate")
RULES = json.dumps([{"source": f"app.{name}", "metric": name} for name in METRICS])


def as_foreign(events: list[dict[str, Any]], encoding: str
               ) -> tuple[list[dict[str, Any]], list[tuple[str, bytes | None, list[Any], bytes]]]:
    """(the native events replay reads, the messages to publish): metrics as OTLP gauges — one
    unkeyed message per timestamp with every service's points — deploys as CDEvents, binary
    and structured mode in turn; alerts stay native JSON."""
    native: list[dict[str, Any]] = []
    out: list[tuple[str, bytes | None, list[Any], bytes]] = []
    group: list[dict[str, Any]] = []
    deploys = 0

    def flush() -> None:
        if not group:
            return
        resources: dict[tuple[str, str | None], list[Any]] = {}
        for e in group:
            resources.setdefault((e["service"], e.get("instance")), []).append(
                gauge(f"app.{e['name']}", [number(e["ts"], float(e["value"]))]))
        msg = request(*(({"service.name": svc, **({"service.instance.id": inst} if inst else {})},
                         metrics) for (svc, inst), metrics in resources.items()))
        out.append(("otlp_metrics", None, [], encode(msg, encoding)))
        group.clear()

    for event in events:
        if event["type"] == "metric":
            event = dict(event, source="otlp")
            if group and group[0]["ts"] != event["ts"]:
                flush()
            group.append(event)
        else:
            flush()
            if event["type"] == "deploy":
                mode = ("binary", "structured")[deploys % 2]
                deploys += 1
                data = cdevent("deployed", event["service"], event["version"], event["ts"],
                               **{k: event[k] for k in ("deployment_id", "previous_version",
                                                        "rollback_target", "actor", "change")})
                headers, value = kafka_message(data, mode)
                out.append(("deploys", event["service"].encode(), list(headers.items()), value))
            else:
                out.append(("telemetry.alerts", event["service"].encode(), [], dumps(event)))
        native.append(event)
    flush()
    return native, out


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
async def test_otlp_metrics_and_cdevents_decide_as_native_json(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str, tmp_path: Path,
    encoding: str,
) -> None:
    events = scenario_timeline(["bad-deploy", "no-rollback-target"], seed=5)
    native, messages = as_foreign(events, encoding)
    expected = replay(native)
    actions = [orjson.loads(r).get("action") for r in expected]
    assert "auto_rollback" in actions and "request_approval" in actions

    worker_run.env.update(ROLLGUARD_MAX_CLOCK_SKEW_SECONDS="1e10",
                          ROLLGUARD_INGEST__OTLP__RULES=RULES,
                          ROLLGUARD_INGEST__OTLP__ENCODING=encoding)
    worker_run.start()
    worker_run.wait_healthy()
    for topic, key, headers, value in messages:
        await producer.send(worker_run.topic(topic), value, key=key, headers=headers)
    await producer.flush()
    got = await worker_outputs(kafka_bootstrap, expected, worker_run, timeout=180)
    assert_equal_to_replay(got, expected, worker_run, tmp_path=tmp_path)

    commands = await consume(kafka_bootstrap, worker_run.topic("rollback.commands"), 1)
    headers = dict(commands[0].headers)
    assert headers["ce_type"] == b"dev.rollguard.rollback_command"
    assert headers["ce_specversion"] == b"1.0" and headers["ce_subject"] == commands[0].key
    assert worker_run.metric("rollguard_dead_letters_total") == 0


async def test_bad_foreign_input_is_dead_lettered_with_its_headers(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str,
) -> None:
    worker_run.start()
    worker_run.wait_healthy()
    bad_ce = [("ce_type", b"dev.cdevents.service.deployed.0.2.0"), ("ce_specversion", b"1.0"),
              ("ce_id", b"1"), ("ce_source", b"/ci"), ("content-type", b"application/json")]
    await producer.send(worker_run.topic("deploys"), b'{"context": {}}', key=b"a",
                        headers=bad_ce)
    await producer.send(worker_run.topic("otlp_metrics"), b"\xff\x00garbage")
    await producer.flush()
    letters = await consume(kafka_bootstrap, worker_run.topic("rollguard.dead-letters"), 2,
                            timeout=60)
    assert len(letters) == 2
    by_topic = {orjson.loads(m.value)["topic"]: m for m in letters}
    deploy = by_topic[worker_run.topic("deploys")]
    assert dict(deploy.headers)["ce_type"] == b"dev.cdevents.service.deployed.0.2.0"
    assert "no version" in orjson.loads(deploy.value)["error"]
    otlp = orjson.loads(by_topic[worker_run.topic("otlp_metrics")].value)
    assert "OTLP" in otlp["error"] and otlp["value_b64"] == "/wBnYXJiYWdl"


async def test_executor_announces_each_rollback_as_a_cdevent(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str, tmp_path: Path,
) -> None:
    from rollguard.streams.signing import generate_key_pair, load_private_key
    from tests.broker.test_executor import _command, _start_executor, _stop

    generate_key_pair(tmp_path / "keys", "gate")
    gate = load_private_key(tmp_path / "keys" / "gate.key")
    commands = [_command(gate, "dep-ce-1"), _command(gate, "dep-ce-2")]
    process = _start_executor(worker_run, tmp_path, tmp_path / "ran.txt")
    try:
        for command in [*commands, commands[0]]:  # the repeat is rejected, not announced
            await producer.send_and_wait(worker_run.topic("rollback.commands"),
                                         orjson.dumps(command), key=b"checkout")
        results = await consume(kafka_bootstrap, worker_run.topic("rollback.results"), 3,
                                timeout=60)
        assert [orjson.loads(m.value)["status"] for m in results].count("executed") == 2
        # The executor commits a command once its result and announcement are sent: with all
        # three committed, every announcement there will be is on the topic.
        group = worker_run.env["ROLLGUARD_APP_ID"] + "-executor"
        deadline = time.monotonic() + 60
        while await _committed(kafka_bootstrap, group, worker_run.topic("rollback.commands")) < 3:
            assert time.monotonic() < deadline, "the executor committed fewer than 3 commands"
            await asyncio.sleep(0.2)
        announced = await read_all(kafka_bootstrap, worker_run.topic("deploys"))
    finally:
        _stop(process)
    assert len(announced) == 2
    events = [decode_cdevent(m.value, {k: v for k, v in m.headers}, m.key) for m in announced]
    got = sorted((e.deployment_id, e.status, e.version) for e in events)  # type: ignore[union-attr]
    assert got == [("dep-ce-1", "rolled_back", "v2.4.0"), ("dep-ce-2", "rolled_back", "v2.4.0")]


async def _committed(bootstrap: str, group: str, topic: str) -> int:
    """The offsets ``group`` has committed on ``topic``, summed over its partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)


async def test_export_and_replay_from_kafka_see_the_samples_the_worker_sees(
    worker_run: WorkerRun, producer: AIOKafkaProducer, tmp_path: Path,
) -> None:
    """A Collector-fed cluster (OTLP metrics, CDEvents deploys): `rollguard export` writes
    the samples the worker's core receives, and replaying from Kafka or from the export
    decides exactly as replaying the same events in native JSON."""
    from rollguard.streams.serde import decode

    events = scenario_timeline(["bad-deploy"], seed=7)
    native, messages = as_foreign(events, "otlp_proto")
    worker_run.env.update(ROLLGUARD_MAX_CLOCK_SKEW_SECONDS="1e10",
                          ROLLGUARD_INGEST__OTLP__RULES=RULES)
    for topic, key, headers, value in messages:
        await producer.send(worker_run.topic(topic), value, key=key, headers=headers)
    await producer.flush()

    files = {name: tmp_path / f"{name}.jsonl"
             for name in ("native", "export", "from-native", "from-kafka", "from-export")}
    files["native"].write_bytes(b"".join(dumps(e) + b"\n" for e in native))
    for args in (("replay", str(files["native"]), "--out", str(files["from-native"])),
                 ("replay", "--from-kafka", "--out", str(files["from-kafka"])),
                 ("export", "--out", str(files["export"])),
                 ("replay", str(files["export"]), "--out", str(files["from-export"]))):
        result = worker_run.rollguard(*args)
        assert result.returncode == 0, result.stderr

    def records(path: Path, kind: str) -> list[Any]:
        found = [decode(line, check_key=False).record for line in path.read_bytes().splitlines()]
        return sorted((r for r in found if r is not None and r.type == kind),
                      key=lambda r: (r.ts, r.service, getattr(r, "name", "")))

    assert records(files["export"], "metric") == records(files["native"], "metric")
    assert records(files["export"], "deploy") == records(files["native"], "deploy")
    decided = files["from-native"].read_bytes()
    assert b"auto_rollback" in decided
    assert files["from-kafka"].read_bytes() == decided
    assert files["from-export"].read_bytes() == decided


async def test_a_cumulative_counter_keeps_its_rate_across_a_kill_9(
    worker_run: WorkerRun, producer: AIOKafkaProducer,
) -> None:
    """The cumulative series' previous values are in the checkpoint: after `kill -9` the new
    leader turns the next point into a rate at once (a leader without them would only prime
    the series again; it never gives a wrong rate either: tests/unit/test_otlp.py)."""
    import signal

    from tests.broker.worker_io import log_size, log_text, wait_processed, wait_role
    from tests.otlp_messages import CUMULATIVE, counter

    t0 = 1_795_593_600.0
    rules = [{"source": "app.requests", "metric": "request_rate", "kind": "counter"}]
    worker_run.env.update(ROLLGUARD_MAX_CLOCK_SKEW_SECONDS="1e10",
                          ROLLGUARD_INGEST__OTLP__RULES=json.dumps(rules),
                          ROLLGUARD_SESSION_TIMEOUT_SECONDS="6")  # the dead lease lapses sooner

    async def total(ts: float, value: int) -> None:
        msg = request(({"service.name": "cart"}, [
            counter("app.requests", [number(ts, value, start=t0 - 60)], CUMULATIVE)]))
        await producer.send_and_wait(worker_run.topic("otlp_metrics"),
                                     encode(msg, "otlp_proto"))

    worker_run.start()
    worker_run.wait_healthy()
    await wait_role(worker_run, "leader")
    await total(t0, 100)        # primes the series
    await total(t0 + 10, 200)   # 10/s
    await wait_processed(worker_run, 1)  # one sample through the core, then a checkpoint

    assert worker_run.stop(signal.SIGKILL) == -signal.SIGKILL
    since = log_size(worker_run)
    worker_run.start()
    worker_run.wait_healthy()
    await wait_role(worker_run, "leader")
    await total(t0 + 20, 400)   # 20/s: a rate only from the checkpointed previous value
    await total(t0 + 30, 700)   # 30/s
    await wait_processed(worker_run, 2)
    assert "primes again" not in log_text(worker_run, since)
