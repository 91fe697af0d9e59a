"""CDEvents deployment events over the CloudEvents Kafka binding → ``DeployEvent``.

Both content modes of the binding are read with the CloudEvents SDK (``cloudevents``):
*binary* (attributes in ``ce_*`` headers, the CDEvent in the value) and *structured*
(``content-type: application/cloudevents+json``, the whole CloudEvent in the value).

Mapping (docs/ingest.md):

- ``dev.cdevents.service.deployed.*`` and ``…service.upgraded.*`` → ``status: started``;
  ``…service.rolledback.*`` → ``status: rolled_back``;
- ``service``: ``customData.service``, else the last path segment of ``subject.id``
  (``service/checkout`` → ``checkout``);
- ``version``: from ``subject.content.artifactId``, a package URL (``pkg:oci/checkout@v2.4.1``
  → ``v2.4.1``; URL-decoded, so a digest ``sha256:…`` stays whole);
- ``deployment_id``: ``customData.deployment_id``, else the CDEvent's ``context.id``;
- ``environment``: ``subject.content.environment.id`` (default ``prod``);
- ``actor``: ``customData.actor``, else ``context.source``;
- ``ts``: ``context.timestamp`` (else the CloudEvent's ``time``);
- ``previous_version``, ``rollback_target`` and ``change`` (the change-set flags of DESIGN §3):
  from ``customData`` under the same names; no ``rollback_target`` means none is predefined.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError

from rollguard.models.events import DeployEvent, format_ts, parse_ts

__all__ = [
    "CDEVENT_PREFIX",
    "decode_cdevent",
    "is_cloudevent",
    "rolledback_event",
]

CDEVENT_PREFIX = "dev.cdevents.service."
_STATUS = {"deployed": "started", "upgraded": "started", "rolledback": "rolled_back"}
_FORMAT = JSONFormat()


def is_cloudevent(headers: dict[str, bytes]) -> bool:
    """True if the Kafka message is a CloudEvent in binary or structured mode."""
    if any(name.lower().startswith("ce_") for name in headers):
        return True
    content_type = headers.get("content-type", b"").decode("latin-1").lower()
    return content_type.startswith("application/cloudevents")


def version_from_artifact(artifact: str) -> str | None:
    """The version of a package URL.

    >>> version_from_artifact("pkg:oci/checkout@v2.4.1?repository_url=ghcr.io")
    'v2.4.1'
    >>> version_from_artifact("pkg:oci/checkout@sha256%3Aabc")
    'sha256:abc'
    """
    head = artifact.split("#", 1)[0].split("?", 1)[0]
    if "@" not in head:
        return None
    version = unquote(head.rsplit("@", 1)[1])
    return version or None


def decode_cdevent(value: bytes, headers: dict[str, bytes], key: bytes | None
                   ) -> DeployEvent | str:
    """The DeployEvent a CDEvents service event describes, or why there is none."""
    try:
        event = from_kafka(KafkaMessage(headers=headers, key=key, value=value), _FORMAT)
    except Exception as err:  # noqa: BLE001 - the SDK raises many kinds on bad input
        return f"not a valid CloudEvent (Kafka binding): {type(err).__name__}: {err}"
    kind = event.get_type()
    if not kind.startswith(CDEVENT_PREFIX):
        return f"CloudEvent type {kind!r} is not a CDEvents service event ({CDEVENT_PREFIX}*)"
    action = kind[len(CDEVENT_PREFIX):].split(".", 1)[0]
    status = _STATUS.get(action)
    if status is None:
        return (f"CDEvents type {kind!r} is not mapped; rollguard reads service.deployed, "
                "service.upgraded and service.rolledback")
    data = event.get_data()
    if isinstance(data, bytes | str):
        return "CDEvent data is not a JSON object (datacontenttype must be application/json)"
    if not isinstance(data, dict):
        return "CloudEvent has no CDEvent data"
    context = _obj(data.get("context"))
    subject = _obj(data.get("subject"))
    content = _obj(subject.get("content"))
    custom = _obj(data.get("customData"))
    subject_id = str(subject.get("id") or "")
    service = custom.get("service") or subject_id.rstrip("/").rsplit("/", 1)[-1]
    version = custom.get("version") or version_from_artifact(str(content.get("artifactId", "")))
    if not version:
        return ("CDEvent has no version: subject.content.artifactId must be a package URL "
                "with @version (pkg:oci/NAME@VERSION), or set customData.version")
    when = context.get("timestamp") or event.get_time()
    record: dict[str, Any] = {
        "deployment_id": custom.get("deployment_id") or context.get("id") or event.get_id(),
        "service": service,
        "version": version,
        "previous_version": custom.get("previous_version"),
        "rollback_target": custom.get("rollback_target"),
        "status": status,
        "actor": custom.get("actor") or context.get("source") or event.get_source(),
        "ts": when.isoformat() if isinstance(when, datetime) else when,
        "environment": _obj(content.get("environment")).get("id") or "prod",
        "change": _obj(custom.get("change")),
    }
    try:
        return DeployEvent.model_validate(record)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in err.errors()
        )
        return f"CDEvent does not make a valid deploy event: {problems}"


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def rolledback_event(command: dict[str, Any], source: str) -> tuple[dict[str, bytes], bytes]:
    """A CDEvents ``service.rolledback`` for an executed rollback command, in binary mode.

    Its time is the command's ``issued_at`` (event time, so a worker reading it does not see
    its clock jump), its ids derive from the command id (a redelivery is the same event).
    """
    service = str(command.get("service", ""))
    ident = str(uuid.uuid5(uuid.NAMESPACE_URL, f"rollguard:{command.get('command_id')}"))
    when = command.get("issued_at") or format_ts(time.time())
    kind = "dev.cdevents.service.rolledback.0.2.0"
    data = {
        "context": {"version": "0.4.1", "id": ident, "source": source, "type": kind,
                    "timestamp": when},
        "subject": {"id": f"service/{service}", "source": source, "type": "service",
                    "content": {"artifactId": f"pkg:generic/{service}@"
                                              f"{command.get('to_version', '')}",
                                "environment": {"id": "prod", "source": source}}},
        "customData": {"service": service, "deployment_id": command.get("deployment_id"),
                       "command_id": command.get("command_id"),
                       "from_version": command.get("from_version"),
                       "version": command.get("to_version"), "actor": source},
        "customDataContentType": "application/json",
    }
    event = CloudEvent(attributes={"type": kind, "source": source,
                                   "id": ident, "specversion": "1.0",
                                   "datacontenttype": "application/json",
                                   "subject": service, "time": _parse_time(when)},
                       data=data)
    message = to_binary(event, _FORMAT)
    return message.headers, message.value


def _parse_time(when: Any) -> datetime:
    return datetime.fromtimestamp(parse_ts(when), tz=UTC)
