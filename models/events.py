"""The records of DESIGN §3: what flows in from Kafka and what rollguard emits.

Every record is a frozen pydantic v2 model. Unknown fields are ignored (producers may add
fields), numbers must be finite, enums are closed, and ``ts`` accepts RFC 3339 or epoch seconds.
Internally every time is a float of epoch seconds (UTC), so window arithmetic stays arithmetic.

Input records keep ``ts`` as a number when serialised (a replay file written back loses no
precision); output records write RFC 3339 with millisecond precision, ``Z`` suffixed.

>>> MetricSample.model_validate({"type": "metric", "service": "checkout", "name": "error_rate",
...     "value": 0.01, "ts": "2026-11-25T08:00:00Z", "source": "prometheus"}).ts
1795593600.0
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
)

__all__ = [
    "Alert",
    "ApprovalRequest",
    "ApprovalResponse",
    "ChangeSet",
    "CoreOutput",
    "DeadLetter",
    "Decision",
    "DecisionAction",
    "DeployEvent",
    "DeployStatus",
    "EventTime",
    "INPUT_TYPES",
    "InputEvent",
    "MetricSample",
    "OutputRecord",
    "Reason",
    "ReasonCode",
    "ReleaseVerdict",
    "RollbackCommand",
    "Timestamp",
    "VerdictOutcome",
    "format_ts",
    "parse_ts",
    "stable_id",
]

# Epoch seconds beyond year 9999 cannot be rendered as RFC 3339; anything that large is a unit
# mistake (milliseconds sent as seconds) and is refused rather than misread.
_MAX_EPOCH_SECONDS = 253402300799.0


def parse_ts(value: Any) -> float:
    """Read an event time given as RFC 3339 text or epoch seconds; return epoch seconds (UTC).

    >>> parse_ts("2026-11-25T08:00:00.5Z")
    1795593600.5
    >>> parse_ts(1795593600)
    1795593600.0
    """
    if isinstance(value, bool):
        raise ValueError("timestamp must be RFC 3339 text or epoch seconds, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError("timestamp must be a finite number of epoch seconds")
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"timestamp {value!r} is neither RFC 3339 (2026-11-25T08:00:00Z) "
                "nor epoch seconds"
            ) from None
        if moment.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no time zone; add 'Z' or an offset")
        seconds = moment.timestamp()
    else:
        raise ValueError(
            f"timestamp must be RFC 3339 text or epoch seconds, got {type(value).__name__}"
        )
    if not 0.0 <= seconds <= _MAX_EPOCH_SECONDS:
        raise ValueError(
            f"timestamp {value!r} is out of range (epoch seconds between 0 and year 9999; "
            "milliseconds are not accepted)"
        )
    return seconds


def format_ts(seconds: float) -> str:
    """Render epoch seconds as RFC 3339 UTC with millisecond precision.

    >>> format_ts(1795593600.0)
    '2026-11-25T08:00:00Z'
    >>> format_ts(1795593600.25)
    '2026-11-25T08:00:00.250Z'
    """
    millis = round(seconds * 1000)
    moment = datetime.fromtimestamp(millis // 1000, tz=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if millis % 1000:
        text += f".{millis % 1000:03d}"
    return text + "Z"


# Input time: parsed from either form, written back as the number it is.
EventTime = Annotated[float, BeforeValidator(parse_ts)]
# Output time: written as RFC 3339.
Timestamp = Annotated[float, BeforeValidator(parse_ts), PlainSerializer(format_ts)]

NonEmpty = Annotated[str, Field(min_length=1, max_length=512)]


class ReasonCode(StrEnum):
    """The stable reason codes of DESIGN §4."""

    # triggers
    THRESHOLD_BREACH = "THRESHOLD_BREACH"
    ANOMALY = "ANOMALY"
    CRITICAL_ALERT = "CRITICAL_ALERT"
    # blockers of automation
    TELEMETRY_STALE = "TELEMETRY_STALE"
    TELEMETRY_INCOMPLETE = "TELEMETRY_INCOMPLETE"
    ALERT_FLAPPING = "ALERT_FLAPPING"
    SIGNALS_CONFLICT = "SIGNALS_CONFLICT"
    MODEL_COLD = "MODEL_COLD"
    BASELINE_UNSTABLE = "BASELINE_UNSTABLE"
    BREACH_UNCONFIRMED = "BREACH_UNCONFIRMED"
    NO_ROLLBACK_TARGET = "NO_ROLLBACK_TARGET"
    SHARED_INFRA = "SHARED_INFRA"
    DATA_WRITES = "DATA_WRITES"
    SCHEMA_MIGRATION = "SCHEMA_MIGRATION"
    CREDENTIAL_ROTATION = "CREDENTIAL_ROTATION"
    SESSION_INVALIDATION = "SESSION_INVALIDATION"
    CROSS_DOMAIN_SECRETS = "CROSS_DOMAIN_SECRETS"
    BLAST_RADIUS = "BLAST_RADIUS"
    FLEET_WIDE_ANOMALY = "FLEET_WIDE_ANOMALY"
    RATE_LIMITED = "RATE_LIMITED"
    SAME_IDENTITY = "SAME_IDENTITY"
    POLICY_REQUIRES_APPROVAL = "POLICY_REQUIRES_APPROVAL"
    INSUFFICIENT_EVIDENCE = "INSUFFICIENT_EVIDENCE"
    LOW_TRAFFIC = "LOW_TRAFFIC"
    # outcomes of approval
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
    APPROVAL_SUPERSEDED = "APPROVAL_SUPERSEDED"
    APPROVAL_WITHDRAWN = "APPROVAL_WITHDRAWN"
    APPROVAL_REJECTED = "APPROVAL_REJECTED"


TRIGGERS: frozenset[ReasonCode] = frozenset(
    {ReasonCode.THRESHOLD_BREACH, ReasonCode.ANOMALY, ReasonCode.CRITICAL_ALERT}
)
BLOCKERS: frozenset[ReasonCode] = frozenset(
    {
        ReasonCode.TELEMETRY_STALE,
        ReasonCode.TELEMETRY_INCOMPLETE,
        ReasonCode.ALERT_FLAPPING,
        ReasonCode.SIGNALS_CONFLICT,
        ReasonCode.MODEL_COLD,
        ReasonCode.BASELINE_UNSTABLE,
        ReasonCode.BREACH_UNCONFIRMED,
        ReasonCode.NO_ROLLBACK_TARGET,
        ReasonCode.SHARED_INFRA,
        ReasonCode.DATA_WRITES,
        ReasonCode.SCHEMA_MIGRATION,
        ReasonCode.CREDENTIAL_ROTATION,
        ReasonCode.SESSION_INVALIDATION,
        ReasonCode.CROSS_DOMAIN_SECRETS,
        ReasonCode.BLAST_RADIUS,
        ReasonCode.FLEET_WIDE_ANOMALY,
        ReasonCode.RATE_LIMITED,
        ReasonCode.SAME_IDENTITY,
        ReasonCode.POLICY_REQUIRES_APPROVAL,
        ReasonCode.INSUFFICIENT_EVIDENCE,
        ReasonCode.LOW_TRAFFIC,
    }
)


class _Record(BaseModel):
    """Common configuration: frozen, unknown fields ignored, finite numbers only."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


