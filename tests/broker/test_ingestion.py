"""Ingestion on the real broker: bad input goes to the dead-letter topic, nothing else is lost."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.broker.conftest import WorkerRun, consume, eventually

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


def _metric(service: str, ts: float, value: float = 0.01) -> bytes:
    return orjson.dumps({"type": "metric", "service": service, "name": "error_rate",
                         "value": value, "ts": ts, "source": "prometheus"})


def _bad_inputs(now: float) -> list[tuple[str, str, bytes | None, bytes, str]]:
    """(case, topic, key, value, a fragment the error must contain)."""
    good = _metric("checkout", now)
    return [
        ("invalid-json", "telemetry.metrics", b"checkout", b'{"type": "metric", "serv',
         "not valid JSON"),
        ("wrong-type", "telemetry.metrics", b"checkout",
         good.replace(b"0.01", b'"very high"'), "value: Input should be a valid number"),
        ("missing-field", "telemetry.metrics", b"checkout",
         good.replace(b'"name":"error_rate",', b""), "name: Field required"),
        ("nan", "telemetry.metrics", b"checkout", good.replace(b"0.01", b"NaN"), "finite"),
        ("infinity", "telemetry.metrics", b"checkout", good.replace(b"0.01", b"1e999"), "finite"),
        ("unknown-type", "telemetry.metrics", b"checkout",
         b'{"type":"trace","service":"checkout"}', "unknown type 'trace'"),
        ("oversize", "telemetry.metrics", b"checkout", good[:-1] + b"," + b'"pad":"'
         + b"x" * 300_000 + b'"}', "max_message_bytes"),
        ("far-future", "telemetry.metrics", b"checkout", _metric("checkout", now + 86_400),
         "ahead of the reference clock"),
        ("non-utf8", "telemetry.metrics", b"checkout",
         good.replace(b'"prometheus"', b'"prom\xff\xfe"'), "not UTF-8"),
        ("empty", "telemetry.metrics", b"checkout", b"", "empty message"),
        ("wrong-key", "telemetry.metrics", b"payments", good, "does not match service"),
        ("wrong-topic", "telemetry.alerts", b"checkout", _metric("checkout", now + 1),
         "does not belong on topic"),
        ("bad-enum", "deploys", b"checkout", orjson.dumps(
            {"type": "deploy", "deployment_id": "d1", "service": "checkout", "version": "v2",
             "status": "exploded", "actor": "ci", "ts": now}), "status"),
    ]


async def test_bad_input_is_dead_lettered_and_valid_input_is_counted(
    worker_run: WorkerRun, producer: AIOKafkaProducer, kafka_bootstrap: str
) -> None:
    worker_run.start()
    worker_run.wait_healthy()
    now = time.time()
    bad = _bad_inputs(now)
    valid = [(f"svc-{i % 3}", _metric(f"svc-{i % 3}", now - 60 + i)) for i in range(30)]
    # Interleave: every bad message has valid ones behind it in the same partition.
    sent_valid = 0
    for index, (_, topic, key, value, _) in enumerate(bad):
        await producer.send_and_wait(worker_run.topic(topic), value, key=key)
        for service, payload in valid[index * 2:index * 2 + 2]:
            await producer.send_and_wait(worker_run.topic("telemetry.metrics"), payload,
                                         key=service.encode())
            sent_valid += 1
    for service, payload in valid[sent_valid:]:
        await producer.send_and_wait(worker_run.topic("telemetry.metrics"), payload,
                                     key=service.encode())
    letters = await consume(kafka_bootstrap, worker_run.topic("rollguard.dead-letters"),
                            len(bad), timeout=90)
    assert len(letters) == len(bad), worker_run.log_tail()
    by_value = {base64.b64decode(orjson.loads(m.value)["value_b64"] or ""): orjson.loads(m.value)
                for m in letters}
    for case, topic, key, value, fragment in bad:
        letter = by_value.get(value)
        assert letter is not None, f"{case}: original bytes not found on the dead-letter topic"
        assert fragment in letter["error"], f"{case}: {letter['error']}"
        assert letter["topic"] == worker_run.topic(topic)
        assert letter["key_b64"] == base64.b64encode(key).decode()
        assert isinstance(letter["offset"], int) and isinstance(letter["partition"], int)
    # Exactly the bad ones: nothing valid was dead-lettered.
    assert sum(1 for m in letters) == len(bad)

    await eventually(lambda: worker_run.metric("rollguard_events_in_total") >= len(valid), 60)
    assert worker_run.metric("rollguard_events_in_total", type="metric") == len(valid)
    assert worker_run.metric("rollguard_dead_letters_total") == len(bad)
    # /counts is what reached the core: the merger releases in event time, a moment later.
    def counted() -> int:
        counts = orjson.loads(worker_run.get("/counts"))
        return sum(c.get("metric", 0) for c in counts.values())

    await eventually(lambda: counted() == len(valid), 30)

    assert "rollguard_consumer_lag{" in worker_run.get("/metrics").decode()
    await eventually(lambda: worker_run.metric("rollguard_consumer_lag") == 0, 30)

    # Structured logs: every dead letter is a JSON line with its coordinates and error.
    logged = [orjson.loads(line) for line in worker_run.log_path.read_text().splitlines()
              if line.startswith("{")]
    letters_logged = [e for e in logged if e.get("message", "").startswith("dead letter")]
    assert len(letters_logged) == len(bad)
    assert all({"ts", "level", "topic", "offset", "error"} <= set(e) for e in letters_logged)

    # Still consuming afterwards.
    await producer.send_and_wait(worker_run.topic("telemetry.metrics"),
                                 _metric("svc-9", time.time()), key=b"svc-9")
    await eventually(lambda: worker_run.metric("rollguard_events_in_total") == len(valid) + 1, 30)
    assert worker_run.alive()
    assert worker_run.stop() == 0, worker_run.log_tail()
