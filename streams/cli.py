"""The ``rollguard`` command (DESIGN §8).

Exit status: 0 on success, 2 on bad usage or bad configuration, 1 on any other failure, with a
one-line reason on stderr. Heavy modules (faust, aiokafka, matplotlib) are imported by the verbs
that need them, so ``rollguard policy check`` stays fast.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any, Literal, NoReturn

import click
from rich.console import Console
from rich.table import Table

from streams.settings import ConfigError, load_policy, load_settings

__all__ = ["main", "cli"]

POLICY_OPTION = click.option(
    "--policy",
    "policy_path",
    envvar="ROLLGUARD_POLICY",
    default="config/policy.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Policy file (DESIGN §10).",
)
BOOTSTRAP_OPTION = click.option(
    "--bootstrap-servers",
    envvar="ROLLGUARD_BOOTSTRAP_SERVERS",
    default=None,
    help="Kafka bootstrap servers [default: 127.0.0.1:9092].",
)


class Failure(click.ClickException):
    """A runtime failure: exit status 1, one line on stderr."""

    exit_code = 1


class BadConfig(click.ClickException):
    """Bad usage or configuration: exit status 2."""

    exit_code = 2


def _fail_config(err: Exception) -> NoReturn:
    raise BadConfig(str(err).replace("\n", " | "))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rollguard")
def cli() -> None:
    """rollguard: automatic rollback only where the evidence earns it."""


# --------------------------------------------------------------------------------------------
# policy
# --------------------------------------------------------------------------------------------


@cli.group()
def policy() -> None:
    """Validate and inspect policies."""


@policy.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@POLICY_OPTION
def policy_check(file: str | None, policy_path: str) -> None:
    """Validate a policy and print the effective thresholds per service."""
    path = file or policy_path
    try:
        loaded = load_policy(path)
    except ConfigError as err:
        _fail_config(err)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"[bold]{path}[/bold] is valid — policy_version {loaded.version}")
    names = ["(defaults)", *sorted(loaded.services)]
    services = Table(title="Effective settings per service")
    for column in ("service", "window", "lateness", "bake", "baseline", "breach×",
                   "stale", "coverage", "traffic≥", "anomaly≥", "alone×", "tier", "auto", "role"):
        services.add_column(column)
    thresholds = Table(title="Effective thresholds per service and metric")
    for column in ("service", "metric", "stat", "max", "× baseline", "every", "role"):
        thresholds.add_column(column)
    for name in names:
        eff = loaded.defaults if name == "(defaults)" else loaded.for_service(name)
        services.add_row(
            name, f"{eff.window_seconds}s", f"{eff.allowed_lateness_seconds:g}s",
            f"{eff.bake_seconds:g}s", f"{eff.min_baseline_windows}..{eff.baseline_windows}",
            str(eff.consecutive_breach_windows), f"{eff.stale_after_seconds:g}s",
            f"{eff.min_coverage:g}", f"{eff.min_traffic:g}", f"{eff.anomaly_threshold:g}",
            str(eff.anomaly_only_windows), eff.tier, "yes" if eff.auto_rollback else "no",
            eff.required_role,
        )
        for index, (metric, rule) in enumerate(sorted(eff.metrics.items())):
            thresholds.add_row(
                name if index == 0 else "",
                metric,
                rule.stat if rule.role == "threshold" else "",
                "" if rule.max is None else f"{rule.max:g}",
                "" if rule.max_ratio_to_baseline is None else f"{rule.max_ratio_to_baseline:g}",
                f"{rule.expected_interval_seconds:g}s",
                rule.role,
            )
    console.print(services)
    console.print(thresholds)
    fleet = loaded.fleet
    console.print(
        f"fleet: {fleet.fleet_anomaly_limit} services breaching at once ⇒ FLEET_WIDE_ANOMALY; "
        f"budget {fleet.max_auto_rollbacks_per_hour}/h fleet, "
        f"{fleet.max_auto_rollbacks_per_service_per_hour}/h per service; "
        f"rollback authorities: {', '.join(loaded.rollback_authorities)}"
    )
    for grant in loaded.preauthorizations:
        console.print(
            f"pre-authorisation {grant.id} ({grant.owner}): {grant.service} on "
            f"{'+'.join(grant.when)} despite {', '.join(grant.allow_despite) or 'nothing'} "
            f"until {grant.expires.isoformat()}"
        )


# --------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------


@cli.group()
def schema() -> None:
    """JSON Schemas of the records, for producers and consumers."""


@schema.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
def schema_export(directory: str) -> None:
    """Write one JSON Schema per record type into DIRECTORY."""
    from streams.schemas import export_schemas

    for path in export_schemas(Path(directory)):
        click.echo(str(path))


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """Ed25519 keys for commands and approvals."""


@keys.command("generate")
@click.argument("name")
@click.option("--dir", "directory", default="keys", show_default=True, type=click.Path())
def keys_generate(name: str, directory: str) -> None:
    """Make an Ed25519 key pair NAME.key (0600) and NAME.pub."""
    from streams.signing import KeyError_, generate_key_pair

    try:
        private, public = generate_key_pair(Path(directory), name)
    except KeyError_ as err:
        raise Failure(str(err)) from None
    click.echo(f"private key: {private} (keep it secret; mode 0600)")
    click.echo(f"public key:  {public}")


# --------------------------------------------------------------------------------------------
# simulate / replay / score-series
# --------------------------------------------------------------------------------------------


@cli.command()
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
    from streams.simulate import NOISE_SCENARIOS, SCENARIOS, generate
    from streams.simulate_io import publish_scenario, write_scenario

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
        settings = _settings(bootstrap_servers)
        count = publish_scenario(scenario, seed, settings)
        click.echo(f"published {count} events of {scenario} (seed {seed})")
        return
    generated = generate(scenario, seed)
    if out:
        events_path, labels_path = write_scenario(generated, Path(out))
        click.echo(f"{events_path}  {labels_path}")
    else:
        from streams.serde import dumps

        for event in generated.events:
            sys.stdout.buffer.write(dumps(event) + b"\n")


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--from-kafka", is_flag=True, help="Read the input topics instead of a file.")
@click.option("--since", default=None,
              help="Start of the range, by Kafka record timestamp (RFC 3339 or epoch s).")
@click.option("--until", default=None,
              help="End of the range, inclusive, by Kafka record timestamp (RFC 3339 or epoch s).")
@click.option("--topics", "topic_names", multiple=True,
              help="Input topics to read (repeat or comma-separate) [default: all four].")
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

    from streams.analysis.compare import compare_outcomes
    from streams.analysis.kafka_range import RangeError
    from streams.analysis.labels import final_outcomes, load_labels, score
    from streams.analysis.progress import ProgressReporter
    from streams.analysis.report import ReportInput, render_report
    from streams.analysis.session import run_replay
    from streams.analysis.sources import KafkaSource, file_items
    from streams.analysis.tables import print_comparison, print_scorecard
    from streams.analysis.timeline import build_timelines
    from streams.serde import dumps

    if bool(file) == from_kafka:
        raise click.UsageError("give FILE.jsonl or --from-kafka (not both)")
    if not from_kafka and (since or until or topic_names):
        raise click.UsageError("--since/--until/--topics go with --from-kafka")
    settings = _settings(bootstrap_servers)
    try:
        loaded = load_policy(policy_path)
        policy_b = load_policy(compare_path) if compare_path else None
        wanted = load_labels(Path(labels)) if labels else None
        kafka = KafkaSource(settings, since, until, topic_names) if from_kafka else None
    except (ConfigError, ValueError) as err:
        _fail_config(err)
    options = {
        "signing_key": _private_key(key_file) if key_file else None,
        "approvers": _approvers(settings),
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


@cli.command("export")
@click.option("--since", default=None,
              help="Start of the range, by Kafka record timestamp (RFC 3339 or epoch s).")
@click.option("--until", default=None,
              help="End of the range, inclusive, by Kafka record timestamp (RFC 3339 or epoch s).")
@click.option("--topics", "topic_names", multiple=True,
              help="Input topics to read (repeat or comma-separate) [default: all four].")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The replay file to write (DESIGN §9).")
@BOOTSTRAP_OPTION
def export_command(since: str | None, until: str | None, topic_names: tuple[str, ...], out: str,
                   bootstrap_servers: str | None) -> None:
    """Write a time range of the input topics as a replay file (DESIGN §9), in event-time
    order. Records that cannot be decoded are not events: they go to OUT.dead-letters.jsonl."""
    from models.events import DeadLetter
    from streams.analysis.kafka_range import RangeError
    from streams.analysis.progress import ProgressReporter
    from streams.analysis.sources import KafkaSource
    from streams.serde import encode

    settings = _settings(bootstrap_servers)
    try:
        kafka = KafkaSource(settings, since, until, topic_names)
    except ValueError as err:
        _fail_config(err)
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


@cli.command("score-series")
@click.argument("infile", type=click.Path(exists=True, dir_okay=False))
@click.argument("outfile", type=click.Path(dir_okay=False))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also draw the series with its anomaly score underneath (PNG).")
def score_series_command(infile: str, outfile: str, plot_path: str | None) -> None:
    """Online anomaly scores for a timestamp,value CSV → timestamp,value,anomaly_score."""
    from models.anomaly import score_csv_rows

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
        from streams.analysis.plots import series_png

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


# --------------------------------------------------------------------------------------------
# Kafka verbs
# --------------------------------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
@BOOTSTRAP_OPTION
def topics_create(bootstrap_servers: str | None) -> None:
    """Create every topic of DESIGN §2 with the configured partitions (idempotent)."""
    import asyncio

    from streams.topics import create_topics

    settings = _settings(bootstrap_servers)
    try:
        created, existing = asyncio.run(create_topics(settings))
    except Exception as err:  # noqa: BLE001 - reported as one line
        raise Failure(f"cannot create topics on {settings.bootstrap_servers}: {err}") from None
    for name in created:
        click.echo(f"created  {name}")
    for name in existing:
        click.echo(f"exists   {name}")


@cli.command()
@BOOTSTRAP_OPTION
@POLICY_OPTION
def worker(bootstrap_servers: str | None, policy_path: str) -> None:
    """Run the stream processor against Kafka."""
    from streams.app import run_worker

    settings = _settings(bootstrap_servers, policy=policy_path)
    try:
        loaded = load_policy(settings.policy)
    except ConfigError as err:
        _fail_config(err)
    run_worker(settings, loaded)


@cli.command()
@click.option("--exec", "exec_template", required=True,
              help="Command to run, e.g. 'deploy-tool rollback {service} {to_version}'. Fields: "
                   "service, to_version, from_version, deployment_id, command_id.")
@click.option("--verify-key", type=click.Path(exists=True, dir_okay=False),
              envvar="ROLLGUARD_VERIFY_KEY", required=True,
              help="The gate's Ed25519 public key (PEM).")
@click.option("--scope", multiple=True, default=("*",), show_default=True,
              help="Service name pattern this executor may act on (repeatable).")
@click.option("--ledger", default="var/executor/ledger.sqlite3", show_default=True,
              type=click.Path(dir_okay=False), help="Durable record of executed command ids.")
@click.option("--group", default=None, help="Consumer group [default: <app id>-executor].")
@click.option("--timeout", default=600.0, show_default=True, type=float)
@BOOTSTRAP_OPTION
def executor(exec_template: str, verify_key: str, scope: tuple[str, ...], ledger: str,
             group: str | None, timeout: float, bootstrap_servers: str | None) -> None:
    """Reference executor: verify and run rollback commands, each at most once."""
    import asyncio
    import logging

    from streams.executor import ExecutorConfig, run_executor
    from streams.signing import KeyError_, load_public_key

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = _settings(bootstrap_servers)
    try:
        key = load_public_key(Path(verify_key))
    except KeyError_ as err:
        _fail_config(err)
    config = ExecutorConfig(
        exec_template=exec_template, verify_key=key, ledger_path=Path(ledger),
        scope=tuple(scope), group_id=group or f"{settings.app_id}-executor",
        timeout_seconds=timeout,
    )
    try:
        asyncio.run(run_executor(settings, config))
    except KeyboardInterrupt:
        pass


def _respond(decision: Literal["approve", "deny"], request_id: str, identity: str,
             key_file: str, comment: str, service: str | None,
             bootstrap_servers: str | None) -> None:
    import asyncio

    from streams.approval_client import publish_response

    settings = _settings(bootstrap_servers)
    key = _private_key(key_file)
    try:
        found = asyncio.run(publish_response(settings, request_id, identity, decision, comment,
                                             key, service))
    except LookupError as err:
        raise Failure(str(err)) from None
    click.echo(f"{decision} {request_id} as {identity} for {found} → "
               f"{settings.topic('approval_responses')}")


def _response_options(func: Any) -> Any:
    func = click.argument("request_id")(func)
    func = click.option("--as", "identity", required=True, help="Your approver identity.")(func)
    func = click.option("--key", "key_file", required=True,
                        type=click.Path(exists=True, dir_okay=False),
                        help="Your Ed25519 private key.")(func)
    func = click.option("--comment", default="", help="Why.")(func)
    func = click.option("--service", default=None,
                        help="The request's service (skips looking the request up).")(func)
    return BOOTSTRAP_OPTION(func)


@cli.command()
@_response_options
def approve(request_id: str, identity: str, key_file: str, comment: str, service: str | None,
            bootstrap_servers: str | None) -> None:
    """Sign and publish an approval of REQUEST_ID."""
    _respond("approve", request_id, identity, key_file, comment, service, bootstrap_servers)


@cli.command()
@_response_options
def deny(request_id: str, identity: str, key_file: str, comment: str, service: str | None,
         bootstrap_servers: str | None) -> None:
    """Sign and publish a denial of REQUEST_ID."""
    _respond("deny", request_id, identity, key_file, comment, service, bootstrap_servers)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _settings(bootstrap_servers: str | None, **extra: Any) -> Any:
    try:
        return load_settings(bootstrap_servers=bootstrap_servers, **extra)
    except ConfigError as err:
        _fail_config(err)


def _approvers(settings: Any) -> Any:
    from streams.approvers import load_approvers

    try:
        return load_approvers(Path(settings.approvers))
    except ConfigError as err:
        _fail_config(err)


def _private_key(path: str) -> Any:
    from streams.signing import KeyError_, load_private_key

    try:
        return load_private_key(Path(path))
    except KeyError_ as err:
        _fail_config(err)


def main() -> None:
    """Entry point: map every failure to the exit status of DESIGN §8."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("rollguard: aborted", err=True)
        sys.exit(1)
    except click.ClickException as err:
        click.echo(f"rollguard: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the contract is one line and exit 1
        click.echo(f"rollguard: {type(err).__name__}: {err}", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
