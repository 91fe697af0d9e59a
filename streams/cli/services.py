"""``rollguard notify`` and ``rollguard console``: the long-running services around approvals.

The commands live here, beside the other verbs, so that they share the options of
``cli.common``; the services themselves (``streams.notify``, ``streams.console``) are imported
when the command runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from rollguard.streams.cli.common import (
    BOOTSTRAP_OPTION,
    POLICY_OPTION,
    VERIFY_OPTIONS,
    following,
    settings_for,
    verifier_keyring,
)

__all__ = ["console_command", "notify_command"]


@click.command("notify")
@click.option("--config", "config_path", envvar="ROLLGUARD_NOTIFY_CONFIG",
              default="config/notify.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Webhooks and retries (docs/approvals.md).")
@click.option("--group", default=None, help="Consumer group [default: <app id>-notify].")
@VERIFY_OPTIONS
@BOOTSTRAP_OPTION
def notify_command(config_path: str, group: str | None, verify_keys: tuple[str, ...],
                   keyring_file: str | None, bootstrap_servers: str | None) -> None:
    """Post approval requests and every change to them to the configured webhooks."""
    from rollguard.streams.notify import run_notifier
    from rollguard.streams.notify_config import load_notify_config
    from rollguard.streams.settings import ConfigError

    settings = settings_for(bootstrap_servers)
    try:
        config = load_notify_config(Path(config_path))
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    keyring = verifier_keyring(verify_keys, keyring_file)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_notifier(settings, config, group or f"{settings.app_id}-notify",
                 following(keyring, verify_keys, keyring_file))


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", envvar="ROLLGUARD_CONSOLE_PORT", default=6067, show_default=True,
              type=click.IntRange(0, 65535), help="Port (0: any free port; the URL is printed).")
@POLICY_OPTION
@VERIFY_OPTIONS
@BOOTSTRAP_OPTION
def console_command(host: str, port: int, policy_path: str, verify_keys: tuple[str, ...],
                    keyring_file: str | None, bootstrap_servers: str | None) -> None:
    """Serve the approval console: pending requests, evidence, plots; sign in the browser."""
    from rollguard.streams.approvers import load_approvers
    from rollguard.streams.console.app import ConsoleState, run_console
    from rollguard.streams.settings import ConfigError, load_policy

    settings = settings_for(bootstrap_servers, policy=policy_path)
    try:
        policy = load_policy(settings.policy)
        directory = load_approvers(Path(settings.approvers))
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    keyring = verifier_keyring(verify_keys, keyring_file)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_console(ConsoleState(settings, policy, directory,
                             following(keyring, verify_keys, keyring_file)), host, port)
