"""``rollguard console``: the approval console, a small aiohttp app (aiohttp comes with faust).

Pages are rendered on the server from an ``ApprovalBook`` kept up to date from the topics
(``BookFeed``); the only script is ``static/console.js`` (signing in the browser, WebCrypto
Ed25519). Every response carries a strict Content-Security-Policy: nothing but the console's own
files, no inline script or style, no third-party asset. ``POST /api/responses`` takes an answer
signed in the browser, checks it (``answers.check_answer``) and publishes it to
``rollback.approval-responses``, keyed by service; nothing else on the console can act.
Requests are verified against the gate's keyring as they are read (``ApprovalBook``): one that
does not verify is listed as refused, with why, and cannot be answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from rollguard.models.policy import Policy
from rollguard.streams.approval_book import ApprovalBook
from rollguard.streams.approval_feed import BookFeed
from rollguard.streams.approvers import ApproverDirectory
from rollguard.streams.console.answers import Accepted, check_answer
from rollguard.streams.console.pages import (
    detail_page,
    index_page,
    not_found_page,
    refused_page,
)
from rollguard.streams.console.plots import request_png
from rollguard.streams.keyring import Keyring, KeyringFollower
from rollguard.streams.settings import Settings

__all__ = ["CSP", "ConsoleState", "make_app", "run_console"]

log = logging.getLogger("rollguard.console")
STATIC = Path(__file__).with_name("static")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Cache-Control": "no-store"}
_PLOT_SECONDS = 15.0


class ConsoleState:
    """What the handlers share: settings, policy, approvers, the gate's keyring, the feed and a
    producer."""

    def __init__(self, settings: Settings, policy: Policy, directory: ApproverDirectory,
                 keyring: Keyring | KeyringFollower) -> None:
        self.settings = settings
        self.policy = policy
        self.directory = directory
        self.feed = BookFeed(settings, keyring=keyring)
        self.producer: Any = None
        self._plots: dict[str, tuple[float, bytes | None]] = {}

    async def plot(self, request_id: str) -> bytes | None:
        """The request's timeline PNG, redrawn at most every 15 s."""
        view = self.feed.book.requests[request_id]
        cached = self._plots.get(request_id)
        if cached is not None and time.monotonic() - cached[0] < _PLOT_SECONDS:
            return cached[1]
        history = list(self.feed.book.history.get(view.service, ()))
        png = await asyncio.to_thread(request_png, self.settings, self.policy, view.request,
                                      history)
        self._plots[request_id] = (time.monotonic(), png)
        return png


@web.middleware
async def _security_headers(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as err:
        response = err
    response.headers.update(_HEADERS)
    return response


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status,
                        content_type="application/json")


def make_app(state: ConsoleState) -> web.Application:
    """The aiohttp application; the feed and producer start and stop with it."""
    app = web.Application(middlewares=[_security_headers], client_max_size=64 * 1024)

    def book() -> ApprovalBook:
        return state.feed.book  # replaced when the feed starts over after a broker outage

    async def index(_: web.Request) -> web.Response:
        return _html(index_page(book(), time.time()))

    async def detail(request: web.Request) -> web.Response:
        rid = request.match_info["request_id"]
        view = book().requests.get(rid)
        refusal = book().refused.get(rid)
        if view is None and refusal is not None:
            return _html(refused_page(refusal, time.time()), 403)
        if view is None:
            return _html(not_found_page(rid), 404)
        return _html(detail_page(view, book(), time.time()))

    async def plot(request: web.Request) -> web.Response:
        rid = request.match_info["request_id"]
        if rid not in book().requests:
            raise web.HTTPNotFound()
        png = await state.plot(rid)
        if png is None:
            raise web.HTTPNotFound(text="no telemetry to draw for this deployment")
        return web.Response(body=png, content_type="image/png")

    async def requests_json(_: web.Request) -> web.Response:
        now = time.time()
        return _json([{"request_id": v.request_id, "service": v.service, "state": v.state,
                       "pending": v.pending(now), "request": v.request}
                      for v in book().recent(limit=500)])

    async def refused_json(_: web.Request) -> web.Response:
        return _json({"total": book().refused_total,
                      "refused": [{"request_id": r.request_id, "service": r.service,
                                   "reason": r.reason, "seen_at": r.seen_at}
                                  for r in book().refused.values()]})

    async def respond(request: web.Request) -> web.Response:
        raw = await request.read()
        verdict = check_answer(raw, book(), state.directory, time.time(),
                               state.settings.max_clock_skew_seconds)
        if not isinstance(verdict, Accepted):
            log.warning("console: refused an answer: %s", verdict.reason)
            return _json({"ok": False, "error": verdict.reason}, verdict.status)
        topic = state.settings.topic("approval_responses")
        try:
            sent = await state.producer.send_and_wait(topic, orjson.dumps(verdict.data),
                                                      key=verdict.service.encode("utf-8"))
        except Exception as err:  # noqa: BLE001 - the approver must hear that it failed
            log.error("console: publishing an answer failed: %s", err)
            return _json({"ok": False, "error": f"could not publish to {topic}: "
                          f"{type(err).__name__}; try again"}, 503)
        log.info("console: published %s of %s by %s", verdict.data["decision"],
                 verdict.data["request_id"], verdict.data["approver"])
        return _json({"ok": True, "topic": topic, "partition": sent.partition,
                      "offset": sent.offset, "decision": verdict.data["decision"],
                      "request_id": verdict.data["request_id"]}, 202)

    async def health(_: web.Request) -> web.Response:
        return _json({"ok": True, "ready": state.feed.ready.is_set(),
                      "requests": len(book().requests), "refused": book().refused_total})

    async def lifecycle(_: web.Application) -> Any:
        from aiokafka import AIOKafkaProducer

        state.producer = AIOKafkaProducer(bootstrap_servers=state.settings.bootstrap_servers,
                                          acks="all", **state.settings.kafka_client_options())
        await state.producer.start()
        await state.feed.start()
        yield
        await state.feed.stop()
        await state.producer.stop()

    app.router.add_get("/", index)
    app.router.add_get("/requests/{request_id}", detail)
    app.router.add_get("/requests/{request_id}/plot.png", plot)
    app.router.add_get("/api/requests", requests_json)
    app.router.add_get("/api/refused", refused_json)
    app.router.add_post("/api/responses", respond)
    app.router.add_get("/health", health)
    app.router.add_static("/static/", STATIC)
    app.cleanup_ctx.append(lifecycle)
    return app


def run_console(state: ConsoleState, host: str, port: int) -> None:
    """Serve until interrupted; prints the URL once listening (port 0: a free port)."""
    async def main() -> None:
        import signal

        runner = web.AppRunner(make_app(state), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]  # the listening socket's (host, port, ...)
        print(f"rollguard console on http://{host}:{bound}/", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
