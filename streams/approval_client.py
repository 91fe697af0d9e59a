"""`rollguard approve|deny`: sign an ApprovalResponse and publish it, keyed by service."""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson

from models.events import ApprovalResponse
from streams.serde import record_to_dict
from streams.settings import Settings
from streams.signing import sign_record

__all__ = ["find_request", "publish_response"]


async def find_request(
    settings: Settings, request_id: str, timeout: float = 15.0
) -> dict[str, Any]:
    """Look ``request_id`` up on the approvals topic (read from the beginning)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic("approvals"), bootstrap_servers=settings.bootstrap_servers,
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed",  # the worker publishes in transactions
        **settings.kafka_client_options(),
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches and await _at_end(consumer):
                break
            for messages in batches.values():
                for message in messages:
                    try:
                        data = orjson.loads(message.value or b"")
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(data, dict) and data.get("request_id") == request_id:
                        return data
    finally:
        await consumer.stop()
    raise LookupError(
        f"approval request {request_id} not found on {settings.topic('approvals')}; "
        "check the id, or pass --service"
    )


async def _at_end(consumer: Any) -> bool:
    partitions = consumer.assignment()
    if not partitions:
        return False
    ends = await consumer.end_offsets(list(partitions))
    positions = {tp: await consumer.position(tp) for tp in ends}
    return all(positions[tp] >= end for tp, end in ends.items())


async def publish_response(settings: Settings, request_id: str, identity: str,
                           decision: Literal["approve", "deny"],
                           comment: str, key: Any, service: str | None) -> str:
    """Sign and publish the response; return the service it was keyed by."""
    from aiokafka import AIOKafkaProducer

    if service is None:
        service = str((await find_request(settings, request_id))["service"])
    response = ApprovalResponse(request_id=request_id, approver=identity, decision=decision,
                                ts=time.time(), comment=comment, service=service)
    signed = sign_record(response, key)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                **settings.kafka_client_options())
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("approval_responses"),
                                     orjson.dumps(record_to_dict(signed)),
                                     key=service.encode("utf-8"))
    finally:
        await producer.stop()
    return service
