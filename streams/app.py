"""The faust application: the worker's shell. No decision logic here.

``create_app`` builds a faust app (id ``settings.app_id``) that serves ``/health``, ``/counts``
and Prometheus ``/metrics`` and runs the ``DecisionEngine`` service (streams/worker.py), which
reads the input topics, runs the decision core and commits checkpoints. The app runs in faust's
producer-only mode: it joins no consumer group of its own, because leadership and input
positions are the engine's (a lease in the group ``app_id``, positions in its changelog).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rollguard.models.policy import Policy
from rollguard.streams.approvers import ApproverDirectory, load_approvers
from rollguard.streams.logs import logging_config
from rollguard.streams.metrics import WorkerMetrics
from rollguard.streams.settings import Settings
from rollguard.streams.worker import DecisionEngine

__all__ = ["create_app", "run_worker"]


def create_app(
    settings: Settings,
    policy: Policy,
    *,
    registry: CollectorRegistry | None = None,
    approvers: ApproverDirectory | None = None,
    signing_key: Any = None,
) -> tuple[faust.App, DecisionEngine]:
    """A faust app serving rollguard's pages, and the engine service it runs."""
    registry = registry if registry is not None else CollectorRegistry()
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        store="memory://",
        # Nothing is stored on disk (no faust tables); keep faust's data dir out of the cwd.
        datadir=Path(tempfile.gettempdir()) / f"rollguard-faust-{settings.app_id}",
        web_enabled=settings.web_port != 0,
        web_host=settings.web_host,
        web_port=settings.web_port or 6066,
        web_in_thread=False,
    )
    # Web server only: the engine owns every Kafka client it needs.
    app.producer_only = True
    app.boot_strategy = app.BootStrategy(app, enable_kafka=False, enable_sensors=False,
                                         enable_web=settings.web_port != 0)
    metrics = WorkerMetrics(registry)
    engine = DecisionEngine(settings, policy, metrics, approvers=approvers,
                            signing_key=signing_key)

    # faust's own Prometheus sensor costs ~29 µs per event (docs/performance.md); rollguard's
    # registry has what an on-call engineer pages on, consumer lag included.
    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        # 503 when the engine's task is gone, or it refuses its state: nothing is decided.
        ok = engine.running and engine.role != "refused"
        return web.json({"status": "ok" if ok else "engine stopped", "app_id": settings.app_id,
                         **engine.health(), "events": engine.counts_by_type()},
                        status=200 if ok else 503)

    @app.page("/counts")
    async def counts(web: Any, request: Any) -> Any:
        return web.json(engine.counts_by_service())

    return app, engine


def run_worker(settings: Settings, policy: Policy) -> None:
    """Run the worker in the foreground until SIGTERM/SIGINT (graceful shutdown)."""
    signing_key = None
    if settings.signing_key is not None:
        from rollguard.streams.signing import load_private_key

        signing_key = load_private_key(settings.signing_key)
    app, engine = create_app(settings, policy, approvers=load_approvers(settings.approvers),
                             signing_key=signing_key)
    worker = faust.Worker(
        app,
        engine,
        loglevel=settings.log_level.lower(),
        logging_config=logging_config(settings.log_level, settings.log_format),
    )
    worker.execute_from_commandline()
