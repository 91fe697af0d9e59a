"""CDEvents service events in both CloudEvents Kafka content modes (tests)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings.kafka import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


def cdevent(action: str, service: str, version: str, ts: float, **custom: Any
            ) -> dict[str, Any]:
    when = datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")
    return {
        "context": {"version": "0.4.1", "id": f"ev-{service}-{version}-{action}",
                    "source": "/ci/pipeline", "type": f"dev.cdevents.service.{action}.0.2.0",
                    "timestamp": when},
        "subject": {"id": f"service/{service}", "source": "/ci/pipeline", "type": "service",
                    "content": {"environment": {"id": "prod", "source": "/envs"},
                                "artifactId": f"pkg:oci/{service}@{version}"}},
        "customData": custom,
    }


def kafka_message(data: dict[str, Any], mode: str) -> tuple[dict[str, bytes], bytes]:
    """(headers, value) of ``data`` as a CloudEvent in ``binary`` or ``structured`` mode."""
    ctx = data["context"]
    event = CloudEvent(attributes={
        "type": ctx["type"], "source": ctx["source"], "id": ctx["id"], "specversion": "1.0",
        "datacontenttype": "application/json",
        "time": datetime.fromisoformat(ctx["timestamp"].replace("Z", "+00:00"))}, data=data)
    convert = to_binary if mode == "binary" else to_structured
    message = convert(event, JSONFormat())
    return dict(message.headers), message.value
