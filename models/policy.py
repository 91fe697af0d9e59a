"""The policy of DESIGN §10: every threshold that can trigger an action, as typed, frozen data.

The policy is data, versioned by the sha256 of its source bytes. ``defaults`` apply to every
service; ``services.<name>`` overrides them field by field, and metrics merge by metric name and
then field by field. A service the policy does not name gets the defaults.

This module is the *schema*: it validates a mapping already read from somewhere. Reading the
YAML file is the shell's job (``streams.settings.load_policy``).

>>> policy = Policy.from_mapping({"version": 1, "services": {"checkout":
...     {"metrics": {"error_rate": {"max": 0.02}}}}}, version="test")
>>> policy.for_service("checkout").metrics["error_rate"].max
0.02
>>> policy.for_service("checkout").metrics["error_rate"].max_ratio_to_baseline
3.0
>>> policy.for_service("search").metrics["error_rate"].max
0.05
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rollguard.models.events import BLOCKERS, TRIGGERS, ReasonCode

__all__ = [
    "DEFAULT_METRICS",
    "FleetPolicy",
    "MetricPolicy",
    "Policy",
    "PolicyError",
    "PreAuthorization",
    "ServicePolicy",
]

PositiveSeconds = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class _Strict(BaseModel):
    """Policy models refuse unknown fields: a typo must never silently fall back to a default."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class MetricPolicy(_Strict):
    """Thresholds of one metric.

    A window breaches when its ``stat`` is above ``max``, or above ``max_ratio_to_baseline``
    times the baseline's value of that stat. ``role: traffic`` never breaches; it feeds the
    conflict and low-traffic checks.
    """

    expected_interval_seconds: PositiveSeconds
    stat: Literal["mean", "p95", "max"] = "mean"
    max: NonNegative | None = None
    max_ratio_to_baseline: Annotated[float, Field(gt=1.0)] | None = None
    role: Literal["threshold", "traffic"] = "threshold"

    @model_validator(mode="after")
    def _has_a_threshold(self) -> MetricPolicy:
        if self.role == "threshold" and self.max is None and self.max_ratio_to_baseline is None:
            raise ValueError(
                "a threshold metric needs 'max' or 'max_ratio_to_baseline' "
                "(or 'role: traffic' if it only measures traffic)"
            )
        if self.role == "traffic" and (
            self.max is not None or self.max_ratio_to_baseline is not None
        ):
            raise ValueError(
                "a traffic metric never breaches: remove 'max'/'max_ratio_to_baseline' "
                "or drop 'role: traffic'"
            )
        return self


DEFAULT_METRICS: dict[str, dict[str, Any]] = {
    "error_rate": {
        "expected_interval_seconds": 10,
        "stat": "mean",
        "max": 0.05,
        "max_ratio_to_baseline": 3.0,
    },
    "latency_p99_ms": {
        "expected_interval_seconds": 10,
        "stat": "mean",
        "max": 1000,
        "max_ratio_to_baseline": 2.0,
    },
    "request_rate": {"expected_interval_seconds": 10, "role": "traffic"},
}


class ServicePolicy(_Strict):
    """The effective policy of one service (defaults merged with its overrides)."""

    window_seconds: Annotated[int, Field(gt=0, le=86400)] = 30
    allowed_lateness_seconds: Annotated[float, Field(ge=0)] = 10
    bake_seconds: PositiveSeconds = 600
    baseline_windows: Annotated[int, Field(ge=1)] = 20
    min_baseline_windows: Annotated[int, Field(ge=1)] = 10
    consecutive_breach_windows: Annotated[int, Field(ge=1)] = 2
    stale_after_seconds: PositiveSeconds = 90
    min_coverage: Fraction = 0.8
    min_traffic: NonNegative = 1.0
    flap_limit: Annotated[int, Field(ge=2)] = 4
    flap_window_seconds: PositiveSeconds = 300
    max_baseline_cv: Annotated[float, Field(gt=0)] = 1.0
    source_tolerance: Annotated[float, Field(gt=0)] = 0.5
    anomaly_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.8
    anomaly_persist_windows: Annotated[int, Field(ge=1)] = 4
    """Consecutive anomalous windows before an ANOMALY with neither a THRESHOLD_BREACH nor a
    CRITICAL_ALERT beside it becomes a trigger (with either, ``consecutive_breach_windows``).
    Never fewer than ``consecutive_breach_windows``: see ``anomaly_only_windows``."""
    command_ttl_seconds: PositiveSeconds = 300
    approval_ttl_seconds: PositiveSeconds = 1800
    required_role: Annotated[str, Field(min_length=1)] = "sre-oncall"
    tier: Literal["narrow", "shared"] = "narrow"
    auto_rollback: bool = True
    runbook: str | None = None
    metrics: dict[str, MetricPolicy] = Field(
        default_factory=lambda: {k: MetricPolicy(**v) for k, v in DEFAULT_METRICS.items()}
    )

    @model_validator(mode="after")
    def _consistent(self) -> ServicePolicy:
        if self.min_baseline_windows > self.baseline_windows:
            raise ValueError(
                f"min_baseline_windows ({self.min_baseline_windows}) cannot exceed "
                f"baseline_windows ({self.baseline_windows})"
            )
        if self.bake_seconds < self.window_seconds:
            raise ValueError(
                f"bake_seconds ({self.bake_seconds}) must cover at least one window "
                f"(window_seconds={self.window_seconds})"
            )
        return self

    @property
    def anomaly_only_windows(self) -> int:
        """Windows an anomaly-only episode must last: a model score alone never pages sooner
        than a written threshold does."""
        return max(self.anomaly_persist_windows, self.consecutive_breach_windows)

    def threshold_metrics(self) -> dict[str, MetricPolicy]:
        return {n: m for n, m in self.metrics.items() if m.role == "threshold"}

    def traffic_metrics(self) -> dict[str, MetricPolicy]:
        return {n: m for n, m in self.metrics.items() if m.role == "traffic"}


