"""What both HTTP bridges share: the Kafka producer, dead letters, counters, HTTP answers.

A bridge answers only after Kafka acknowledged what it published (idempotent producer,
``acks=all``), so a sender that got a 2xx may forget the data. Its status codes follow what
the senders do with them: 2xx done; 4xx (bad body, wrong content type, too big) not retried —
the body is dead-lettered with its bytes and HTTP headers; 5xx and 429 retried — answered with
``Retry-After`` when Kafka is unreachable or the producer has too much in flight.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, generate_latest

from rollguard.models.events import DeadLetter
from rollguard.streams.ingest.outputs import cloudevent_headers
from rollguard.streams.serde import encode
from rollguard.streams.settings import Settings

__all__ = ["Bridge", "BridgeError", "RETRY_AFTER_SECONDS"]

log = logging.getLogger("rollguard.bridge")

RETRY_AFTER_SECONDS = 5
_KEPT_HEADERS = ("content-type", "content-encoding", "user-agent",
                 "x-prometheus-remote-write-version")


class BridgeError(Exception):
    """An HTTP answer other than success: ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str, *, dead_letter: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.dead_letter = dead_letter


class Bridge:
    """An aiohttp application that turns HTTP requests into records on one topic."""

    name = "bridge"

    def __init__(self, settings: Settings, topic: str, max_in_flight: int) -> None:
        self.settings = settings
        self.topic = settings.topic(topic)
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.producer: AIOKafkaProducer | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter("rollguard_bridge_requests", "HTTP requests by answer",
                                ["bridge", "code"], registry=self.registry)
        self.records = Counter("rollguard_bridge_records", "Records published",
                               ["bridge"], registry=self.registry)
        self.dead_letters = Counter("rollguard_bridge_dead_letters", "Bodies dead-lettered",
                                    ["bridge"], registry=self.registry)
        self.ce_source = f"{settings.ingest.cloudevents_source}/bridge-{self.name}"

    def app(self, path: str, handler: Callable[[bytes, web.Request], Awaitable[list[Any]]]
            ) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)

        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                records = await handler(body, request)
                await self.publish(records)
            except BridgeError as err:
                if err.dead_letter:
                    await self.dead_letter(body, request, err.reason)
                return self._answer(err.status, err.reason)
            return self._answer(204 if self.name == "prometheus" else 200, "")

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry),
                                content_type="text/plain", charset="utf-8")

        async def health(_: web.Request) -> web.Response:
            return web.json_response({"bridge": self.name, "in_flight": self.in_flight})

        app.router.add_post(path, receive)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", health)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    def _answer(self, status: int, reason: str) -> web.Response:
        self.requests.labels(bridge=self.name, code=str(status)).inc()
        headers = {}
        if status in (429, 503):
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if status >= 400:
            log.warning("%s bridge answered %d: %s", self.name, status, reason)
        return web.Response(status=status, text=reason, headers=headers)

    async def _start(self, _: web.Application) -> None:
        settings = self.settings
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                         enable_idempotence=True, linger_ms=5,
                                         request_timeout_ms=15_000,
                                         **settings.kafka_client_options())
        await self.producer.start()

    async def _stop(self, _: web.Application) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def publish(self, records: Iterable[Any]) -> None:
        """Send ``records`` keyed by service and wait for Kafka's acknowledgements."""
        records = list(records)
        if not records:
            return
        if self.in_flight + len(records) > self.max_in_flight and self.in_flight:
            raise BridgeError(503, f"{self.in_flight} records in flight; retry later",
                              dead_letter=False)
        assert self.producer is not None
        self.in_flight += len(records)
        try:
            futures = []
            for record in records:
                value = encode(record)
                futures.append(await self.producer.send(
                    self.topic, value, key=record.service.encode(),
                    headers=cloudevent_headers(record, value, self.ce_source)))
            await asyncio.gather(*futures)
        except Exception as err:  # noqa: BLE001 - any Kafka failure is retryable for the sender
            raise BridgeError(503, f"Kafka did not take the records ({type(err).__name__}: "
                                   f"{err}); retry later", dead_letter=False) from None
        finally:
            self.in_flight -= len(records)
        self.records.labels(bridge=self.name).inc(len(records))

    async def dead_letter(self, body: bytes, request: web.Request, error: str) -> None:
        """Publish the body (its bytes and HTTP headers) to the dead-letter topic."""
        letter = DeadLetter(topic=f"http:{self.name}{request.path}", partition=None,
                            offset=None, key_b64=None,
                            value_b64=base64.b64encode(body).decode("ascii"),
                            error=error, ts=time.time())
        headers = [(name, request.headers[name].encode())
                   for name in _KEPT_HEADERS if name in request.headers]
        self.dead_letters.labels(bridge=self.name).inc()
        if self.producer is None:
            return
        try:
            await self.producer.send_and_wait(self.settings.topic("dead_letters"),
                                              encode(letter), headers=headers)
        except Exception:  # noqa: BLE001 - the answer to the sender matters more
            log.exception("could not publish a dead letter")


def serve(app: web.Application, host: str, port: int) -> None:
    """Run ``app`` until interrupted (SIGINT/SIGTERM)."""
    web.run_app(app, host=host, port=port, print=None, handle_signals=True)
