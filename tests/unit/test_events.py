"""Schemas of DESIGN §3: timestamps, enums, finiteness, unknown fields."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from rollguard.models.events import (
    ApprovalRequest,
    Decision,
    DeployEvent,
    InputEvent,
    MetricSample,
    Reason,
    ReasonCode,
    format_ts,
    parse_ts,
)

ADAPTER: TypeAdapter[object] = TypeAdapter(InputEvent)
NOV25 = 1795593600.0  # 2026-11-25T08:00:00Z


@pytest.mark.parametrize(
    ("given_ts", "expected"),
    [
        ("2026-11-25T08:00:00Z", NOV25),  # RFC 3339, Z
        ("2026-11-25T09:00:00+01:00", NOV25),  # RFC 3339 with an offset
        ("2026-11-25T08:00:00.250Z", NOV25 + 0.25),  # fractional seconds
        (NOV25, NOV25),  # epoch seconds, float
        (int(NOV25), NOV25),  # epoch seconds, int
    ],
)
def test_parse_ts_accepts_rfc3339_and_epoch_seconds(given_ts: object, expected: float) -> None:
    assert parse_ts(given_ts) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("given_ts", "fragment"),
    [
        ("2026-11-25T08:00:00", "no time zone"),  # naive: ambiguous
        ("yesterday", "neither RFC 3339"),  # not a time
        (True, "boolean"),  # bool is an int in Python; refuse it
        (1795593600000.0, "out of range"),  # milliseconds sent as seconds
        (-5, "out of range"),  # before the epoch
        (None, "got NoneType"),  # missing value
    ],
)
def test_parse_ts_refuses_with_a_reason(given_ts: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_ts(given_ts)


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_format_then_parse_round_trips_to_the_millisecond(seconds: float) -> None:
    assert abs(parse_ts(format_ts(seconds)) - seconds) <= 0.0005 + 1e-6


def test_unknown_fields_are_ignored_and_defaults_apply() -> None:
    event = ADAPTER.validate_python(
        {
            "type": "deploy", "deployment_id": "d", "service": "s", "version": "v2",
            "status": "started", "actor": "ci", "ts": NOV25, "extra": {"anything": 1},
        }
    )
    assert isinstance(event, DeployEvent)
    assert event.rollback_target is None
    assert event.change.shared_infra == ()
    assert not event.change.data_writes


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf],  # non-finite numbers are refused
)
def test_metric_value_must_be_finite(value: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        MetricSample(service="s", name="m", value=value, ts=NOV25)


def test_records_are_frozen() -> None:
    sample = MetricSample(service="s", name="m", value=1.0, ts=NOV25)
    with pytest.raises(ValidationError):
        sample.value = 2.0  # type: ignore[misc]


def test_output_times_are_rfc3339_and_reasons_are_codes() -> None:
    decision = Decision(
        deployment_id="d", service="s", action="pass", reasons=(), ts=NOV25,
        evidence={}, policy_version="p",
    )
    assert decision.model_dump(mode="json")["ts"] == "2026-11-25T08:00:00Z"
    request = ApprovalRequest(
        request_id="apr-1", deployment_id="d", service="s", to_version=None,
        reasons=(Reason(code=ReasonCode.DATA_WRITES, detail="change.data_writes"),),
        evidence={}, required_role="sre-oncall", expires_at=NOV25 + 1800,
    )
    dumped = request.model_dump(mode="json")
    assert dumped["reasons"] == [{"code": "DATA_WRITES", "detail": "change.data_writes"}]
    assert dumped["expires_at"] == "2026-11-25T08:30:00Z"
