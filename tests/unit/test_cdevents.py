"""CDEvents over the CloudEvents Kafka binding → DeployEvent; CloudEvents output headers."""

from __future__ import annotations

import pytest

from rollguard.models.events import DeployStatus, MetricSample
from rollguard.streams.ingest.cdevents import decode_cdevent, is_cloudevent, rolledback_event
from rollguard.streams.ingest.inputs import decode_foreign, is_foreign
from rollguard.streams.ingest.mapping import OtlpConfig
from rollguard.streams.ingest.outputs import cloudevent_headers
from tests.cdevents_messages import cdevent, kafka_message

T0 = 1_795_593_600.0


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_service_deployed_starts_a_deployment(mode: str) -> None:
    data = cdevent("deployed", "checkout", "v2.4.1", T0, deployment_id="dep-42",
                   rollback_target="v2.4.0", previous_version="v2.4.0", actor="svc:ci",
                   change={"schema_migration": True, "shared_infra": ["db-main"]})
    headers, value = kafka_message(data, mode)
    assert is_cloudevent(headers)
    event = decode_cdevent(value, headers, b"checkout")
    assert not isinstance(event, str), event
    assert (event.deployment_id, event.service, event.version, event.rollback_target,
            event.status, event.actor, event.ts, event.environment) == (
        "dep-42", "checkout", "v2.4.1", "v2.4.0", DeployStatus.STARTED, "svc:ci", T0, "prod")
    assert event.change.schema_migration and event.change.shared_infra == ("db-main",)


@pytest.mark.parametrize(("action", "status"), [
    ("upgraded", DeployStatus.STARTED),         # an upgrade is a new release on trial
    ("rolledback", DeployStatus.ROLLED_BACK),   # ends the trial
])
def test_other_service_events(action: str, status: DeployStatus) -> None:
    headers, value = kafka_message(cdevent(action, "a", "v2", T0), "binary")
    event = decode_cdevent(value, headers, None)
    assert not isinstance(event, str)
    # defaults: deployment id from the CDEvent id, actor from its source, no rollback target
    assert (event.status, event.deployment_id, event.actor, event.rollback_target) == (
        status, "ev-a-v2-" + action, "/ci/pipeline", None)


@pytest.mark.parametrize(("data", "error"), [
    # a CDEvent rollguard does not read
    (cdevent("published", "a", "v1", T0), "not mapped"),
    # no version anywhere
    ({**cdevent("deployed", "a", "v1", T0), "subject": {"id": "service/a", "content": {}}},
     "no version"),
])
def test_unusable_cdevents_are_refused(data: dict[str, object], error: str) -> None:
    headers, value = kafka_message(data, "structured")
    result = decode_cdevent(value, headers, None)
    assert isinstance(result, str) and error in result


def test_foreign_decoding_dead_letters_keep_bytes_and_check_the_key() -> None:
    headers, value = kafka_message(cdevent("deployed", "a", "v1", T0), "binary")
    header_list = list(headers.items())
    assert is_foreign("deploy", header_list) and not is_foreign("deploy", [])
    args = dict(topic="deploys", partition=0, offset=7, expected="deploy", otlp=OtlpConfig(),
                reference_time=T0, max_clock_skew_seconds=300, max_message_bytes=262144)
    decoded = decode_foreign(value, key=b"other", headers=header_list, **args)  # type: ignore[arg-type]
    assert decoded.dead_letter is not None and "does not match" in decoded.dead_letter.error
    bad = decode_foreign(b"{not json", key=None, headers=header_list, **args)  # type: ignore[arg-type]
    assert bad.dead_letter is not None and bad.dead_letter.value_b64 is not None


def test_rolledback_event_reads_back_as_a_rollback() -> None:
    command = {"command_id": "cmd-1", "deployment_id": "dep-9", "service": "checkout",
               "from_version": "v2", "to_version": "v1", "issued_at": "2026-11-25T08:00:00Z"}
    headers, value = rolledback_event(command, "rollguard-executor/e1")
    event = decode_cdevent(value, headers, b"checkout")
    assert not isinstance(event, str)
    assert (event.status, event.deployment_id, event.version, event.ts) == (
        DeployStatus.ROLLED_BACK, "dep-9", "v1", T0)
    assert rolledback_event(command, "rollguard-executor/e1") == (headers, value)


def test_output_records_carry_cloudevent_headers() -> None:
    record = MetricSample(service="a", name="m", value=1.0, ts=T0)
    headers = dict(cloudevent_headers(record, b"{}", "rollguard/app"))
    assert headers["ce_type"] == b"dev.rollguard.metric"
    assert headers["ce_time"] == b"2026-11-25T08:00:00Z"
    assert headers["ce_subject"] == b"a" and headers["ce_specversion"] == b"1.0"
    assert is_cloudevent(headers)
