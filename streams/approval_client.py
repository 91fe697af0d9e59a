"""`rollguard approve|deny`: sign an ApprovalResponse and publish it, keyed by service.

It answers only a request it has read from the approvals topic and verified against the gate's
keyring: an approver is never made to sign an answer to a forged request."""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson

from rollguard.models.events import ApprovalResponse
from rollguard.streams.keyring import Keyring
from rollguard.streams.serde import record_to_dict
from rollguard.streams.settings import Settings
from rollguard.streams.signing import sign_record

__all__ = ["find_request", "publish_response"]


async def find_request(
    settings: Settings, request_id: str, keyring: Keyring, timeout: float = 15.0
) -> dict[str, Any]:
    """The approval request ``request_id`` on the approvals topic (read from the beginning),
    signed by a gate key of ``keyring``. Records with that id that do not verify (forged
    requests) are skipped; LookupError says why when none does."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic("approvals"), bootstrap_servers=settings.bootstrap_servers,
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed",  # the worker publishes in transactions
        **settings.kafka_client_options(),
    )
    refused: str | None = None
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
                    if not isinstance(data, dict) or data.get("request_id") != request_id:
                        continue
                    refused = keyring.problem(data, time.time())
                    if refused is None:
                        return data
    finally:
        await consumer.stop()
    if refused is not None:
        raise LookupError(f"refusing to answer {request_id}: the request on "
                          f"{settings.topic('approvals')} cannot be verified ({refused})")
    raise LookupError(
        f"approval request {request_id} not found on {settings.topic('approvals')}; "
        "check the id"
    )


async def _at_end(consumer: Any) -> bool:
    partitions = consumer.assignment()
    if not partitions:
        return False
    ends = await consumer.end_offsets(list(partitions))
    positions = {tp: await consumer.position(tp) for tp in ends}
    return all(positions[tp] >= end for tp, end in ends.items())


async def publish_response(settings: Settings, request_id: str, identity: str,
                           decision: Literal["approve", "deny"], comment: str, key: Any,
                           service: str | None, keyring: Keyring) -> str:
    """Sign and publish the response to a request the gate signed (DESIGN §6); return the
    service it was keyed by. LookupError when the request is missing or unverifiable."""
    from aiokafka import AIOKafkaProducer

    request = await find_request(settings, request_id, keyring)
    if service is not None and service != request["service"]:
        raise LookupError(f"refusing to answer {request_id}: it is a request of service "
                          f"{request['service']}, not {service}")
    service = str(request["service"])
    response = ApprovalResponse(request_id=request_id, approver=identity, decision=decision,
                                ts=time.time(), comment=comment, service=service)
    signed = sign_record(response, key)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                **settings.kafka_client_options())
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("approval_responses"),
                                     orjson.dumps(_without_arrival(signed)),
                                     key=service.encode("utf-8"))
    finally:
        await producer.stop()
    return service


def _without_arrival(response: ApprovalResponse) -> dict[str, Any]:
    """The response as sent: ``received_at`` is the broker's to give (streams/arrival.py)."""
    data = record_to_dict(response)
    data.pop("received_at", None)
    return data
