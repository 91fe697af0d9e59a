"""Least-privilege Kafka ACLs for rollguard's roles (DESIGN §6; docs/security.md).

A principal mapping says which Kafka principal plays which role; ``acl_set`` turns it, with the
topic prefix and app id of ``Settings``, into the exact set of ALLOW bindings each role needs —
nothing else is allowed on a broker with ``allow.everyone.if.no.acl.found=false``. ``apply_acls``
creates them through Kafka's Admin API (confluent-kafka's AdminClient: aiokafka has no ACL calls).

>>> from streams.settings import Settings
>>> entries = acl_set(Settings(), PrincipalMap(gate=("User:gate",)))
>>> [e.line() for e in entries if e.name == "rollback.commands"]
['User:gate  ALLOW  WRITE  TOPIC  LITERAL  rollback.commands']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from rollguard.streams.settings import ConfigError, Settings

__all__ = ["AclEntry", "AclReport", "PrincipalMap", "ROLES", "acl_set", "apply_acls",
           "load_principals", "render"]

Role = Literal["gate", "executor", "approver", "producer", "analyst", "notifier", "console"]
ROLES: tuple[Role, ...] = (
    "gate", "executor", "approver", "producer", "analyst", "notifier", "console",
)
ResourceType = Literal["TOPIC", "GROUP", "TRANSACTIONAL_ID"]
Pattern = Literal["LITERAL", "PREFIXED"]
Operation = Literal["READ", "WRITE"]

_PRINCIPAL = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:[^\s:][^\s]*$")


class PrincipalMap(BaseModel):
    """Role → the Kafka principals (``User:name``) that play it. A principal plays one role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gate: tuple[str, ...] = ()
    executor: tuple[str, ...] = ()
    approver: tuple[str, ...] = ()
    producer: tuple[str, ...] = ()
    analyst: tuple[str, ...] = ()
    notifier: tuple[str, ...] = ()
    console: tuple[str, ...] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("*")
    @classmethod
    def _principal_form(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for principal in value:
            if not _PRINCIPAL.match(principal):
                raise ValueError(f"{principal!r} is not a Kafka principal; write e.g. 'User:gate'")
        return value

    @model_validator(mode="after")
    def _separate_roles(self) -> PrincipalMap:
        seen: dict[str, str] = {}
        for role in ROLES:
            for principal in getattr(self, role):
                if principal in seen:
                    raise ValueError(f"{principal} plays both {seen[principal]} and {role}; "
                                     "every role needs its own principal (DESIGN §6)")
                seen[principal] = role
        return self

    def principals(self, role: Role) -> tuple[str, ...]:
        value: tuple[str, ...] = getattr(self, role)
        return value


def load_principals(path: Path) -> PrincipalMap:
    """Read a principal mapping (YAML: ``role: [User:name, ...]``); ConfigError if invalid."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the principal mapping ({err.strerror}); "
                          "pass --principals FILE") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        return PrincipalMap.model_validate(data)
    except ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'mapping'}: {e['msg']}"
                    for e in err.errors()]
        raise ConfigError(f"{path}: {'; '.join(problems)} (roles: {', '.join(ROLES)})") from None


@dataclass(frozen=True, order=True)
class AclEntry:
    """One ALLOW binding: ``principal`` may ``operation`` on a resource, from any host.

    READ and WRITE imply DESCRIBE, which consumers and producers need for metadata and offsets.
    """

    principal: str
    resource_type: ResourceType
    pattern: Pattern
    name: str
    operation: Operation
    role: Role

    def line(self) -> str:
        return (f"{self.principal}  ALLOW  {self.operation}  {self.resource_type}  "
                f"{self.pattern}  {self.name}")

    def as_json(self) -> dict[str, str]:
        return {"principal": self.principal, "role": self.role, "permission": "ALLOW",
                "operation": self.operation, "resource_type": self.resource_type,
                "pattern_type": self.pattern, "resource_name": self.name, "host": "*"}

    def kafka_acls_args(self) -> list[str]:
        """The same binding as arguments of Kafka's own ``kafka-acls.sh --add``."""
        flag = {"TOPIC": "--topic", "GROUP": "--group",
                "TRANSACTIONAL_ID": "--transactional-id"}[self.resource_type]
        return ["--allow-principal", self.principal, "--operation", self.operation.title(),
                flag, self.name, "--resource-pattern-type", self.pattern.lower()]


# What each role may do: (resource type, pattern, operation, names). Names are functions of the
# settings so that the topic prefix and the app id are respected.
Grant = tuple[ResourceType, Pattern, Operation, Callable[[Settings], Iterable[str]]]


def _topics(*names: str) -> Callable[[Settings], list[str]]:
    return lambda settings: [settings.topic(name) for name in names]


INPUTS = ("deploys", "metrics", "alerts", "approval_responses", "otlp_metrics")
GATE_OUTPUTS = ("commands", "approvals", "verdicts", "decisions", "dead_letters")
PUBLIC = (*INPUTS, *GATE_OUTPUTS, "results")

GRANTS: dict[Role, tuple[Grant, ...]] = {
    # The worker: reads the inputs, is the only writer of its outputs and its state; leads
    # through its consumer group on the leader topic; writes in transactions of its own ids.
    "gate": (
        ("TOPIC", "LITERAL", "READ", _topics(*INPUTS)),
        ("TOPIC", "LITERAL", "WRITE", _topics(*GATE_OUTPUTS)),
        ("TOPIC", "LITERAL", "READ", lambda s: [s.state_topic, s.leader_topic, s.fleet_topic]),
        ("TOPIC", "LITERAL", "WRITE", lambda s: [s.state_topic, s.fleet_topic]),
        ("GROUP", "LITERAL", "READ", lambda s: [s.app_id]),
        # Prefixed: the single leader's `{app_id}-engine` and every slot's `{app_id}-engine-{s}`.
        ("TRANSACTIONAL_ID", "PREFIXED", "WRITE", lambda s: [f"{s.app_id}-engine"]),
    ),
    # Read commands (in their own groups: <app id>-executor...), report results.
    "executor": (
        ("TOPIC", "LITERAL", "READ", _topics("commands")),
        ("TOPIC", "LITERAL", "WRITE", _topics("results")),
        ("GROUP", "PREFIXED", "READ", lambda s: [f"{s.app_id}-executor"]),
    ),
    # Read approval requests, answer them.
    "approver": (
        ("TOPIC", "LITERAL", "READ", _topics("approvals")),
        ("TOPIC", "LITERAL", "WRITE", _topics("approval_responses")),
        ("GROUP", "PREFIXED", "READ", lambda s: [f"{s.app_id}-approver"]),
    ),
    # Telemetry pipelines and CI/CD: write telemetry and deploy events, read nothing.
    "producer": (
        ("TOPIC", "LITERAL", "WRITE", _topics("deploys", "metrics", "alerts", "otlp_metrics")),
    ),
    # Read every public topic (export, replay --from-kafka, dashboards); write nothing. The
    # gate's state is not theirs to read.
    "analyst": (
        ("TOPIC", "LITERAL", "READ", _topics(*PUBLIC)),
        ("GROUP", "PREFIXED", "READ", lambda s: [f"{s.app_id}-analyst"]),
    ),
    # `rollguard notify`: reads requests and decisions in its own group, posts them to
    # webhooks; dead-letters posts that failed and requests it cannot verify.
    "notifier": (
        ("TOPIC", "LITERAL", "READ", _topics("approvals", "decisions")),
        ("TOPIC", "LITERAL", "WRITE", _topics("dead_letters")),
        ("GROUP", "PREFIXED", "READ", lambda s: [f"{s.app_id}-notify"]),
    ),
    # `rollguard console`: reads requests and decisions (assigned, no group), publishes the
    # responses approvers sign in their browsers (signed by their keys, not the console's).
    "console": (
        ("TOPIC", "LITERAL", "READ", _topics("approvals", "decisions")),
        ("TOPIC", "LITERAL", "WRITE", _topics("approval_responses")),
    ),
}


def acl_set(settings: Settings, principals: PrincipalMap) -> list[AclEntry]:
    """The exact ALLOW bindings for ``principals``, sorted, without duplicates."""
    entries = {
        AclEntry(principal, resource_type, pattern, name, operation, role)
        for role in ROLES
        for principal in principals.principals(role)
        for resource_type, pattern, operation, names in GRANTS[role]
        for name in names(settings)
    }
    return sorted(entries, key=lambda e: (ROLES.index(e.role), e.principal, e.resource_type,
                                          e.operation, e.name))


def render(entries: list[AclEntry], output: Literal["table", "json", "kafka-acls"],
           bootstrap_servers: str = "127.0.0.1:9092") -> str:
    """The set as text: aligned lines per role, JSON, or ``kafka-acls.sh`` commands."""
    import json
    import shlex

    if output == "json":
        return json.dumps([e.as_json() for e in entries], indent=2)
    if output == "kafka-acls":
        return "\n".join(
            shlex.join(["kafka-acls.sh", "--bootstrap-server", bootstrap_servers,
                        "--command-config", "admin.properties", "--add", *e.kafka_acls_args()])
            for e in entries)
    widths = [max((len(str(v)) for v in column), default=0) for column in zip(
        *[(e.principal, e.operation, e.resource_type, e.pattern) for e in entries], strict=True)]
    lines: list[str] = []
    for role in ROLES:
        mine = [e for e in entries if e.role == role]
        if mine:
            lines.append(f"# {role}")
        for e in mine:
            lines.append("  ".join([e.principal.ljust(widths[0]), "ALLOW",
                                    e.operation.ljust(widths[1]), e.resource_type.ljust(widths[2]),
                                    e.pattern.ljust(widths[3]), e.name]))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ Kafka Admin API


@dataclass(frozen=True)
class AclReport:
    """What ``apply_acls`` found and did."""

    created: list[AclEntry]
    present: list[AclEntry]
    extra: list[str]
    """Other ALLOW bindings that reach rollguard's resources (any principal, any pattern)."""
    pruned: list[str]
    """The extra bindings deleted: those named exactly like one of the set's resources."""


def admin_config(settings: Settings) -> dict[str, str | int | float | bool]:
    """librdkafka configuration equivalent to ``Settings.kafka_client_options``."""
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol.lower(),
    }
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username or ""
        config["sasl.password"] = (settings.sasl_password.get_secret_value()
                                   if settings.sasl_password else "")
    for option, path in (("ssl.ca.location", settings.ssl_cafile),
                         ("ssl.certificate.location", settings.ssl_certfile),
                         ("ssl.key.location", settings.ssl_keyfile)):
        if path is not None:
            config[option] = str(path)
    return config


