"""The long-running processes: ``worker`` (the gate) and the reference ``executor``."""

from __future__ import annotations

from pathlib import Path

import click

from rollguard.streams.cli.common import (
    BOOTSTRAP_OPTION,
    POLICY_OPTION,
    VERIFY_OPTIONS,
    fail_config,
    settings_for,
    verifier_keyring,
)
from rollguard.streams.settings import ConfigError, check_slots_policy, load_policy


@click.command()
@BOOTSTRAP_OPTION
@POLICY_OPTION
def worker(bootstrap_servers: str | None, policy_path: str) -> None:
    """Run the stream processor against Kafka."""
    from rollguard.streams.app import run_worker

    settings = settings_for(bootstrap_servers, policy=policy_path)
    try:
        loaded = load_policy(settings.policy)
        check_slots_policy(settings, loaded)
    except ConfigError as err:
        fail_config(err)
    run_worker(settings, loaded)


@click.command()
@click.option("--exec", "exec_template", required=True,
              help="Command to run, e.g. 'deploy-tool rollback {service} {to_version}'. Fields: "
                   "service, to_version, from_version, deployment_id, command_id.")
@VERIFY_OPTIONS
@click.option("--scope", multiple=True, default=("*",), show_default=True,
              help="Service name pattern this executor may act on (repeatable).")
@click.option("--ledger", default="var/executor/ledger.sqlite3", show_default=True,
              type=click.Path(dir_okay=False), help="Durable record of executed command ids.")
@click.option("--group", default=None, help="Consumer group [default: <app id>-executor].")
@click.option("--timeout", default=600.0, show_default=True, type=float)
@click.option("--cdevents/--no-cdevents", default=True, show_default=True,
              help="Announce each executed rollback as a CDEvents service.rolledback on deploys.")
@BOOTSTRAP_OPTION
def executor(exec_template: str, verify_keys: tuple[str, ...], keyring_file: str | None,
             scope: tuple[str, ...], ledger: str, group: str | None, timeout: float,
             cdevents: bool,
             bootstrap_servers: str | None) -> None:
    """Reference executor: verify and run rollback commands, each at most once."""
    import asyncio
    import logging

    from rollguard.streams.executor import ExecutorConfig, run_executor

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = settings_for(bootstrap_servers)
    keyring = verifier_keyring(verify_keys, keyring_file)
    config = ExecutorConfig(
        exec_template=exec_template, keyring=keyring, ledger_path=Path(ledger),
        keyring_file=Path(keyring_file) if keyring_file else None,
        scope=tuple(scope), group_id=group or f"{settings.app_id}-executor",
        timeout_seconds=timeout, announce_rollbacks=cdevents,
    )
    try:
        asyncio.run(run_executor(settings, config, fixed=verifier_keyring(verify_keys, None)
                                 if verify_keys else None))
    except KeyboardInterrupt:
        pass
