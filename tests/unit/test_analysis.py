"""The analysis side of replay: sessions, time arguments, topics, timelines, compare, plots."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from matplotlib import image

from rollguard.models.events import DeadLetter, parse_ts
from rollguard.streams.analysis.kafka_range import TimeRange, input_topics
from rollguard.streams.analysis.labels import final_outcomes
from rollguard.streams.analysis.session import replay_items, run_replay
from rollguard.streams.analysis.timeline import build_timelines
from rollguard.streams.analysis.timerange import parse_time_arg
from rollguard.streams.replay import replay_to_bytes
from rollguard.streams.settings import Settings, load_policy
from rollguard.streams.simulate import generate

REPO = Path(__file__).resolve().parents[2]
ROLLGUARD = str(Path(sys.executable).with_name("rollguard"))
POLICY = load_policy(REPO / "config" / "policy.yaml")


def lines_of(name: str, seed: int = 1) -> list[bytes]:
    return [orjson.dumps(e) for e in generate(name, seed).events]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROLLGUARD, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_session_writes_exactly_the_bytes_of_file_replay() -> None:
    lines = lines_of("approval-superseded")
    sink = io.BytesIO()
    result = run_replay(lines, POLICY, sink=sink, collect_timeline=True)
    assert sink.getvalue() == b"".join(replay_to_bytes(lines, POLICY))
    assert [d["action"] for d in result.decisions] == ["watch", "request_approval",
                                                       "auto_rollback"]
    assert result.timeline is not None and result.timeline.services


def test_refused_kafka_records_come_out_in_stream_order_between_the_outputs() -> None:
    lines = lines_of("bad-deploy")
    letter = DeadLetter(topic="t", partition=0, offset=7, key_b64=None, value_b64="e30=",
                        error="bad", ts=0.0)
    items: list[bytes | DeadLetter] = [*lines[:5], letter, *lines[5:]]
    outputs = list(replay_items(items, POLICY))
    assert outputs[0] is letter  # before the first output of the lines after it
    assert [o for o in outputs if o is not letter] == list(
        o for o in replay_items(lines, POLICY))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T08:00:00Z", 1795593600.0),  # RFC 3339, Z
        ("2026-11-25T09:00:00+01:00", 1795593600.0),  # RFC 3339, offset
        ("1795593600", 1795593600.0),  # epoch seconds
        ("1795593600.25", 1795593600.25),  # fractional epoch seconds
    ],
)
def test_time_arguments(text: str, expected: float) -> None:
    assert parse_time_arg(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-11-25T08:00:00", "1795593600000"])
def test_bad_time_arguments_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_arg(text)


def test_an_inverted_range_is_refused_and_ms_round_inwards() -> None:
    with pytest.raises(ValueError, match="before --since"):
        TimeRange(10.0, 5.0)
    window = TimeRange(1.0004, 2.0006)
    assert (window.since_ms, window.until_ms) == (1001, 2000)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ((), ["p.deploys", "p.telemetry.metrics", "p.telemetry.alerts",
              "p.rollback.approval-responses", "p.otlp_metrics"]),  # every input, DESIGN order
        (("otlp_metrics",), ["p.otlp_metrics"]),  # the OTLP topic the worker reads too
        (("telemetry.alerts", "deploys"), ["p.deploys", "p.telemetry.alerts"]),  # configured
        (("metrics",), ["p.telemetry.metrics"]),  # the setting's name
        (("p.telemetry.metrics",), ["p.telemetry.metrics"]),  # the full name
    ],
)
def test_input_topics(names: tuple[str, ...], expected: list[str]) -> None:
    assert list(input_topics(Settings(topic_prefix="p."), names)) == expected


def test_an_output_topic_is_not_an_input() -> None:
    with pytest.raises(ValueError, match="not an input topic"):
        input_topics(Settings(), ["rollguard.decisions"])


def test_the_timeline_recomputes_the_windows_the_core_saw() -> None:
    result = run_replay(lines_of("bad-deploy"), POLICY, collect_timeline=True)
    assert result.timeline is not None
    outcomes = final_outcomes(result.decisions)
    (timeline,) = build_timelines(result.timeline, outcomes, POLICY)
    errors = next(s for s in timeline.metrics if s.name == "error_rate")
    decisive = outcomes[timeline.deployment_id].final
    assert decisive is not None
    window = decisive["evidence"]["windows"][-1]
    end = window["end"]
    recomputed = dict(zip(errors.times, errors.values, strict=True))[parse_ts(end)]
    assert recomputed == pytest.approx(window["metrics"]["error_rate"]["mean"], rel=1e-5)
    assert errors.baseline == decisive["evidence"]["thresholds"]["error_rate"]["baseline"]
    assert not errors.baseline_recomputed
    assert errors.ratio_limit == pytest.approx(3.0 * errors.baseline)
    assert [m.action for m in timeline.decisions] == ["watch", "auto_rollback"]
    assert any(span.name == "HighErrorRate" for span in timeline.alerts)


def test_compare_names_the_deployments_and_the_thresholds(tmp_path: Path) -> None:
    events = tmp_path / "bad.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in lines_of("bad-deploy")))
    loose = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())
    metrics = loose.setdefault("defaults", {}).setdefault("metrics", {})
    metrics["error_rate"] = {"max": 0.5, "max_ratio_to_baseline": 100.0}
    policy_b = tmp_path / "loose.yaml"
    policy_b.write_text(yaml.safe_dump(loose))
    summary = tmp_path / "summary.json"
    result = run_cli("replay", str(events), "--compare", str(policy_b), "--summary-json",
                     str(summary), "--out", str(tmp_path / "decisions.jsonl"))
    assert result.returncode == 0, result.stderr
    (diff,) = orjson.loads(summary.read_bytes())["compare"]["differences"]
    assert diff["a"]["action"] == "rollback" and diff["b"]["action"] != "rollback"
    changed = {c["field"]: (c["a"], c["b"]) for c in diff["policy"]}
    assert changed["metrics.error_rate.max"] == (0.05, 0.5)
    assert changed["metrics.error_rate.max_ratio_to_baseline"] == (3.0, 100.0)
    assert "deployments decided differently" in result.stdout.lower()


def test_compare_with_itself_finds_nothing(tmp_path: Path) -> None:
    events = tmp_path / "bad.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in lines_of("bad-deploy")))
    result = run_cli("replay", str(events), "--compare", "config/policy.yaml", "--out",
                     str(tmp_path / "d.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "decide every deployment alike" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--since", "2026-11-25T08:00:00Z", "x.jsonl"), "go with --from-kafka"),
        (("--from-kafka", "--since", "soon"), "neither RFC 3339"),
        (("--from-kafka", "--topics", "rollguard.decisions"), "not an input topic"),
        ((), "give FILE.jsonl or --from-kafka"),
    ],
)
def test_bad_replay_arguments_exit_2(tmp_path: Path, args: tuple[str, ...],
                                     fragment: str) -> None:
    (tmp_path / "x.jsonl").write_bytes(b"")
    result = subprocess.run([ROLLGUARD, "replay", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False,
                            env={"ROLLGUARD_POLICY": str(REPO / "config" / "policy.yaml"),
                                 "ROLLGUARD_APPROVERS": str(REPO / "config" / "approvers.yaml"),
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr


def test_score_series_plots_the_series_and_its_score(tmp_path: Path) -> None:
    rows = ["timestamp,value"] + [f"{1795593600 + 60 * i},{1.0 + (i % 7) * 0.1}"
                                  for i in range(300)]
    rows[250] = f"{1795593600 + 60 * 249},40.0"
    source = tmp_path / "series.csv"
    source.write_text("\n".join(rows) + "\n")
    plot = tmp_path / "series.png"
    result = run_cli("score-series", str(source), str(tmp_path / "scored.csv"), "--plot",
                     str(plot))
    assert result.returncode == 0, result.stderr
    pixels = image.imread(str(plot))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert float(np.std(pixels[..., :3])) > 0.05  # not a blank canvas
    scored = (tmp_path / "scored.csv").read_text().splitlines()
    assert float(scored[250].split(",")[2]) > 0.9  # the spike is what the plot marks
