"""The ``rollguard`` command (DESIGN §8), one module per group of verbs:

- ``admin``: ``policy check``, ``schema``, ``keys``, ``topics create``;
- ``analysis``: ``simulate``, ``replay``, ``export``, ``score-series``;
- ``runtime``: ``worker``, ``executor``;
- ``answers``: ``approve``, ``deny``; ``approvals``: ``list``, ``show``;
- ``acls``, ``bridge``; ``services``: ``notify`` and ``console``.

Exit status: 0 on success, 2 on bad usage or bad configuration, 1 on any other failure, with a
one-line reason on stderr. Heavy modules (faust, aiokafka, matplotlib) are imported by the verbs
that need them, so ``rollguard policy check`` stays fast.
"""

from __future__ import annotations

import sys

import click

from rollguard.streams.cli.acls import acls
from rollguard.streams.cli.admin import keys, policy, schema, topics
from rollguard.streams.cli.analysis import export_command, replay, score_series_command, simulate
from rollguard.streams.cli.answers import approve, deny
from rollguard.streams.cli.approvals import approvals
from rollguard.streams.cli.bridge import bridge
from rollguard.streams.cli.runtime import executor, worker
from rollguard.streams.cli.services import console_command, notify_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rollguard")
def cli() -> None:
    """rollguard: automatic rollback only where the evidence earns it."""


for command in (
    policy, schema, keys, topics,
    simulate, replay, export_command, score_series_command,
    worker, executor,
    approve, deny, approvals, notify_command, console_command,
    acls, bridge,
):
    cli.add_command(command)


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
