"""Checkpoints: what a restarted leader restores must continue exactly where the last one was,
and a changelog record that is not the gate's own is refused, never executed."""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollguard.models.engine import take_touched
from rollguard.models.events import ApprovalResponse
from rollguard.models.state import ApprovalControl, ExpiryControl, ServiceState
from rollguard.streams.checkpoint import (
    CODEC,
    FORMAT,
    Positions,
    StateLog,
    StateRefused,
    restore,
    seal,
    state_schema,
    state_secret,
)
from rollguard.streams.pipeline import Pipeline
from rollguard.streams.serde import decode_line, encode
from rollguard.streams.settings import load_policy
from rollguard.streams.simulate import SCENARIOS as ALL_SCENARIOS
from rollguard.streams.simulate import generate

POLICY = load_policy("config/policy.yaml")
TP = ("t.metrics", 0)
SECRET = state_secret("rollguard", b"k" * 32)
Changelog = list[tuple[int, bytes | None, bytes | None]]


def test_a_partition_resumes_at_its_lowest_buffered_offset_and_skips_what_was_handled() -> None:
    positions = Positions()
    for offset in range(10):
        positions.read(TP, offset)
    for offset in (0, 1, 2, 5, 6):  # 3, 4 and 7..9 are still buffered (later event times)
        positions.done(TP, offset)
    buffered = [(TP, 3), (TP, 4), (TP, 7), (TP, 8), (TP, 9)]
    saved = orjson.loads(orjson.dumps(positions.snapshot(buffered)))
    (resume, handled), = saved.values()
    assert resume == 3
    assert handled == [5, 6]

    again = Positions.from_snapshot(saved)
    assert again.next_offset[TP] == 3
    assert [o for o in range(3, 10) if again.seen(TP, o)] == [5, 6]


def test_a_partition_with_nothing_buffered_resumes_after_the_last_read() -> None:
    positions = Positions()
    positions.read(TP, 41)
    positions.done(TP, 41)
    (resume, handled), = positions.snapshot([]).values()
    assert (resume, handled) == (42, [])



def _lines(name: str, seed: int = 3) -> list[bytes]:
    lines = [orjson.dumps(e) for e in generate(name, seed).events]
    if name == "approval-only-service":
        # An answer to its approval request (unsigned: rejected), so that an approval waits on
        # the fleet's timeline at some cut points.
        request = next(orjson.loads(b) for b in _uninterrupted(name, seed, lines)
                       if b.startswith(b'{"type":"approval_request"'))
        expires = datetime.fromisoformat(request["expires_at"]).timestamp()
        ts = expires - 1500  # 300 s after the request (ttl 1800)
        asked = next(i for i, line in enumerate(lines) if orjson.loads(line)["ts"] > ts)
        answer = ApprovalResponse(request_id=request["request_id"], approver="user:alice",
                                  decision="approve", ts=ts, service="payments")
        lines.insert(asked, orjson.dumps(answer.model_dump(mode="json")))
    return lines


def _process(pipeline: Pipeline, line: bytes) -> list[bytes]:
    record = decode_line(line, max_clock_skew_seconds=1e10).record
    assert record is not None
    return [encode(o) for o in pipeline.process(record, line)]


def _uninterrupted(name: str, seed: int, lines: list[bytes]) -> list[bytes]:
    pipeline = Pipeline(POLICY)
    out = [b for line in lines for b in _process(pipeline, line)]
    return out + [encode(o) for o in pipeline.finish(pipeline.state.fleet.clock)]


@functools.cache
def _scenario(name: str) -> tuple[list[bytes], list[bytes]]:
    lines = _lines(name)
    return lines, _uninterrupted(name, 3, lines)


class _Worker:
    """The leader's checkpoint cycle without Kafka: checkpoints append to a changelog list."""

    def __init__(self, changelog: Changelog) -> None:
        self.changelog = changelog
        if changelog:
            restored = restore(changelog, [SECRET])
            assert not restored.refused
            self.pipeline = Pipeline(POLICY, state=restored.state)
            self.log = restored.log
        else:
            self.pipeline = Pipeline(POLICY)
            self.log = StateLog(secret=SECRET)

    def checkpoint(self) -> list[tuple[bytes, bytes | None]]:
        state = self.pipeline.state
        touched = take_touched(state)
        entries = self.log.entries(state, touched, {})
        offset = len(self.changelog)
        self.changelog.extend((offset + i, k, v) for i, (k, v) in enumerate(entries))
        return entries


