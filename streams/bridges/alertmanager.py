"""``rollguard bridge alertmanager``: Alertmanager webhook (payload v4) → ``telemetry.alerts``.

Each alert of a notification becomes one ``Alert``: ``alert_id`` is Alertmanager's
``fingerprint``, ``service`` the ``service_label`` label, ``name`` the ``alertname`` label,
``severity`` the ``severity_label`` label mapped by ``severities``, ``status`` firing/resolved,
``ts`` its ``startsAt`` when firing and its ``endsAt`` when resolved.

Answers: 200 published; 400 not a version-4 payload (dead-lettered; Alertmanager does not
retry 4xx); 503 with ``Retry-After`` when Kafka is unreachable (Alertmanager retries 5xx).
Alerts without the service label are dead-lettered (the notification's body) and the others
published.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from rollguard.models.events import Alert
from rollguard.streams.bridges.common import Bridge, BridgeError
from rollguard.streams.ingest.mapping import AlertmanagerBridge
from rollguard.streams.settings import Settings

__all__ = ["AlertmanagerWebhookBridge", "alerts_of"]


def alerts_of(body: bytes, config: AlertmanagerBridge) -> tuple[list[Alert], list[str]]:
    """The alerts of one webhook body, and the problems of those that were left out."""
    if len(body) > config.max_body_bytes:
        raise BridgeError(413, f"body of {len(body)} bytes exceeds max_body_bytes")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BridgeError(400, f"body is not JSON: {err}") from None
    if not isinstance(payload, dict) or str(payload.get("version")) != "4":
        got = payload.get("version") if isinstance(payload, dict) else None
        raise BridgeError(400, f"not an Alertmanager webhook payload version 4 (version {got!r})")
    items = payload.get("alerts")
    if not isinstance(items, list):
        raise BridgeError(400, "payload has no 'alerts' list")
    alerts: list[Alert] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        found = _alert(item, config)
        if isinstance(found, str):
            problems.append(f"alerts[{i}]: {found}")
        else:
            alerts.append(found)
    return alerts, problems


def _alert(item: Any, config: AlertmanagerBridge) -> Alert | str:
    if not isinstance(item, dict):
        return "not an object"
    labels = item.get("labels") or {}
    service = labels.get(config.service_label)
    if not service:
        return (f"no {config.service_label!r} label (alertname "
                f"{labels.get('alertname')!r}); add it to the alerting rule")
    status = item.get("status")
    raw_severity = str(labels.get(config.severity_label, "")).lower()
    try:
        return Alert.model_validate({
            "alert_id": item.get("fingerprint") or "", "service": service,
            "name": labels.get("alertname") or "unnamed", "status": status,
            "severity": config.severities.get(raw_severity, config.default_severity),
            "ts": item.get("endsAt") if status == "resolved" else item.get("startsAt"),
            "source": "alertmanager",
        })
    except ValidationError as err:
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                         for e in err.errors())


class AlertmanagerWebhookBridge(Bridge):
    """The webhook receiver (``POST /alerts``)."""

    name = "alertmanager"

    def __init__(self, settings: Settings) -> None:
        config = settings.ingest.alertmanager
        super().__init__(settings, "alerts", 10_000)
        self.config = config

    def application(self) -> web.Application:
        return self.app("/alerts", self.handle)

    async def handle(self, body: bytes, request: web.Request) -> list[Alert]:
        alerts, problems = alerts_of(body, self.config)
        if problems:
            await self.dead_letter(body, request, "; ".join(problems)[:2000])
        return alerts
