"""``rollguard notify``: tell people about approval requests and every change to them.

A consumer of the worker's output topics, separate from the worker (a slow webhook never holds
the decision loop), reading only committed records. Each change found by ``ApprovalBook`` is
posted to every webhook that wants it (``config/notify.yaml``), with retries and back-off; a
post that still fails after the last try — or is refused for good (a 4xx other than 408/429) —
becomes a dead letter on ``rollguard.dead-letters`` (the body that was not delivered, base64,
and the reason). Offsets are committed only after every post of a batch succeeded or was
dead-lettered: delivery is at least once, and deduplicable by the idempotency key.

Every request is verified against the gate's keyring before anyone is told of it (the keys
``rollguard approve`` verifies with: ``--verify-key``/``--keyring``). A record on the approvals
topic that does not verify — unsigned, signed by a key not in the keyring, tampered — is not
posted: it is logged, counted (``refused``) and dead-lettered with its original bytes and the
reason, and nothing that refers to it is posted either.

On start, the records before the group's committed offsets are read again without posting,
so that the book knows the requests that later changes refer to. A group's first start treats
everything already on the topics as history: it is read, not posted.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from rollguard.models.events import DeadLetter
from rollguard.streams.approval_book import ApprovalBook, ApprovalChange, RefusedRequest
from rollguard.streams.approval_feed import assign_outputs, fold, output_consumer
from rollguard.streams.keyring import Keyring, KeyringFollower
from rollguard.streams.notify_bodies import body_for
from rollguard.streams.notify_config import NotifyConfig, Webhook
from rollguard.streams.serde import encode
from rollguard.streams.settings import Settings

__all__ = ["Delivery", "Notifier", "run_notifier"]

log = logging.getLogger("rollguard.notify")


@dataclass(frozen=True)
class Delivery:
    """How one post ended."""

    webhook: str
    key: str
    ok: bool
    tries: int
    reason: str = ""


class Notifier:
    """Posts approval changes to webhooks until ``stop`` is set."""

    def __init__(self, settings: Settings, config: NotifyConfig, group_id: str,
                 keyring: Keyring | KeyringFollower) -> None:
        self.settings = settings
        self.config = config
        self.group_id = group_id
        self.keys = keyring if isinstance(keyring, KeyringFollower) else KeyringFollower(
            keyring, None)
        """The gate's keys; a keyring file is re-read when it changes (a rotation)."""
        self.book = ApprovalBook(keyring=self.keys.keyring)
        self.deliveries: list[Delivery] = []
        self.refused: list[RefusedRequest] = []
        """Requests refused (not verified) and dead-lettered by this run."""

    async def run(self, stop: asyncio.Event) -> None:
        import aiohttp
        from aiokafka import AIOKafkaProducer

        consumer = output_consumer(self.settings, group_id=self.group_id)
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers,
                                    acks="all", **self.settings.kafka_client_options())
        await consumer.start()
        await producer.start()
        try:
            async with aiohttp.ClientSession() as http:
                partitions: list[Any] = []
                while not partitions and not stop.is_set():
                    partitions = await assign_outputs(consumer, self.settings)
                    if len({tp.topic for tp in partitions}) < 2:
                        partitions = []
                        await asyncio.sleep(1.0)
                if stop.is_set():
                    return
                held = await self._rebuild(consumer, partitions)
                if held:
                    await self._batch(held, http, producer, consumer)
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=500)
                    messages = [m for ms in batches.values() for m in ms]
                    if messages:
                        await self._batch(messages, http, producer, consumer)
                    for change in self.book.expire(time.time()):
                        await self._deliver(change, None, http, producer)
        finally:
            await producer.stop()
            await consumer.stop()

    async def _rebuild(self, consumer: Any, partitions: list[Any]) -> list[Any]:
        """Fold what was already notified, silently; return later messages fetched meanwhile."""
        from aiokafka.structs import OffsetAndMetadata

        committed = {tp: await consumer.committed(tp) for tp in partitions}
        fresh = [tp for tp, offset in committed.items() if offset is None]
        if fresh:
            # A group's first start: what is already on the topics is history, not news. It is
            # read silently, and the start is committed at once so nothing after it is skipped.
            ends = await consumer.end_offsets(fresh)
            committed.update(ends)
            await consumer.commit({tp: OffsetAndMetadata(ends[tp], "") for tp in fresh})
        await consumer.seek_to_beginning(*partitions)
        behind = [tp for tp in partitions if committed[tp] > 0]
        held: list[Any] = []
        newest = 0.0
        while behind:
            batches = await consumer.getmany(*behind, timeout_ms=500)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset < committed[tp]:
                        fold(self.book, message)
                        newest = max(newest, message.timestamp / 1000.0)
                    else:
                        held.append(message)
            behind = [tp for tp in behind if await consumer.position(tp) < committed[tp]]
        self.book.expire(newest)  # expiries told before the last committed record
        log.info("notify: %d requests known from before the committed offsets",
                 len(self.book.requests))
        return held

    async def _batch(self, messages: list[Any], http: Any, producer: Any,
                     consumer: Any) -> None:
        from aiokafka import TopicPartition
        from aiokafka.structs import OffsetAndMetadata

        if self.keys.refresh() is not None:
            self.book.keyring = self.keys.keyring
        for message in messages:
            before = self.book.refused_total
            changes = fold(self.book, message)
            if self.book.refused_total > before:
                await self._refuse(message, producer)
            for change in changes:
                await self._deliver(change, message, http, producer)
        last: dict[Any, int] = {}
        for message in messages:
            last[TopicPartition(message.topic, message.partition)] = message.offset + 1
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in last.items()})

    async def _refuse(self, message: Any, producer: Any) -> None:
        """Dead-letter a request that does not verify: the original bytes and the reason."""
        refusal = next(reversed(self.book.refused.values()))
        self.refused.append(refusal)
        error = (f"approval request {refusal.request_id or '?'} not notified: cannot be "
                 f"verified ({refusal.reason})")
        letter = DeadLetter(
            topic=message.topic, partition=message.partition, offset=message.offset,
            key_b64=base64.b64encode(message.key).decode() if message.key is not None else None,
            value_b64=base64.b64encode(message.value or b"").decode(), error=error,
            ts=time.time())
        await producer.send_and_wait(self.settings.topic("dead_letters"), encode(letter),
                                     key=message.key)

    async def _deliver(self, change: ApprovalChange, source: Any | None, http: Any,
                       producer: Any) -> None:
        posts = []
        for webhook in self.config.webhooks:
            body = body_for(change, webhook, self.config.console_url)
            if body is not None:
                posts.append(self._post(webhook, change, body, source, http, producer))
        self.deliveries.extend(await asyncio.gather(*posts))

    async def _post(self, webhook: Webhook, change: ApprovalChange, body: dict[str, Any],
                    source: Any | None, http: Any, producer: Any) -> Delivery:
        import aiohttp

        key = change.idempotency_key
        retry = self.config.retry
        data = orjson.dumps(body)
        headers = {"Content-Type": "application/json", "Idempotency-Key": key,
                   "User-Agent": "rollguard-notify", **webhook.headers}
        reason = ""
        tries = 0
        while tries < retry.attempts:
            tries += 1
            wait: float | None = None
            try:
                async with http.post(str(webhook.url), data=data, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=retry.timeout_seconds)
                                     ) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        log.info("notify: %s %s delivered (try %d)", webhook.name, key, tries)
                        return Delivery(webhook.name, key, True, tries)
                    reason = f"HTTP {response.status}"
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        break  # refused for good: retrying sends the same body again
                    wait = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as err:
                reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            if tries < retry.attempts:
                backoff = retry.backoff(tries) if wait is None else wait
                await asyncio.sleep(min(backoff, retry.max_backoff_seconds))
        error = (f"notify webhook {webhook.name}: {reason} after {tries} "
                 f"{'try' if tries == 1 else 'tries'} (idempotency key {key})")
        log.warning("%s; dead-lettered", error)
        # A change seen by the clock (an expiry) has no source record: the request's topic.
        letter = DeadLetter(
            topic=source.topic if source else self.settings.topic("approvals"),
            partition=source.partition if source else None,
            offset=source.offset if source else None,
            key_b64=base64.b64encode(key.encode()).decode(),
            value_b64=base64.b64encode(data).decode(), error=error, ts=time.time())
        await producer.send_and_wait(self.settings.topic("dead_letters"), encode(letter),
                                     key=source.key if source else change.service.encode())
        return Delivery(webhook.name, key, False, tries, reason)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def run_notifier(settings: Settings, config: NotifyConfig, group_id: str,
                 keyring: KeyringFollower) -> None:
    """Run the notifier until SIGTERM/SIGINT (``rollguard notify``)."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Notifier(settings, config, group_id, keyring).run(stop)

    asyncio.run(main())
