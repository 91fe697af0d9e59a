"""``rollguard console``: serve the approval console."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["console_command"]


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", envvar="ROLLGUARD_CONSOLE_PORT", default=6067, show_default=True,
              type=click.IntRange(0, 65535), help="Port (0: any free port; the URL is printed).")
@click.option("--policy", "policy_path", envvar="ROLLGUARD_POLICY", default="config/policy.yaml",
              show_default=True, type=click.Path(dir_okay=False), help="Policy file (plots).")
@click.option("--verify-key", "verify_keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False), envvar="ROLLGUARD_VERIFY_KEY",
              help="A gate public key to verify requests with; repeatable.")
@click.option("--keyring", "keyring_file", type=click.Path(exists=True, dir_okay=False),
              envvar="ROLLGUARD_KEYRING", help="The gate's keyring to verify requests with.")
@click.option("--bootstrap-servers", envvar="ROLLGUARD_BOOTSTRAP_SERVERS", default=None,
              help="Kafka bootstrap servers [default: 127.0.0.1:9092].")
def console_command(host: str, port: int, policy_path: str, verify_keys: tuple[str, ...],
                    keyring_file: str | None, bootstrap_servers: str | None) -> None:
    """Serve the approval console: pending requests, evidence, plots; sign in the browser."""
    import logging

    from rollguard.streams.approvers import load_approvers
    from rollguard.streams.cli.common import following, verifier_keyring
    from rollguard.streams.console.app import ConsoleState, run_console
    from rollguard.streams.settings import ConfigError, load_policy, load_settings

    try:
        settings = load_settings(bootstrap_servers=bootstrap_servers, policy=policy_path)
        policy = load_policy(settings.policy)
        directory = load_approvers(Path(settings.approvers))
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    keyring = verifier_keyring(verify_keys, keyring_file)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_console(ConsoleState(settings, policy, directory,
                             following(keyring, verify_keys, keyring_file)), host, port)
