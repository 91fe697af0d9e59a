"""Replay (DESIGN §9): deterministic bytes, dead letters for bad lines, gaps in time survive."""

from __future__ import annotations

from pathlib import Path

import orjson

from rollguard.streams.replay import ReplayStats, replay_lines, replay_to_bytes
from rollguard.streams.settings import load_policy
from rollguard.streams.simulate import generate

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "config" / "policy.yaml")
BASE = 1795593600.0


def _metric(ts: float) -> bytes:
    return orjson.dumps({"type": "metric", "service": "a", "name": "x", "value": 1, "ts": ts})


def test_same_input_and_policy_give_identical_bytes() -> None:
    lines = [orjson.dumps(e) for e in generate("approval-superseded", 2).events]
    first = b"".join(replay_to_bytes(lines, POLICY))
    second = b"".join(replay_to_bytes(lines, POLICY))
    assert first == second
    assert b'"auto_rollback"' in first


def test_bad_lines_become_dead_letters_and_the_rest_is_replayed() -> None:
    lines = [_metric(BASE), b"{not json", b'{"type":"decision","service":"a"}', b"",
             _metric(BASE + 10)]
    stats = ReplayStats()
    letters = [o for o in replay_lines(lines, POLICY, stats=stats) if o.type == "dead_letter"]
    assert [letter.offset for letter in letters] == [2, 3]  # line numbers
    assert stats.events["metric"] == 2 and stats.dead_letters == 2


def test_a_quiet_gap_costs_one_event_and_a_far_future_outlier_only_itself() -> None:
    lines = [_metric(BASE + i * 10) for i in range(5)]
    lines += [_metric(BASE + 5000 + i * 10) for i in range(5)]  # a 1h20 quiet stretch
    lines += [_metric(BASE + 1e8), _metric(BASE + 5100)]  # one producer clock gone wild
    letters = [o for o in replay_lines(lines, POLICY) if o.type == "dead_letter"]
    assert [letter.offset for letter in letters] == [6, 11]
    assert all("ahead of the reference clock" in letter.error for letter in letters)