def _binding(entry: AclEntry) -> Any:
    from confluent_kafka.admin import AclBinding

    return AclBinding(entry.resource_type, entry.name, entry.pattern, entry.principal, "*",
                      entry.operation, "ALLOW")


def _described(binding: Any) -> str:
    return (f"{binding.principal}  {binding.permission_type.name}  {binding.operation.name}  "
            f"{binding.restype.name}  {binding.resource_pattern_type.name}  {binding.name}  "
            f"host={binding.host}")


def apply_acls(settings: Settings, entries: list[AclEntry], *, prune: bool = False,
               timeout: float = 30.0) -> AclReport:
    """Create the missing bindings (idempotent) and report every other ALLOW binding that
    reaches a resource of the set, whoever holds it (a wildcard or prefixed one included).

    With ``prune`` the extra bindings named exactly like a resource of the set are deleted;
    wildcard ones and shorter prefixes also reach resources outside this installation, so they
    are only listed.
    Needs a principal allowed to alter ACLs (a super user).
    """
    from confluent_kafka.admin import AclBindingFilter, AdminClient

    admin = AdminClient(admin_config(settings))
    wanted = {_binding(e): e for e in entries}
    resources = sorted({(e.resource_type, e.name) for e in entries})
    # None principal and host match any (librdkafka's filter, as AclBindingFilter's docstring
    # says); its annotations, inherited from AclBinding, say str.
    anyone = cast(str, None)
    futures = [admin.describe_acls(AclBindingFilter(kind, name, "MATCH", anyone, anyone,
                                                    "ANY", "ALLOW"), request_timeout=timeout)
               for kind, name in resources]
    existing = {binding for future in futures for binding in future.result()}
    missing = [b for b in wanted if b not in existing]
    extra = sorted((b for b in existing if b not in wanted), key=_described)
    if missing:
        for future in admin.create_acls(missing, request_timeout=timeout).values():
            future.result()
    # Named exactly like a resource of the set: this installation's to delete.
    owned = [b for b in extra if (b.restype.name, b.name) in set(resources)]
    if prune and owned:
        filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal,
                                    b.host, b.operation, b.permission_type) for b in owned]
        for future in admin.delete_acls(filters, request_timeout=timeout).values():
            future.result()
    return AclReport(created=sorted(wanted[b] for b in missing),
                     present=sorted(wanted[b] for b in wanted if b in existing),
                     extra=[_described(b) for b in extra],
                     pruned=[_described(b) for b in owned] if prune else [])
