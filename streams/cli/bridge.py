"""``rollguard bridge prometheus|alertmanager``: the HTTP bridges (docs/ingest.md)."""

from __future__ import annotations

import logging
from typing import Any

import click

from rollguard.streams.cli.common import BOOTSTRAP_OPTION, settings_for

__all__ = ["bridge"]


def _options(func: Any) -> Any:
    func = click.option("--host", default=None, help="Listen address [default: from config].")(
        func)
    func = click.option("--port", default=None, type=int,
                        help="Listen port [default: from config].")(func)
    return BOOTSTRAP_OPTION(func)


def _run(kind: str, host: str | None, port: int | None, bootstrap_servers: str | None) -> None:
    from rollguard.streams.bridges.alertmanager import AlertmanagerWebhookBridge
    from rollguard.streams.bridges.common import serve
    from rollguard.streams.bridges.prometheus import PrometheusWriteBridge

    settings = settings_for(bootstrap_servers)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    if kind == "prometheus":
        config = settings.ingest.prometheus
        app = PrometheusWriteBridge(settings).application()
        path = "/api/v1/write"
    else:
        config = settings.ingest.alertmanager
        app = AlertmanagerWebhookBridge(settings).application()
        path = "/alerts"
    host = host or config.host
    port = config.port if port is None else port
    click.echo(f"rollguard bridge {kind}: http://{host}:{port}{path}", err=True)
    serve(app, host, port)


@click.group()
def bridge() -> None:
    """HTTP bridges: Prometheus remote-write and Alertmanager webhooks into Kafka."""


@bridge.command()
@_options
def prometheus(host: str | None, port: int | None, bootstrap_servers: str | None) -> None:
    """Remote-write 1.0 endpoint (POST /api/v1/write) → telemetry.metrics."""
    _run("prometheus", host, port, bootstrap_servers)


@bridge.command()
@_options
def alertmanager(host: str | None, port: int | None, bootstrap_servers: str | None) -> None:
    """Alertmanager webhook receiver (POST /alerts, payload v4) → telemetry.alerts."""
    _run("alertmanager", host, port, bootstrap_servers)