SCENARIOS = sorted(ALL_SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_survives_checkpoints_and_two_restores(name: str) -> None:
    lines, expected = _scenario(name)
    changelog: Changelog = []
    worker = _Worker(changelog)
    out: list[bytes] = []
    for i, line in enumerate(lines):
        if i in (len(lines) // 3, 2 * len(lines) // 3):
            worker.checkpoint()
            worker = _Worker(changelog)
        out.extend(_process(worker.pipeline, line))
        if i % 97 == 96:
            worker.checkpoint()
    out.extend(encode(o) for o in worker.pipeline.finish(worker.pipeline.state.fleet.clock))
    assert out == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(SCENARIOS),
    cuts=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3),
    every=st.integers(1, 300),
)
def test_restoring_at_random_cut_points_continues_byte_identically(
    name: str, cuts: list[float], every: int
) -> None:
    lines, expected = _scenario(name)
    changelog: Changelog = []
    worker = _Worker(changelog)
    out: list[bytes] = []
    stops = {int(c * len(lines)) for c in cuts}
    for i, line in enumerate(lines):
        if i in stops:  # a crash right after a checkpoint: a new leader restores it
            worker.checkpoint()
            worker = _Worker(changelog)
        out.extend(_process(worker.pipeline, line))
        if i % every == every - 1:
            worker.checkpoint()
    worker.checkpoint()
    worker = _Worker(changelog)
    out.extend(encode(o) for o in worker.pipeline.finish(worker.pipeline.state.fleet.clock))
    assert out == expected


def test_the_scenarios_cover_what_the_state_can_hold() -> None:
    """The cut-point test above is only as good as the states it cuts through."""
    _, expected = _scenario("approval-only-service")
    lines, _ = _scenario("approval-only-service")
    pipeline = Pipeline(POLICY)
    kinds: set[type] = set()
    for line in lines:
        _process(pipeline, line)
        kinds.update(type(entry.control) for entry in pipeline.state.fleet.timeline)
    assert {ApprovalControl, ExpiryControl} <= kinds
    assert any(b'"APPROVAL_REJECTED"' in b for b in expected)
    for name in ("bad-deploy", "approval-superseded", "budget-exhausted"):
        assert any(b'"auto_rollback"' in b for b in _scenario(name)[1]), name


