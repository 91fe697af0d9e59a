"""Setting rollguard up: ``policy check``, ``schema export|state``, ``keys generate|rotate``,
``topics create``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from rollguard.streams.cli.common import (
    BOOTSTRAP_OPTION,
    POLICY_OPTION,
    Failure,
    fail_config,
    settings_for,
)
from rollguard.streams.settings import ConfigError, load_policy

# --------------------------------------------------------------------------------------------
# policy
# --------------------------------------------------------------------------------------------


@click.group()
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
        fail_config(err)
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


@click.group()
def schema() -> None:
    """JSON Schemas of the records, for producers and consumers."""


@schema.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
def schema_export(directory: str) -> None:
    """Write one JSON Schema per record type into DIRECTORY."""
    from rollguard.streams.schemas import export_schemas

    for path in export_schemas(Path(directory)):
        click.echo(str(path))


@schema.command("state")
def schema_state() -> None:
    """Print the JSON Schema of the worker's state records (svc:*, fleet payloads' "data")."""
    import json

    from rollguard.streams.checkpoint import state_schema

    click.echo(json.dumps(state_schema(), indent=2))


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """Ed25519 keys for commands and approvals."""


@keys.command("generate")
@click.argument("name")
@click.option("--dir", "directory", default="keys", show_default=True, type=click.Path())
def keys_generate(name: str, directory: str) -> None:
    """Make an Ed25519 key pair NAME.key (0600) and NAME.pub."""
    from rollguard.streams.signing import KeyError_, generate_key_pair

    try:
        private, public = generate_key_pair(Path(directory), name)
    except KeyError_ as err:
        raise Failure(str(err)) from None
    click.echo(f"private key: {private} (keep it secret; mode 0600)")
    click.echo(f"public key:  {public}")


@keys.command("rotate")
@click.argument("name")
@click.option("--dir", "directory", default="keys", show_default=True, type=click.Path())
@click.option("--keyring", "keyring_file", required=True, type=click.Path(dir_okay=False),
              envvar="ROLLGUARD_KEYRING", help="The keyring file to update (made if missing).")
@click.option("--overlap", default=3600.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds the old key stays accepted by verifiers.")
def keys_rotate(name: str, directory: str, keyring_file: str, overlap: float) -> None:
    """Retire NAME.key, make a new one, and write the keyring with both (docs/security.md)."""
    import time

    from rollguard.streams.keyring import rotate
    from rollguard.streams.signing import KeyError_

    try:
        new, old = rotate(Path(directory), name, Path(keyring_file), overlap, time.time())
    except KeyError_ as err:
        fail_config(err)
    click.echo(f"new key {new}: {Path(directory) / (name + '.key')}")
    if old is not None:
        click.echo(f"old key {old}: accepted for {overlap:g} s more, then refused")
    click.echo(f"keyring: {keyring_file} — give it to executors and approvers, then restart "
               "the gate with the new key")




# --------------------------------------------------------------------------------------------
# Kafka verbs
# --------------------------------------------------------------------------------------------


@click.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
@BOOTSTRAP_OPTION
def topics_create(bootstrap_servers: str | None) -> None:
    """Create every topic of DESIGN §2 with the configured partitions (idempotent)."""
    import asyncio

    from rollguard.streams.topics import ensure_topics

    settings = settings_for(bootstrap_servers)
    try:
        report = asyncio.run(ensure_topics(settings))
    except Exception as err:  # noqa: BLE001 - reported as one line
        raise Failure(f"cannot create topics on {settings.bootstrap_servers}: {err}") from None
    for name in report.created:
        click.echo(f"created  {name}")
    for name in report.existing:
        click.echo(f"exists   {name}")
    if report.refused:
        raise Failure("the broker refused to create " + ", ".join(
            f"{name} ({error})" for name, error in report.refused.items()))