class DeployStatus(StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


class ChangeSet(_Record):
    """What a release changes; anything here that is irreversible blocks automatic rollback."""

    data_writes: bool = False
    schema_migration: bool = False
    credential_rotation: bool = False
    session_invalidation: bool = False
    cross_domain_secrets: bool = False
    shared_infra: tuple[NonEmpty, ...] = ()


class DeployEvent(_Record):
    type: Literal["deploy"] = "deploy"
    deployment_id: NonEmpty
    service: NonEmpty
    version: NonEmpty
    previous_version: NonEmpty | None = None
    rollback_target: NonEmpty | None = None
    status: DeployStatus
    actor: NonEmpty
    ts: EventTime
    environment: NonEmpty = "prod"
    change: ChangeSet = ChangeSet()


class MetricSample(_Record):
    type: Literal["metric"] = "metric"
    service: NonEmpty
    name: NonEmpty
    value: float
    ts: EventTime
    source: NonEmpty = "unknown"
    instance: NonEmpty | None = None


class Alert(_Record):
    type: Literal["alert"] = "alert"
    alert_id: NonEmpty
    service: NonEmpty
    name: NonEmpty
    severity: Literal["critical", "warning", "info"]
    status: Literal["firing", "resolved"]
    ts: EventTime
    source: NonEmpty = "unknown"


class ApprovalResponse(_Record):
    type: Literal["approval_response"] = "approval_response"
    request_id: NonEmpty
    approver: NonEmpty
    decision: Literal["approve", "deny"]
    ts: EventTime
    comment: str = Field(default="", max_length=4096)
    signature: str = Field(default="", max_length=1024)
    # The service is the Kafka key of every topic; approval responses carry it so that they
    # land in the partition of the deployment they answer.
    service: NonEmpty | None = None
    # When the broker appended the response (its LogAppendTime), set by the worker and carried
    # by `rollguard export` into replay files; never signed and never the approver's to set
    # (the worker overwrites it). The core orders and times a response by it (DESIGN §6).
    received_at: EventTime | None = None

    @property
    def arrival(self) -> float:
        """The response's time in the core: its arrival at the broker if known, else ``ts``."""
        return self.received_at if self.received_at is not None else self.ts


InputEvent = Annotated[
    DeployEvent | MetricSample | Alert | ApprovalResponse, Field(discriminator="type")
]

INPUT_TYPES: dict[str, type[DeployEvent | MetricSample | Alert | ApprovalResponse]] = {
    "deploy": DeployEvent,
    "metric": MetricSample,
    "alert": Alert,
    "approval_response": ApprovalResponse,
}


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


class Reason(_Record):
    """A reason code with a human-readable detail (the numbers that tripped it)."""

    code: ReasonCode
    detail: str = ""


class RollbackCommand(_Record):
    type: Literal["rollback_command"] = "rollback_command"
    command_id: str
    deployment_id: str
    service: str
    from_version: str
    to_version: str
    authority: str
    issued_by: str
    issued_at: Timestamp
    expires_at: Timestamp
    reasons: tuple[str, ...]
    evidence: dict[str, Any]
    policy_version: str
    key_id: str = ""
    """Id of the gate key that signed it (a verifier looks it up in its keyring)."""
    signature: str = ""


class ApprovalRequest(_Record):
    type: Literal["approval_request"] = "approval_request"
    request_id: str
    deployment_id: str
    service: str
    proposed_action: Literal["rollback"] = "rollback"
    to_version: str | None
    reasons: tuple[Reason, ...]
    evidence: dict[str, Any]
    required_role: str
    expires_at: Timestamp
    runbook: str | None = None
    deploy_actor: str | None = None
    policy_version: str = ""
    key_id: str = ""
    signature: str = ""
    """Signed by the gate like a command, so approvers can tell a genuine request."""


DecisionAction = Literal["none", "watch", "auto_rollback", "request_approval", "pass"]
"""The ``action`` of a Decision (DESIGN §3)."""
VerdictOutcome = Literal["pass", "rolled_back", "pending_approval", "inconclusive"]
"""The ``verdict`` of a ReleaseVerdict (DESIGN §3)."""


class Decision(_Record):
    type: Literal["decision"] = "decision"
    deployment_id: str | None
    service: str
    action: DecisionAction
    reasons: tuple[str, ...]
    ts: Timestamp
    evidence: dict[str, Any]
    policy_version: str


class ReleaseVerdict(_Record):
    type: Literal["release_verdict"] = "release_verdict"
    deployment_id: str
    service: str
    verdict: VerdictOutcome
    ts: Timestamp
    reasons: tuple[str, ...]


class DeadLetter(_Record):
    type: Literal["dead_letter"] = "dead_letter"
    topic: str
    partition: int | None
    offset: int | None
    key_b64: str | None
    value_b64: str | None
    error: str
    ts: Timestamp


CoreOutput = RollbackCommand | ApprovalRequest | Decision | ReleaseVerdict
"""What the decision core emits (every one of them keyed by its service)."""
OutputRecord = CoreOutput | DeadLetter


def stable_id(prefix: str, service: str, deployment_id: str) -> str:
    """A stable id of one deployment, scoped by its service (DESIGN §6): one command and one
    request per (service, deployment_id), so two services that reuse a deployment id never
    share one. The service is length-prefixed, so no pair of names can collide by spelling.

    >>> stable_id("cmd", "checkout", "dep-42")
    'cmd-ec281ebdde41dd56'
    """
    scoped = f"{len(service)}:{service}:{deployment_id}"
    return f"{prefix}-{hashlib.sha256(scoped.encode('utf-8')).hexdigest()[:16]}"
