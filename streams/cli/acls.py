"""``rollguard acls``: print — and with ``--apply`` create — the least-privilege ACL set."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import click

from rollguard.streams.cli.common import BOOTSTRAP_OPTION, BadConfig
from rollguard.streams.settings import ConfigError, load_settings

__all__ = ["acls"]


@click.command("acls")
@click.option("--principals", "principals_path", envvar="ROLLGUARD_PRINCIPALS",
              default="config/principals.yaml", show_default=True,
              type=click.Path(dir_okay=False),
              help="Which Kafka principal plays which role (YAML: role: [User:name, ...]).")
@click.option("--output", type=click.Choice(["table", "json", "kafka-acls"]), default="table",
              show_default=True, help="How to print the set.")
@click.option("--apply", "apply_", is_flag=True,
              help="Create the missing ACLs on the cluster (needs an admin principal).")
@click.option("--prune", is_flag=True,
              help="With --apply: delete other literal ALLOW ACLs on these resources.")
@BOOTSTRAP_OPTION
def acls(principals_path: str, output: Literal["table", "json", "kafka-acls"], apply_: bool,
         prune: bool, bootstrap_servers: str | None) -> None:
    """Print the exact ACLs each role needs (topic prefix and app id respected); --apply
    creates them through Kafka's Admin API."""
    from rollguard.streams.acls import acl_set, apply_acls, load_principals, render

    if prune and not apply_:
        raise click.UsageError("--prune goes with --apply")
    try:
        settings = load_settings(bootstrap_servers=bootstrap_servers)
        principals = load_principals(Path(principals_path))
    except ConfigError as err:
        raise BadConfig(str(err)) from None
    entries = acl_set(settings, principals)
    if not entries:
        raise BadConfig(f"{principals_path}: no principal is mapped to any role")
    click.echo(render(entries, output, settings.bootstrap_servers))
    if not apply_:
        return
    try:
        report = apply_acls(settings, entries, prune=prune)
    except Exception as err:  # noqa: BLE001 - one line, exit 1
        raise click.ClickException(
            f"cannot apply ACLs on {settings.bootstrap_servers}: {err}") from None
    for line in report.extra:
        if line in report.pruned:
            verdict = "deleted"
        elif prune:
            verdict = "kept (it reaches resources beyond this installation; delete it by hand)"
        else:
            verdict = "also allowed (--prune deletes it)"
        click.echo(f"{verdict}: {line}", err=True)
    click.echo(f"applied to {settings.bootstrap_servers}: {len(report.created)} created, "
               f"{len(report.present)} already present, {len(report.extra)} other ALLOW ACLs "
               f"on these resources ({len(report.pruned)} deleted)", err=True)
    sys.stdout.flush()
