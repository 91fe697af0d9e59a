"""The state codec follows the classes' annotations: restructured classes need no codec change,
and nothing outside the allow-list is ever built."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson
import pytest

from rollguard.models.events import DeployEvent
from rollguard.streams.statecodec import StateCodec, StateDecodeError


class Kind(StrEnum):
    DEPLOY = "deploy"
    EXPIRY = "expiry"


@dataclass(frozen=True, slots=True)
class Expiry:
    request_id: str


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A typed control event, as a frozen dataclass instead of a positional tuple."""

    ts: float
    kind: Kind
    payload: DeployEvent | Expiry
    tiebreak: tuple[str, int] = ()  # type: ignore[assignment]
    lateness: float = 0.0


@dataclass(slots=True)
class Schedule:
    events: list[Scheduled] = field(default_factory=list)
    seen: set[tuple[str, int]] = field(default_factory=set)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=3))
    by_bucket: dict[int, frozenset[str]] = field(default_factory=dict)
    mode: Literal["live", "replay"] = "live"
    notes: dict[str, Any] = field(default_factory=dict)
    added_later: int = 7


def _deploy() -> DeployEvent:
    return DeployEvent.model_validate({
        "type": "deploy", "deployment_id": "dep-1", "service": "checkout", "version": "v2",
        "previous_version": "v1", "rollback_target": "v1", "status": "started",
        "actor": "svc:ci", "ts": 1795593600.0})


def _schedule() -> Schedule:
    return Schedule(
        events=[Scheduled(1.5, Kind.DEPLOY, _deploy(), ("dep-1", 0)),
                Scheduled(float("inf"), Kind.EXPIRY, Expiry("apr-1"), ("apr-1", 2), 10.0)],
        seen={("a", 1), ("b", 2)},
        recent=deque([1.0, 2.0, float("nan")], maxlen=3),
        by_bucket={3: frozenset({"x", "y"})},
        mode="replay",
        notes={"tuple": (1, "a"), "when": 2.5, "nested": [{"k": None}], "$": "dollar"},
    )


def test_a_restructured_state_round_trips_with_no_codec_change() -> None:
    codec = StateCodec([Schedule])
    before = _schedule()
    tree = orjson.loads(orjson.dumps(codec.encode(Schedule, before)))
    after = codec.decode(Schedule, tree)
    assert after.events == before.events
    assert type(after.events[0].payload) is DeployEvent
    assert after.seen == before.seen and after.by_bucket == before.by_bucket
    assert after.recent.maxlen == 3 and list(after.recent)[:2] == [1.0, 2.0]
    assert after.notes == before.notes and after.mode == "replay"
    assert orjson.dumps(codec.encode(Schedule, after)) == orjson.dumps(tree)


def test_a_field_added_with_a_default_reads_older_records() -> None:
    codec = StateCodec([Schedule])
    tree = orjson.loads(orjson.dumps(codec.encode(Schedule, _schedule())))
    del tree["added_later"]
    assert codec.decode(Schedule, tree).added_later == 7


@pytest.mark.parametrize(
    "change",
    [
        # a field the class does not have
        lambda t: t.update(unknown=1),
        # a class outside the allow-list where the annotation says Any
        lambda t: t["notes"].update(x={"$": "Popen", "v": {"args": ["touch", "/tmp/x"]}}),
        # a wrong scalar type
        lambda t: t.update(added_later="7"),
        # a value outside a Literal
        lambda t: t.update(mode="exec"),
        # a union member that is not one of the annotated classes
        lambda t: t["events"][0].update(payload={"$": "Schedule", "v": {}}),
        # an enum value that does not exist
        lambda t: t["events"][0].update(kind="shell"),
    ],
    ids=["unknown-field", "foreign-class", "wrong-scalar", "literal", "union", "enum"],
)
def test_what_the_annotations_do_not_allow_is_refused(change: Any) -> None:
    codec = StateCodec([Schedule])
    tree = orjson.loads(orjson.dumps(codec.encode(Schedule, _schedule())))
    change(tree)
    with pytest.raises(StateDecodeError):
        codec.decode(Schedule, tree)


def test_encoding_an_object_outside_the_allow_list_fails_loudly() -> None:
    codec = StateCodec([Schedule])
    state = _schedule()
    state.notes["object"] = object()
    with pytest.raises(TypeError, match="not allowed in the state"):
        codec.encode(Schedule, state)
