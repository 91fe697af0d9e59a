"""Where configuration comes from: YAML files under ``config/`` and ``ROLLGUARD_*`` env vars.

This is the *source* side of configuration. The schema the core receives (``models.policy``)
knows nothing about files or environment variables.

Precedence, highest first: command-line flags, environment variables (``ROLLGUARD_…``; nested
fields with ``__``, e.g. ``ROLLGUARD_TOPICS__DEPLOYS``), ``config/rollguard.yaml`` (or the file
named by ``ROLLGUARD_CONFIG``), built-in defaults.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from rollguard.models.policy import Policy, PolicyError
from rollguard.streams.ingest.mapping import IngestConfig

__all__ = [
    "ConfigError",
    "Settings",
    "TopicNames",
    "check_slots_policy",
    "load_policy",
    "load_settings",
]


class ConfigError(Exception):
    """Configuration that cannot be used. The message names the file, the field and the fix."""


class TopicNames(BaseModel):
    """Topic names of DESIGN §2 (before the prefix)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deploys: str = "deploys"
    metrics: str = "telemetry.metrics"
    alerts: str = "telemetry.alerts"
    approval_responses: str = "rollback.approval-responses"
    commands: str = "rollback.commands"
    approvals: str = "rollback.approvals"
    verdicts: str = "release.verdicts"
    decisions: str = "rollguard.decisions"
    dead_letters: str = "rollguard.dead-letters"
    results: str = "rollback.results"
    otlp_metrics: str = "otlp_metrics"
    """OTLP metrics as the OpenTelemetry Collector's Kafka exporter writes them (docs/ingest.md)."""

    def inputs(self) -> dict[str, str]:
        """Input topic name → the record ``type`` it carries."""
        return {
            self.deploys: "deploy",
            self.metrics: "metric",
            self.alerts: "alert",
            self.approval_responses: "approval_response",
        }


class Settings(BaseSettings):
    """Everything the shell needs to talk to Kafka and find its files."""

    model_config = SettingsConfigDict(
        env_prefix="ROLLGUARD_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    app_id: str = Field(default="rollguard", min_length=1)
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    topics: TopicNames = TopicNames()

    policy: Path = Path("config/policy.yaml")
    approvers: Path = Path("config/approvers.yaml")
    signing_key: Path | None = None
    verify_key: Path | None = None
    state_key: Path | None = None
    """Secret that authenticates the state changelog (default: derived from signing_key)."""

    ingest: IngestConfig = IngestConfig()
    """Foreign telemetry: OTLP mapping, bridges, CloudEvents (docs/ingest.md)."""

    max_message_bytes: int = Field(default=262144, gt=0)
    max_clock_skew_seconds: float = Field(default=300, gt=0)

    # Passed through to the Kafka clients (aiokafka / faust).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    idle_advance_seconds: float = Field(default=10.0, ge=0)
    """Quiet time after which event time follows the wall clock (0 disables); see app.py."""

    commit_interval_seconds: float = Field(default=1.0, gt=0)
    """Time between two checkpoints (stretched when checkpoints are costly). Outputs do not
    wait for one: they are published at once in output transactions."""
    session_timeout_seconds: float = Field(default=10.0, ge=6, le=300)
    """How long a silent leader keeps the lease before a standby takes over (kill -9)."""
    scale_out_slots: int = Field(default=1, ge=1, le=1024)
    """Slots of the worker mode (docs/worker.md, "On Kafka: slots"): slot ``s`` decides for
    input partition ``p`` of every input topic when ``p % scale_out_slots == s``; 1 is the
    single leader. Choose it once: changing it re-keys the state (a new app id)."""

    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("ROLLGUARD_CONFIG", "config/rollguard.yaml")
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file),
        )

    def topic(self, name: str) -> str:
        """The full name of a topic: prefix + its configured name."""
        return self.topic_prefix + str(getattr(self.topics, name))

    @property
    def state_topic(self) -> str:
        """The worker's compacted changelog (DESIGN §2: named after the app id)."""
        return f"{self.app_id}-state-changelog"

    @property
    def fleet_topic(self) -> str:
        """Fleet reports of partition-parallel workers (``streams.fleet_topic``)."""
        return f"{self.app_id}-fleet"

    @property
    def leader_topic(self) -> str:
        """One partition; its owner in the consumer group ``app_id`` is the leader."""
        return f"{self.app_id}-leader"

    def input_topic(self, kind: str) -> str:
        """The full name of the input topic that carries records of ``type`` ``kind``."""
        for name, carried in self.topics.inputs().items():
            if carried == kind:
                return self.topic_prefix + name
        raise ValueError(f"no input topic carries {kind!r} records")

    def kafka_client_options(self) -> dict[str, Any]:
        """Security options for aiokafka clients (producer, consumer, admin)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            )
        return options


def load_settings(**overrides: Any) -> Settings:
    """Settings from file, environment and ``overrides`` (CLI flags); ConfigError if invalid."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    source = os.environ.get("ROLLGUARD_CONFIG", "config/rollguard.yaml")
    try:
        return Settings(**clean)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            field = ".".join(str(p) for p in item["loc"])
            env = "ROLLGUARD_" + "__".join(str(p) for p in item["loc"]).upper()
            problems.append(f"{field}: {item['msg']} (set it in {source} or {env})")
        raise ConfigError("; ".join(problems)) from None


def check_slots_policy(settings: Settings, policy: Policy) -> None:
    """ConfigError if the worker mode cannot decide exactly as replay with this policy: its
    barrier assumes one allowed lateness for the whole fleet (docs/worker.md, "Scale-out")."""
    if settings.scale_out_slots == 1:
        return
    lateness = {policy.defaults.allowed_lateness_seconds}
    lateness.update(rules.allowed_lateness_seconds for rules in policy.services.values())
    if len(lateness) > 1:
        raise ConfigError(
            f"scale_out_slots: {settings.scale_out_slots} slots need one "
            f"allowed_lateness_seconds for every service; the policy sets {sorted(lateness)} "
            "(use one, or ROLLGUARD_SCALE_OUT_SLOTS=1)"
        )


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file; ``policy_version`` is the sha256 of its bytes."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"{file}: cannot read the policy ({err.strerror}); "
            "pass --policy FILE or set ROLLGUARD_POLICY"
        ) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{file}:{where}: not valid YAML: {err}") from None
    try:
        return Policy.from_mapping(data, version=hashlib.sha256(raw).hexdigest(), source=str(file))
    except PolicyError as err:
        raise ConfigError(str(err)) from None
