"""Checkpoints: what a restarted leader restores must continue exactly where the last one was."""

from __future__ import annotations

import orjson
import pytest

from streams.checkpoint import Positions, encode_state, restore
from streams.pipeline import Pipeline
from streams.replay import replay_to_bytes
from streams.serde import decode_line, encode
from streams.settings import load_policy
from streams.simulate import generate

POLICY = load_policy("config/policy.yaml")
TP = ("t.metrics", 0)


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


def _events(name: str = "bad-deploy", seed: int = 3) -> list[bytes]:
    return [orjson.dumps(e) for e in generate(name, seed).events]


def _run(pipeline: Pipeline, lines: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for line in lines:
        record = decode_line(line, max_clock_skew_seconds=1e10).record
        assert record is not None
        out.extend(encode(o) for o in pipeline.process(record, line))
    return out


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.85])
def test_a_restored_engine_decides_what_the_uninterrupted_one_does(cut: float) -> None:
    lines = _events()
    split = int(len(lines) * cut)
    first = Pipeline(POLICY)
    before = _run(first, lines[:split])
    digests: dict[bytes, bytes] = {}
    entries = encode_state(first.state, list(first.state.services), {}, digests)

    restored = restore(entries)
    second = Pipeline(POLICY, state=restored.state)
    after = _run(second, lines[split:])
    after += [encode(o) for o in second.finish(second.state.fleet.clock)]

    expected = list(replay_to_bytes(iter(lines), POLICY, max_clock_skew_seconds=1e10))
    assert [orjson.loads(r) for r in before + after] == [orjson.loads(r) for r in expected]
    assert any(orjson.loads(r).get("action") == "auto_rollback" for r in expected)
    if cut < 0.5:  # cut before the decision: the restored engine is the one that makes it
        assert any(orjson.loads(r).get("action") == "auto_rollback" for r in after)


def test_unchanged_services_are_not_written_again_and_later_entries_win() -> None:
    lines = _events()
    pipeline = Pipeline(POLICY)
    _run(pipeline, lines[:200])
    digests: dict[bytes, bytes] = {}
    names = list(pipeline.state.services)
    first = encode_state(pipeline.state, names, {}, digests)
    second = encode_state(pipeline.state, names, {}, digests)
    assert {k for k, _ in first} >= {b"svc:" + n.encode() for n in names}
    assert [k for k, _ in second] == [b"fleet", b"positions"]  # nothing changed since

    _run(pipeline, lines[200:400])
    third = encode_state(pipeline.state, names, {}, digests)
    state = restore(first + third).state
    assert state.fleet.clock == pipeline.state.fleet.clock


def test_a_changelog_missing_a_service_is_refused() -> None:
    pipeline = Pipeline(POLICY)
    _run(pipeline, _events()[:50])
    entries = encode_state(pipeline.state, list(pipeline.state.services), {}, {})
    without = [(k, v) for k, v in entries if not k.startswith(b"svc:")]
    with pytest.raises(ValueError, match="inconsistent"):
        restore(without)
