"""The analysts' verbs: ``simulate``, ``replay``, ``export``, ``score-series``."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from rollguard.streams.cli.common import (
    BOOTSTRAP_OPTION,
    POLICY_OPTION,
    BadConfig,
    Failure,
    approver_directory,
    fail_config,
    private_key,
    settings_for,
)
from rollguard.streams.settings import ConfigError, load_policy

# --------------------------------------------------------------------------------------------
# simulate / replay / score-series
# --------------------------------------------------------------------------------------------


@click.command()
@click.argument("scenario", required=False)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Write FILE.jsonl.")
@click.option("--all", "all_dir", type=click.Path(file_okay=False), help="Write every scenario.")
@click.option("--to-kafka", is_flag=True, help="Publish to the input topics instead.")
@click.option("--list", "list_only", is_flag=True, help="List the scenarios.")
@BOOTSTRAP_OPTION
def simulate(
    scenario: str | None,
    seed: int,
    out: str | None,
    all_dir: str | None,
    to_kafka: bool,
    list_only: bool,
    bootstrap_servers: str | None,
) -> None:
    """Write a labelled synthetic SCENARIO (events JSONL + labels JSON)."""
    from rollguard.streams.simulate import NOISE_SCENARIOS, SCENARIOS, generate
    from rollguard.streams.simulate_io import publish_scenario, write_scenario

    if list_only:
        click.echo("\n".join(SCENARIOS + NOISE_SCENARIOS))
        return
    if all_dir:
        for name in SCENARIOS:
            events_path, labels_path = write_scenario(
                generate(name, seed), Path(all_dir) / f"{name}.jsonl"
            )
            click.echo(f"{events_path}  {labels_path}")
        return
    if not scenario:
        raise click.UsageError("give a SCENARIO (see --list) or --all DIR")
    if scenario not in SCENARIOS + NOISE_SCENARIOS:
        known = ", ".join(SCENARIOS + NOISE_SCENARIOS)
        raise click.UsageError(f"unknown scenario {scenario!r}; one of: {known}")
    if to_kafka:
        settings = settings_for(bootstrap_servers)
        count = publish_scenario(scenario, seed, settings)
        click.echo(f"published {count} events of {scenario} (seed {seed})")
        return
    generated = generate(scenario, seed)
    if out:
        events_path, labels_path = write_scenario(generated, Path(out))
        click.echo(f"{events_path}  {labels_path}")
    else:
        from rollguard.streams.serde import dumps

        for event in generated.events:
            sys.stdout.buffer.write(dumps(event) + b"\n")


def _range_options(func: Any) -> Any:
    """--since/--until/--topics: a range of the input topics by Kafka record timestamp."""
    func = click.option("--topics", "topic_names", multiple=True, help=(
        "Input topics to read (repeat or comma-separate) [default: all four]."))(func)
    func = click.option("--until", default=None, help=(
        "End of the range, inclusive, by Kafka record timestamp (RFC 3339 or epoch s)."))(func)
    return click.option("--since", default=None, help=(
        "Start of the range, by Kafka record timestamp (RFC 3339 or epoch s)."))(func)


@click.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--from-kafka", is_flag=True, help="Read the input topics instead of a file.")
@_range_options
@POLICY_OPTION
@click.option("--out", "out", type=click.Path(dir_okay=False), help="decisions.jsonl")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False),
              help="Sign the commands with this Ed25519 private key.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="Score the decisions against a labels JSON (DESIGN §9).")
@click.option("--compare", "compare_path", type=click.Path(exists=True, dir_okay=False),
              help="A second policy: list the deployments it decides differently, and why.")
@click.option("--report", type=click.Path(dir_okay=False),
              help="Write a self-contained HTML report with a timeline per deployment.")
@click.option("--summary-json", type=click.Path(dir_okay=False),
              help="Write the numbers (replay, scoring, comparison) as JSON.")
@BOOTSTRAP_OPTION
def replay(
    file: str | None,
    from_kafka: bool,
    since: str | None,
    until: str | None,
    topic_names: tuple[str, ...],
    policy_path: str,
    out: str | None,
    key_file: str | None,
    labels: str | None,
    compare_path: str | None,
    report: str | None,
    summary_json: str | None,
    bootstrap_servers: str | None,
) -> None:
    """Run the decision core offline over FILE.jsonl or a Kafka range (same input + policy ⇒
    same bytes out); score, compare, report. Tables go to stderr when decisions go to stdout."""
    import tempfile

    from rollguard.streams.analysis.compare import compare_outcomes
    from rollguard.streams.analysis.kafka_range import RangeError
    from rollguard.streams.analysis.labels import final_outcomes, load_labels, score
    from rollguard.streams.analysis.progress import ProgressReporter
    from rollguard.streams.analysis.report import ReportInput, render_report
    from rollguard.streams.analysis.session import run_replay
    from rollguard.streams.analysis.sources import KafkaSource, file_items
    from rollguard.streams.analysis.tables import print_comparison, print_scorecard
    from rollguard.streams.analysis.timeline import build_timelines
    from rollguard.streams.serde import dumps

    if bool(file) == from_kafka:
        raise click.UsageError("give FILE.jsonl or --from-kafka (not both)")
    if not from_kafka and (since or until or topic_names):
        raise click.UsageError("--since/--until/--topics go with --from-kafka")
    settings = settings_for(bootstrap_servers)
    try:
        loaded = load_policy(policy_path)
        policy_b = load_policy(compare_path) if compare_path else None
        wanted = load_labels(Path(labels)) if labels else None
        kafka = KafkaSource(settings, since, until, topic_names) if from_kafka else None
    except (ConfigError, ValueError) as err:
        fail_config(err)
    options = {
        "signing_key": private_key(key_file) if key_file else None,
        "approvers": approver_directory(settings),
        "max_clock_skew_seconds": settings.max_clock_skew_seconds,
        "max_message_bytes": settings.max_message_bytes,
    }
    source = kafka.description if kafka else str(file)
    # A Kafka range is read once; a second policy replays the lines spooled on the way.
    spool = tempfile.TemporaryFile() if kafka and policy_b else None  # noqa: SIM115
    sink = open(out, "wb") if out else sys.stdout.buffer  # noqa: SIM115
    try:
        with ProgressReporter("replay") as progress:
            items = kafka.items(progress, spool) if kafka else file_items(Path(str(file)),
                                                                          progress)
            result = run_replay(items, loaded, sink=sink, collect_timeline=bool(report),
                                source=source, **options)
    except RangeError as err:
        raise Failure(str(err)) from None
    finally:
        if out:
            sink.close()
    stats = result.stats
    summary: dict[str, Any] = {"replay": {
        "source": source, "lines": stats.lines, "events": dict(stats.events),
        "dead_letters": stats.dead_letters, "outputs": dict(stats.outputs)}}
    if kafka:
        summary["range"] = kafka.summary()
    console = Console(stderr=out is None, width=None if sys.stdout.isatty() else 160)
    outcomes = final_outcomes(result.decisions)
    card = score(outcomes, wanted) if wanted is not None else None
    if card is not None:
        print_scorecard(console, card)
        summary["scoring"] = card.as_json()
    diffs = None
    if policy_b is not None:
        if spool is not None:
            spool.seek(0)
        with spool or open(str(file), "rb") as lines:
            other = run_replay(lines, policy_b, source=source, **options)
        diffs = compare_outcomes(outcomes, final_outcomes(other.decisions), loaded, policy_b)
        print_comparison(console, diffs, policy_path, str(compare_path))
        summary["compare"] = {"policy": compare_path, "policy_version": policy_b.version,
                              "differences": [d.as_json() for d in diffs]}
    if report and result.timeline is not None:
        timelines = build_timelines(result.timeline, outcomes, loaded)
        Path(report).write_text(render_report(ReportInput(
            source=source, policy_path=policy_path, policy_version=loaded.version, stats=stats,
            outcomes=outcomes, timelines=timelines, labels=wanted, scorecard=card,
            comparison=diffs, compare_policy=compare_path,
        )), encoding="utf-8")
        summary["report"] = {"path": report, "deployments": len(timelines)}
        click.echo(f"report: {len(timelines)} deployments → {report}", err=True)
    if summary_json:
        Path(summary_json).write_bytes(dumps(summary, sort_keys=True) + b"\n")
    totals = ", ".join(f"{n} {t}" for t, n in sorted(stats.outputs.items()))
    click.echo(f"replayed {stats.lines} lines ({stats.dead_letters} dead letters): "
               f"{totals or 'no output'}", err=True)


@click.command("export")
@_range_options
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The replay file to write (DESIGN §9).")
@BOOTSTRAP_OPTION
def export_command(since: str | None, until: str | None, topic_names: tuple[str, ...], out: str,
                   bootstrap_servers: str | None) -> None:
    """Write a time range of the input topics as a replay file (DESIGN §9), in event-time
    order. Records that cannot be decoded are not events: they go to OUT.dead-letters.jsonl."""
    from rollguard.models.events import DeadLetter
    from rollguard.streams.analysis.kafka_range import RangeError
    from rollguard.streams.analysis.progress import ProgressReporter
    from rollguard.streams.analysis.sources import KafkaSource
    from rollguard.streams.serde import encode

    settings = settings_for(bootstrap_servers)
    try:
        kafka = KafkaSource(settings, since, until, topic_names)
    except ValueError as err:
        fail_config(err)
    path = Path(out)
    letters: list[DeadLetter] = []
    events = 0
    try:
        with ProgressReporter("export") as progress, open(path, "wb") as handle:
            for item in kafka.items(progress):
                if isinstance(item, DeadLetter):
                    letters.append(item)
                else:
                    handle.write(item + b"\n")
                    events += 1
    except RangeError as err:
        raise Failure(str(err)) from None
    stats = kafka.stats
    per_topic = ", ".join(f"{n} {t}" for t, n in sorted(stats.records.items())) or "no records"
    click.echo(f"exported {events} events from {stats.partitions} partitions ({per_topic}) "
               f"→ {path}", err=True)
    if letters:
        letters_path = path.with_name(path.stem + ".dead-letters.jsonl")
        letters_path.write_bytes(b"".join(encode(letter) + b"\n" for letter in letters))
        click.echo(f"{len(letters)} records could not be decoded → {letters_path} "
                   f"(first: {letters[0].error})", err=True)


@click.command("score-series")
@click.argument("infile", type=click.Path(exists=True, dir_okay=False))
@click.argument("outfile", type=click.Path(dir_okay=False))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also draw the series with its anomaly score underneath (PNG).")
def score_series_command(infile: str, outfile: str, plot_path: str | None) -> None:
    """Online anomaly scores for a timestamp,value CSV → timestamp,value,anomaly_score."""
    from rollguard.models.anomaly import score_csv_rows

    rows = list(_read_series(Path(infile)))
    scored: list[tuple[str, float, float]] = []
    with open(outfile, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for timestamp, value, score in score_csv_rows(rows):
            writer.writerow([timestamp, repr(value), f"{score:.6f}"])
            scored.append((timestamp, value, score))
    click.echo(f"scored {len(rows)} points → {outfile}", err=True)
    if plot_path:
        from rollguard.streams.analysis.plots import series_png

        Path(plot_path).write_bytes(series_png(
            [t for t, _, _ in scored], [v for _, v, _ in scored], [s for _, _, s in scored],
            title=Path(infile).name))
        click.echo(f"plot → {plot_path}", err=True)


def _read_series(path: Path) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise BadConfig(f"{path}: line {number}: expected 'timestamp,value', got {row!r}")
            timestamp, text = row[0].strip(), row[1].strip()
            try:
                value = float(text)
            except ValueError:
                if number == 1:
                    continue  # the header
                raise BadConfig(f"{path}: line {number}: value {text!r} is not a number") from None
            if not math.isfinite(value):
                raise BadConfig(f"{path}: line {number}: value {text!r} is not finite")
            rows.append((timestamp, value))
    return rows
