"""Simulated scenarios to files and to Kafka: the I/O that the pure simulator leaves out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rollguard.streams.serde import dumps
from rollguard.streams.settings import Settings

__all__ = ["publish_scenario", "send_events", "shifted_to_now", "write_scenario"]



def write_scenario(scenario: Any, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (events, JSON Lines) and ``<stem>.labels.json`` beside it (DESIGN §9)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for event in scenario.events:
            handle.write(dumps(event) + b"\n")
    labels_path = path.with_name(path.stem + ".labels.json")
    labels_path.write_bytes(dumps(scenario.labels, sort_keys=True) + b"\n")
    return path, labels_path


def shifted_to_now(events: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The events moved in time so that the last one is at ``now``.

    Live topics refuse events from the future (``max_clock_skew_seconds``), so a scenario
    published to Kafka is replayed as recent history. Scenarios whose meaning depends on the
    date (``preauth-expired``) lose that meaning when shifted; replay them from a file.
    """
    if not events:
        return []
    delta = now - max(e["ts"] for e in events)
    return [{**e, "ts": round(e["ts"] + delta, 3)} for e in events]


async def _publish(events: list[dict[str, Any]], settings: Settings) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_idempotence=True,
        **settings.kafka_client_options(),
    )
    await producer.start()
    try:
        return await send_events(producer, events, settings)
    finally:
        await producer.stop()


async def send_events(producer: Any, events: list[dict[str, Any]], settings: Settings, *,
                      record_timestamps: bool = False) -> int:
    """Send events to their input topics, keyed by service; ``record_timestamps`` sets each
    Kafka record's timestamp to the event time (so that a time range can find it)."""
    for event in events:
        stamp = round(event["ts"] * 1000) if record_timestamps else None
        await producer.send(settings.input_topic(event["type"]), dumps(event),
                            key=str(event["service"]).encode(), timestamp_ms=stamp)
    await producer.flush()
    return len(events)


def publish_scenario(scenario_name: str, seed: int, settings: Settings) -> int:
    """Publish a scenario to the input topics, keyed by service, ending at the current time."""
    from rollguard.streams.simulate import generate

    events = shifted_to_now(list(generate(scenario_name, seed).events), time.time())
    return asyncio.run(_publish(events, settings))