class FleetPolicy(_Strict):
    fleet_anomaly_limit: Annotated[int, Field(ge=2)] = 3
    max_auto_rollbacks_per_hour: Annotated[int, Field(ge=0)] = 5
    max_auto_rollbacks_per_service_per_hour: Annotated[int, Field(ge=0)] = 1


class PreAuthorization(_Strict):
    """A named, dated, owned rule that turns one specific approval case into automation."""

    id: Annotated[str, Field(min_length=1)]
    owner: Annotated[str, Field(min_length=1)]
    service: Annotated[str, Field(min_length=1)]
    expires: date
    when: tuple[ReasonCode, ...] = Field(min_length=1)
    allow_despite: tuple[ReasonCode, ...] = ()

    @model_validator(mode="after")
    def _codes_in_their_place(self) -> PreAuthorization:
        wrong_when = [c.value for c in self.when if c not in TRIGGERS]
        if wrong_when:
            raise ValueError(
                f"'when' lists triggers only ({', '.join(sorted(t.value for t in TRIGGERS))}); "
                f"not {', '.join(wrong_when)}"
            )
        wrong_allow = [c.value for c in self.allow_despite if c not in BLOCKERS]
        if wrong_allow:
            raise ValueError(f"'allow_despite' lists blockers only; not {', '.join(wrong_allow)}")
        return self

    def active_at(self, ts: float) -> bool:
        """Valid through the whole ``expires`` day (UTC), and not after."""
        end = datetime.combine(self.expires + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        return ts < end.timestamp()


class _PolicyDocument(_Strict):
    version: Literal[1] = 1
    defaults: dict[str, Any] = Field(default_factory=dict)
    services: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    fleet: FleetPolicy = FleetPolicy()
    rollback_authorities: tuple[str, ...] = ("svc:rollguard",)
    preauthorizations: tuple[PreAuthorization, ...] = ()


class PolicyError(ValueError):
    """A policy that cannot be used; ``problems`` lists (field path, message with the fix)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "<policy>") -> None:
        self.problems = problems
        self.source = source
        lines = [f"{source}: {path}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(error: ValidationError, prefix: str, model: type[BaseModel]) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        path = ".".join([prefix, *loc] if prefix else loc) or prefix or "<root>"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            known = _known_fields(model, loc[:-1])
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(known)}"
            msg = f"unknown field; {hint}"
        elif "input" in item and item["type"] not in ("missing", "value_error"):
            msg = f"{msg} (got {item['input']!r})"
        problems.append((path, msg))
    return problems


def _known_fields(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names valid at ``loc`` inside ``model`` (for 'did you mean' hints)."""
    current: Any = model
    for part in loc:
        if current is ServicePolicy and part == "metrics":
            current = "metrics"
            continue
        if current == "metrics":
            current = MetricPolicy
            continue
        fields = getattr(current, "model_fields", {})
        if part in fields:
            annotation = fields[part].annotation
            current = annotation if isinstance(annotation, type) else None
        elif part.isdigit() and current is _PolicyDocument:
            current = None
    fields = getattr(current, "model_fields", None) if current is not None else None
    return sorted(fields) if fields else []


class Policy(BaseModel):
    """A validated policy: defaults, per-service overrides, fleet limits and pre-authorisations."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    version: str
    defaults: ServicePolicy
    services: dict[str, ServicePolicy]
    fleet: FleetPolicy
    rollback_authorities: tuple[str, ...]
    preauthorizations: tuple[PreAuthorization, ...]

    @classmethod
    def from_mapping(cls, data: Any, *, version: str, source: str = "<policy>") -> Policy:
        """Validate a policy read from YAML; raise PolicyError naming every bad field."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise PolicyError([("<root>", "the policy must be a mapping (YAML object)")], source)
        try:
            doc = _PolicyDocument.model_validate(data)
        except ValidationError as err:
            raise PolicyError(_problems(err, "", _PolicyDocument), source) from None
        problems: list[tuple[str, str]] = []
        defaults_raw = dict(doc.defaults)
        defaults_raw["metrics"] = _deep_merge(DEFAULT_METRICS, defaults_raw.get("metrics") or {})
        try:
            defaults = ServicePolicy.model_validate(defaults_raw)
        except ValidationError as err:
            raise PolicyError(_problems(err, "defaults", ServicePolicy), source) from None
        services: dict[str, ServicePolicy] = {}
        base = defaults.model_dump()
        for name, override in doc.services.items():
            try:
                services[name] = ServicePolicy.model_validate(_deep_merge(base, override or {}))
            except ValidationError as err:
                problems.extend(_problems(err, f"services.{name}", ServicePolicy))
        if problems:
            raise PolicyError(problems, source)
        return cls(
            version=version,
            defaults=defaults,
            services=services,
            fleet=doc.fleet,
            rollback_authorities=doc.rollback_authorities,
            preauthorizations=doc.preauthorizations,
        )

    def for_service(self, service: str) -> ServicePolicy:
        """The effective policy of ``service``: its overrides, or the defaults."""
        return self.services.get(service, self.defaults)

    def preauthorizations_for(self, service: str) -> tuple[PreAuthorization, ...]:
        return tuple(r for r in self.preauthorizations if r.service == service)
