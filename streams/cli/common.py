"""What every ``rollguard`` verb shares: the exit-status exceptions, common options, and
loading settings, approvers and keys with the failure mapped to exit status 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import click

from rollguard.streams.settings import ConfigError, load_settings

__all__ = [
    "BOOTSTRAP_OPTION",
    "POLICY_OPTION",
    "VERIFY_OPTIONS",
    "BadConfig",
    "Failure",
    "approver_directory",
    "fail_config",
    "following",
    "private_key",
    "settings_for",
    "verifier_keyring",
]

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



def VERIFY_OPTIONS(func: Any) -> Any:  # noqa: N802 - a decorator, named like the options above
    """``--verify-key`` (repeatable) and ``--keyring``: the gate's public keys, for every verb
    that verifies what the gate signed (executor, approve/deny, notify, console)."""
    func = click.option(
        "--keyring", "keyring_file", type=click.Path(exists=True, dir_okay=False),
        envvar="ROLLGUARD_KEYRING",
        help="The gate's keyring (keys with their rotation overlap; docs/security.md).",
    )(func)
    return click.option(
        "--verify-key", "verify_keys", multiple=True,
        type=click.Path(exists=True, dir_okay=False), envvar="ROLLGUARD_VERIFY_KEY",
        help="A gate Ed25519 public key (PEM); repeatable.",
    )(func)


class Failure(click.ClickException):
    """A runtime failure: exit status 1, one line on stderr."""

    exit_code = 1


class BadConfig(click.ClickException):
    """Bad usage or configuration: exit status 2."""

    exit_code = 2


def fail_config(err: Exception) -> NoReturn:
    raise BadConfig(str(err).replace("\n", " | "))



def settings_for(bootstrap_servers: str | None, **extra: Any) -> Any:
    try:
        return load_settings(bootstrap_servers=bootstrap_servers, **extra)
    except ConfigError as err:
        fail_config(err)


def approver_directory(settings: Any) -> Any:
    from rollguard.streams.approvers import load_approvers

    try:
        return load_approvers(Path(settings.approvers))
    except ConfigError as err:
        fail_config(err)


def verifier_keyring(verify_keys: tuple[str, ...], keyring_file: str | None) -> Any:
    """The gate keys a verifier trusts; bad usage (exit 2) if none is given."""
    from rollguard.streams.keyring import load_verifiers
    from rollguard.streams.signing import KeyError_

    if not verify_keys and not keyring_file:
        raise click.UsageError("give the gate's public key: --verify-key FILE or --keyring FILE "
                               "(env ROLLGUARD_VERIFY_KEY / ROLLGUARD_KEYRING)")
    try:
        return load_verifiers(verify_keys, keyring_file)
    except KeyError_ as err:
        fail_config(err)


def following(keyring: Any, verify_keys: tuple[str, ...], keyring_file: str | None) -> Any:
    """``keyring`` (from ``verifier_keyring``) as a KeyringFollower: the ``--keyring`` file is
    re-read when it changes, the ``--verify-key`` keys stay."""
    from rollguard.streams.keyring import KeyringFollower, load_verifiers

    return KeyringFollower(load_verifiers(verify_keys, None),
                           Path(keyring_file) if keyring_file else None, initial=keyring)


def private_key(path: str) -> Any:
    from rollguard.streams.signing import KeyError_, load_private_key

    try:
        return load_private_key(Path(path))
    except KeyError_ as err:
        fail_config(err)
