"""Scoring decisions against labels (DESIGN §9): a hand-computed case, then the corpus."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from rollguard.models.events import format_ts
from rollguard.streams.analysis.labels import final_outcomes, load_labels, nearest_rank, score
from rollguard.streams.simulate import generate

REPO = Path(__file__).resolve().parents[2]
ROLLGUARD = str(Path(sys.executable).with_name("rollguard"))
T0 = 1795593600.0


def decision(ident: str, action: str, after: float, *reasons: str) -> dict[str, Any]:
    """A decision ``after`` seconds past its deployment's start (T0)."""
    return {"type": "decision", "deployment_id": ident, "service": "svc", "action": action,
            "reasons": list(reasons), "ts": format_ts(T0 + after),
            "evidence": {"deployment": {"deployed_at": format_ts(T0)}}}


HAND_DECISIONS = [
    decision("d1", "watch", 60, "ANOMALY"),
    decision("d1", "auto_rollback", 90, "THRESHOLD_BREACH", "ANOMALY"),
    decision("d2", "request_approval", 120, "THRESHOLD_BREACH", "TELEMETRY_STALE"),
    decision("d3", "auto_rollback", 30, "THRESHOLD_BREACH"),
    decision("d4", "pass", 600),
    # d5: labelled, never decided
    decision("d6", "request_approval", 60, "THRESHOLD_BREACH", "TELEMETRY_STALE"),
    decision("d6", "auto_rollback", 200, "THRESHOLD_BREACH", "APPROVAL_SUPERSEDED"),
    decision("d7", "request_approval", 45, "CRITICAL_ALERT", "SAME_IDENTITY"),
    decision("d7", "auto_rollback", 300, "APPROVED"),  # the approver's act, not rollguard's
    decision("d8", "pass", 610),  # decided, not labelled
]
HAND_LABELS = {"d1": "rollback", "d2": "approval", "d3": "pass", "d4": "rollback",
               "d5": "rollback", "d6": "approval", "d7": "approval"}


def test_a_hand_computed_scorecard() -> None:
    card = score(final_outcomes(HAND_DECISIONS), HAND_LABELS)
    assert card.confusion == {
        "rollback": {"rollback": 1, "approval": 0, "pass": 1, "none": 1},  # d1 / d4 / d5
        "approval": {"rollback": 1, "approval": 2, "pass": 0, "none": 0},  # d6 / d2, d7
        "pass": {"rollback": 1, "approval": 0, "pass": 0, "none": 0},  # d3
    }
    assert card.false_rollbacks == ["d3", "d6"]
    assert card.missed == ["d4", "d5"]
    assert card.unlabeled == ["d8"]
    assert (card.agreed, card.labeled) == (3, 7)
    # First decisive decision: 90, 120, 30, 600, 60, 45 s (d5 has none).
    assert sorted(card.seconds_to_decision) == [30, 45, 60, 90, 120, 600]
    assert card.median_seconds == 75.0  # (60 + 90) / 2
    assert card.p90_seconds == 600.0  # nearest rank: ceil(0.9 x 6) = 6th
    assert card.reason_counts == {"THRESHOLD_BREACH": 5, "TELEMETRY_STALE": 2, "ANOMALY": 1,
                                  "APPROVAL_SUPERSEDED": 1, "CRITICAL_ALERT": 1,
                                  "SAME_IDENTITY": 1}
    numbers = card.as_json()
    assert numbers["time_to_decision_seconds"] == {"count": 6, "median": 75.0, "p90": 600.0}


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.9, None),  # nothing to rank
        ([7.0], 0.9, 7.0),  # one value is every quantile
        ([float(i) for i in range(1, 11)], 0.9, 9.0),  # ceil(9.0) = 9th
        ([float(i) for i in range(1, 12)], 0.9, 10.0),  # ceil(9.9) = 10th
    ],
)
def test_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert nearest_rank(values, q) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"d1": "rollbak"}', "label 'rollbak'"),  # a typo in a label
        ('["d1"]', "expected {deployment_id: label}"),  # not a mapping
        ("{not json", "not a readable JSON"),  # broken file
    ],
)
def test_bad_labels_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "labels.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="labels.json") as caught:
        load_labels(path)
    assert fragment in str(caught.value)


# Scenarios that share a service must not leave it breaching or alerting for the next one:
# this order keeps every scenario's own label on one timeline.
CORPUS = ("one-window-blip", "healthy", "no-rollback-target", "stale-exporter",
          "approval-superseded", "bad-deploy")


def corpus(tmp_path: Path, seed: int = 4) -> tuple[Path, dict[str, str]]:
    """Several scenarios one after another on one timeline, and their labels."""
    events: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    start = None
    for name in CORPUS:
        scenario = generate(name, seed, start=start)
        events.extend(scenario.events)
        labels.update(scenario.labels)
        start = max(e["ts"] for e in scenario.events) + 120
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path, labels


def test_labels_over_the_corpus(tmp_path: Path) -> None:
    events, labels = corpus(tmp_path)
    healthy = next(ident for ident in labels if ident.startswith("dep-healthy"))
    labels[healthy] = "rollback"  # a deliberately wrong label: must show as a miss
    labels_path = tmp_path / "labels.json"
    labels_path.write_bytes(orjson.dumps(labels))
    decisions_path, summary_path = tmp_path / "decisions.jsonl", tmp_path / "summary.json"
    result = subprocess.run(
        [ROLLGUARD, "replay", str(events), "--labels", str(labels_path), "--out",
         str(decisions_path), "--summary-json", str(summary_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Labels vs final action" in result.stdout  # tables on stdout: decisions are in --out
    numbers = orjson.loads(summary_path.read_bytes())["scoring"]
    assert numbers["labeled"] == len(CORPUS)
    assert numbers["missed_bad_deploys"] == [healthy]
    assert numbers["false_rollbacks"] == []
    assert numbers["confusion"]["rollback"] == {"rollback": 2, "approval": 0, "pass": 1,
                                                "none": 0}
    assert numbers["confusion"]["approval"]["approval"] == 2
    assert numbers["confusion"]["pass"]["pass"] == 1
    assert numbers["agreed"] == len(CORPUS) - 1
    # The timing, recomputed here from the decision records themselves.
    first: dict[str, float] = {}
    for line in decisions_path.read_bytes().splitlines():
        record = orjson.loads(line)
        if record["type"] == "decision" and record["action"] in (
                "auto_rollback", "request_approval", "pass"):
            deployed = record["evidence"]["deployment"]["deployed_at"]
            first.setdefault(record["deployment_id"],
                             _epoch(record["ts"]) - _epoch(deployed))
    times = numbers["time_to_decision_seconds"]
    assert times["count"] == len(first) == len(CORPUS)
    assert times["median"] == pytest.approx(statistics.median(first.values()))
    assert times["p90"] == pytest.approx(max(first.values()))  # ceil(0.9 x 6) = 6th of 6
    assert numbers["reason_counts"]["THRESHOLD_BREACH"] >= 4


def _epoch(text: str) -> float:
    from rollguard.models.events import parse_ts

    return parse_ts(text)
