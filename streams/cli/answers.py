"""Answering an approval request from the command line: ``approve`` and ``deny``."""

from __future__ import annotations

from typing import Any, Literal

import click

from rollguard.streams.cli.common import (
    BOOTSTRAP_OPTION,
    VERIFY_OPTIONS,
    Failure,
    private_key,
    settings_for,
    verifier_keyring,
)


def _respond(decision: Literal["approve", "deny"], request_id: str, identity: str,
             key_file: str, comment: str, service: str | None, verify_keys: tuple[str, ...],
             keyring_file: str | None, bootstrap_servers: str | None) -> None:
    import asyncio

    from rollguard.streams.approval_client import publish_response

    settings = settings_for(bootstrap_servers)
    keyring = verifier_keyring(verify_keys, keyring_file)
    key = private_key(key_file)
    try:
        found = asyncio.run(publish_response(settings, request_id, identity, decision, comment,
                                             key, service, keyring))
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
                        help="The request's service (checked against the request).")(func)
    func = VERIFY_OPTIONS(func)
    return BOOTSTRAP_OPTION(func)


@click.command()
@_response_options
def approve(request_id: str, identity: str, key_file: str, comment: str, service: str | None,
            verify_keys: tuple[str, ...], keyring_file: str | None,
            bootstrap_servers: str | None) -> None:
    """Sign and publish an approval of REQUEST_ID."""
    _respond("approve", request_id, identity, key_file, comment, service, verify_keys,
             keyring_file, bootstrap_servers)


@click.command()
@_response_options
def deny(request_id: str, identity: str, key_file: str, comment: str, service: str | None,
         verify_keys: tuple[str, ...], keyring_file: str | None,
         bootstrap_servers: str | None) -> None:
    """Sign and publish a denial of REQUEST_ID."""
    _respond("deny", request_id, identity, key_file, comment, service, verify_keys,
             keyring_file, bootstrap_servers)
