"""Approvers (``config/approvers.yaml``): who may approve, with which key and roles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rollguard.models.engine import ApprovalCheck
from rollguard.models.events import ApprovalResponse
from rollguard.streams.settings import ConfigError
from rollguard.streams.signing import KeyError_, public_key_from_text, verify_mapping

__all__ = ["Approver", "ApproverDirectory", "load_approvers"]


class _ApproverEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: tuple[str, ...] = Field(min_length=1)
    public_key: str = Field(min_length=1)


class _ApproversFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    approvers: dict[str, _ApproverEntry] = Field(default_factory=dict)


@dataclass(frozen=True)
class Approver:
    identity: str
    roles: frozenset[str]
    public_key: Ed25519PublicKey


@dataclass(frozen=True)
class ApproverDirectory:
    """The known approvers; checks an approval response's signature against its approver."""

    approvers: dict[str, Approver]

    def get(self, identity: str) -> Approver | None:
        return self.approvers.get(identity)

    def signature_valid(self, response: dict[str, Any]) -> bool:
        approver = self.approvers.get(str(response.get("approver", "")))
        return approver is not None and verify_mapping(response, approver.public_key)


def load_approvers(path: Path) -> ApproverDirectory:
    """Read and validate the approvers file; ConfigError names the file, field and fix."""
    if not path.exists():
        return ApproverDirectory({})
    try:
        data = yaml.safe_load(path.read_text()) or {}
        document = _ApproversFile.model_validate(data)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path}: {field}: {first['msg']} (each approver needs 'roles' and 'public_key')"
        ) from None
    approvers = {}
    for identity, entry in document.approvers.items():
        try:
            key = public_key_from_text(entry.public_key)
        except KeyError_ as err:
            raise ConfigError(
                f"{path}: approvers.{identity}.public_key: {err}; paste the .pub file made by "
                "'rollguard keys generate'"
            ) from None
        approvers[identity] = Approver(identity, frozenset(entry.roles), key)
    return ApproverDirectory(approvers)


def approval_check(
    raw: bytes,
    response: ApprovalResponse,
    directory: ApproverDirectory,
    max_clock_skew_seconds: float | None = None,
) -> ApprovalCheck:
    """What the shell verifies of an approval response before the core judges it.

    The signature is checked over the message *as received* (its JSON object minus
    ``signature`` and ``received_at``, the broker's time: streams/signing.py), so approvers'
    tools need not serialise exactly as rollguard does.
    """
    approver = directory.get(response.approver)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    valid = (
        approver is not None
        and isinstance(data, dict)
        and verify_mapping(data, approver.public_key)
    )
    return ApprovalCheck(
        signature_valid=valid,
        approver_known=approver is not None,
        approver_roles=approver.roles if approver is not None else frozenset(),
        max_clock_skew_seconds=max_clock_skew_seconds,
    )