def test_a_checkpoint_writes_only_the_services_the_core_touched() -> None:
    lines, _ = _scenario("fleet-wide")
    worker = _Worker([])
    for line in lines[: len(lines) // 2]:
        _process(worker.pipeline, line)
    state = worker.pipeline.state
    assert len(state.services) >= 4
    first = {k for k, _ in worker.checkpoint()}
    assert {b"svc:" + n.encode() for n in state.services} <= first
    assert [k for k, _ in worker.checkpoint()] == [b"fleet", b"positions"]  # nothing happened
    # One sample at the current event time: no window closes, one service changed.
    name = sorted(state.services)[1]
    sample = {"type": "metric", "service": name, "name": "error_rate", "value": 0.01,
              "ts": state.fleet.clock, "source": "prometheus"}
    _process(worker.pipeline, orjson.dumps(sample))
    assert [k for k, _ in worker.checkpoint()] == [b"svc:" + name.encode(), b"fleet",
                                                    b"positions"]


def test_a_sample_into_the_remembered_window_after_a_checkpoint_is_written() -> None:
    # step skips state.touched for a sample of the window its service's last sample went to;
    # take_touched (every checkpoint) forgets those windows, so the next sample is seen.
    lines, _ = _scenario("fleet-wide")
    worker = _Worker([])
    for line in lines[: len(lines) // 2]:
        _process(worker.pipeline, line)
    state = worker.pipeline.state
    name = sorted(state.services)[1]
    svc = state.services[name]
    worker.checkpoint()
    ts = state.fleet.clock
    for value in (0.01, 0.02):  # the first opens or finds the window, the second hits it
        sample = {"type": "metric", "service": name, "name": "error_rate", "value": value,
                  "ts": ts, "source": "prometheus"}
        _process(worker.pipeline, orjson.dumps(sample))
        assert svc.cur_lo <= ts < svc.cur_hi and svc.cur_acc is not None
        written = [k for k, _ in worker.checkpoint()]
        assert written == [b"svc:" + name.encode(), b"fleet", b"positions"], written
        assert svc.cur_acc is None  # forgotten by the checkpoint
    # The cache is not state: a restored service has none and equals the original.
    _process(worker.pipeline, orjson.dumps(sample))  # remembered again
    encoded = CODEC.encode(ServiceState, svc)
    restored = CODEC.decode(ServiceState, orjson.loads(orjson.dumps(encoded)))
    assert svc.cur_acc is not None and "cur_acc" not in encoded
    assert restored.cur_acc is None
    assert orjson.dumps(CODEC.encode(ServiceState, restored)) == orjson.dumps(encoded)
    assert dataclasses.replace(svc, memory={}) == dataclasses.replace(restored, memory={})


# ------------------------------------------------------------------------------ refusals


class _Boom:
    """A pickle that would create a file when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _checkpointed(events: int = 800) -> tuple[Changelog, _Worker]:
    changelog: Changelog = []
    worker = _Worker(changelog)
    lines, _ = _scenario("bad-deploy")
    for i, line in enumerate(lines[:events]):
        _process(worker.pipeline, line)
        if i % 200 == 199:
            worker.checkpoint()
    worker.checkpoint()
    return changelog, worker


def _same(a: ServiceState, b: ServiceState) -> bool:
    encoded = [orjson.dumps(CODEC.encode(ServiceState, svc)) for svc in (a, b)]
    return encoded[0] == encoded[1]


def _append(changelog: Changelog, key: bytes | None, value: bytes | None) -> None:
    changelog.append((len(changelog), key, value))


def test_poisoned_tampered_and_garbage_records_are_refused_and_repaired(tmp_path: Path) -> None:
    changelog, worker = _checkpointed()
    marker = tmp_path / "executed"
    genuine = {k: v for _, k, v in changelog if k is not None}
    tampered = bytearray(genuine[b"fleet"])
    tampered[-5] ^= 1
    _append(changelog, b"svc:search", b"\x01" + pickle.dumps(_Boom(marker)))  # retired format
    _append(changelog, b"svc:search", FORMAT + pickle.dumps(_Boom(marker)))  # bad MAC
    _append(changelog, b"fleet", bytes(tampered))
    _append(changelog, b"svc:evil", b"garbage")
    _append(changelog, b"positions", genuine[b"fleet"])  # genuine bytes under another key

    restored = restore(changelog, [SECRET])

    assert not marker.exists()
    reasons = [r.reason for r in restored.refused]
    assert len(reasons) == 5
    assert "pickle" in reasons[0]
    assert all("authentication failed" in r for r in reasons[1:3] + reasons[4:])
    assert "unknown format" in reasons[3]
    assert [r.kind for r in restored.refused] == [
        "pickle", "authentication", "authentication", "format", "authentication"]
    assert restored.state.fleet.clock == worker.pipeline.state.fleet.clock
    assert _same(restored.state.services["search"], worker.pipeline.state.services["search"])
    # The next checkpoint writes search again and deletes svc:evil (fleet and positions are in
    # every checkpoint), so that compaction keeps the genuine records and drops the bad ones.
    entries = dict(restored.log.entries(restored.state, set(), {}))
    assert entries[b"svc:evil"] is None
    assert entries[b"svc:search"] is not None
    for key, value in entries.items():
        _append(changelog, key, value)
    compacted = {key: (offset, key, value) for offset, key, value in changelog}
    again = restore(sorted(v for v in compacted.values() if v[2] is not None), [SECRET])
    assert not again.refused
    assert _same(again.state.services["search"], restored.state.services["search"])


def test_outputs_published_between_checkpoints_are_dropped_from_the_restored_one_on() -> None:
    changelog, worker = _checkpointed()
    committed = worker.log.seq
    # Output transactions after it: one published before the next checkpoint was taken, one
    # after (its checkpoint never committed), and one from before it (its state holds it).
    taken = [(committed - 1, "older"), (committed, "after"), (committed + 1, "later")]
    _append(changelog, *worker.log.emitted_entry(committed, taken))
    assert restore(changelog, [SECRET]).emitted == [(committed, "after"), (committed + 1, "later")]

    forged = bytearray(changelog[-1][2] or b"")
    forged[-3] ^= 1  # e.g. to make a new leader drop a decision it should publish
    _append(changelog, b"emitted", bytes(forged))
    restored = restore(changelog, [SECRET])
    assert [r.kind for r in restored.refused] == ["authentication"]
    assert restored.emitted == [(committed, "after"), (committed + 1, "later")]  # the genuine

    # Before the first checkpoint: a fresh start, which derives every one of them again.
    fresh: Changelog = []
    _append(fresh, *StateLog(secret=SECRET).emitted_entry(0, [(0, "first")]))
    assert restore(fresh, [SECRET]).emitted == [(0, "first")]


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        # a service record deleted (a tombstone from another principal)
        (lambda log, genuine: _append(log, b"svc:search", None), "no authentic record"),
        # an older genuine record of a service written again (a replay)
        (lambda log, genuine: _append(log, b"svc:search", genuine[b"svc:search"][0]),
         "expected"),
        # the fleet record of an older checkpoint written again (budgets, requests rolled back)
        (lambda log, genuine: _append(log, b"fleet", genuine[b"fleet"][0]), "fleet record of"),
        # the latest positions and fleet deleted: an older, consistent pair must not be used
        (lambda log, genuine: [_append(log, b"positions", None), _append(log, b"fleet", None)],
         "no authentic fleet"),
    ],
    ids=["deleted", "replayed-service", "replayed-fleet", "deleted-checkpoint"],
)
def test_a_changelog_that_is_not_one_consistent_checkpoint_is_refused(
    attack: Any, message: str
) -> None:
    changelog, _ = _checkpointed()
    genuine: dict[bytes, list[bytes]] = {}
    for _, key, value in changelog:
        assert key is not None and value is not None
        genuine.setdefault(key, []).append(value)
    assert len(genuine[b"svc:search"]) > 1
    attack(changelog, genuine)
    with pytest.raises(StateRefused, match=message):
        restore(changelog, [SECRET])


def test_a_changelog_of_pickles_is_refused_with_the_way_to_migrate(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    changelog: Changelog = [(0, b"svc:search", b"\x01" + pickle.dumps(_Boom(marker))),
                            (1, b"fleet", b"\x01" + pickle.dumps(_Boom(marker)))]
    with pytest.raises(StateRefused, match="retired pickle format.*ROLLGUARD_APP_ID"):
        restore(changelog, [SECRET])
    assert not marker.exists()


def test_records_of_another_secret_are_refused_and_an_old_secret_is_accepted_then_replaced(
) -> None:
    changelog, worker = _checkpointed()
    other = state_secret("rollguard", b"another key" * 3)
    with pytest.raises(StateRefused, match="none authenticates"):
        restore(changelog, [other])
    with pytest.raises(StateRefused, match="none authenticates"):
        restore(changelog, [state_secret("another-app", b"k" * 32)])
    restored = restore(changelog, [other, SECRET])
    assert restored.log.secret == other
    assert restored.log.rewrite == set(worker.pipeline.state.services)


def test_an_empty_changelog_is_a_fresh_start() -> None:
    restored = restore([], [SECRET])
    assert not restored.state.services and not restored.refused


def test_a_record_moved_to_another_key_does_not_authenticate() -> None:
    value = seal(SECRET, b"svc:a", b'{"seq":1,"data":{}}')
    with pytest.raises(StateRefused, match="none authenticates"):
        restore([(0, b"svc:b", value)], [SECRET])


def test_the_codec_builds_only_allowed_types() -> None:
    names = set(CODEC.allowed_names())
    assert {"ServiceState", "FleetState", "DeployEvent", "ApprovalResponse"} <= names
    tree = {"name": "x", "open": {"$": "subprocess.Popen", "v": ["true"]}}
    with pytest.raises(ValueError):
        CODEC.decode(type(Pipeline(POLICY).state.fleet), {"timeline": [
            [1.0, 0, "x", [], 1, 0.0, "deploy", {"$": "Popen", "v": {}}]]})
    with pytest.raises(ValueError):
        CODEC.decode(type(Pipeline(POLICY).state.fleet), tree)


def test_the_state_schema_describes_what_is_written() -> None:
    schema = state_schema()
    defs = schema["$defs"]
    assert {"ServiceState", "FleetState", "Deployment", "WindowSummary", "MetricStats",
            "DeployEvent", "ApprovalResponse"} <= set(defs)
    lines, _ = _scenario("bad-deploy")
    pipeline = Pipeline(POLICY)
    for line in lines[:1200]:
        _process(pipeline, line)
    svc = next(iter(pipeline.state.services.values()))
    assert svc.deployment is not None
    tree = orjson.loads(orjson.dumps(CODEC.encode(ServiceState, svc)))
    assert set(tree) == set(defs["ServiceState"]["properties"])
    assert set(tree["deployment"]) == set(defs["Deployment"]["properties"])
    assert set(tree["ring"]["items"][0]) == set(defs["WindowSummary"]["properties"])
