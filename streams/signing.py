"""Ed25519 signatures over canonical JSON (DESIGN §6).

The canonical form of a record is its JSON with sorted keys and without its ``signature`` field,
as orjson writes it (no whitespace, UTF-8). Commands and approval requests are signed by the
gate's private key, with the ``key_id`` of its public key among the signed fields (verifiers
hold a keyring: streams/keyring.py); approval responses by the approver's. Private keys are
read from files with owner-only permissions and are never logged or written to any topic.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

from rollguard.streams.serde import dumps, record_to_dict

_Signed = TypeVar("_Signed", bound=BaseModel)

__all__ = [
    "KeyError_",
    "canonical_bytes",
    "generate_key_pair",
    "key_id_of",
    "load_private_key",
    "load_public_key",
    "public_key_from_text",
    "sign_record",
    "signature_of",
    "verify_mapping",
]


class KeyError_(Exception):  # noqa: N801 - avoid shadowing the builtin KeyError
    """A key file that is missing, unreadable, of the wrong kind or too widely readable."""


def canonical_bytes(data: dict[str, Any]) -> bytes:
    """The bytes that are signed: sorted-key JSON of every field except ``signature`` (and, in
    an approval response, ``received_at``: the broker's arrival time, never the signer's)."""
    unsigned = ("signature", "received_at") if data.get("type") == "approval_response" else (
        "signature",)
    return dumps({k: v for k, v in data.items() if k not in unsigned}, sort_keys=True)


def signature_of(data: dict[str, Any], key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(canonical_bytes(data))).decode("ascii")


def key_id_of(key: Ed25519PublicKey) -> str:
    """The id of a public key: ``ed25519-`` and the first 16 hex digits of the sha256 of its
    32 raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def sign_record(record: _Signed, key: Ed25519PrivateKey, key_id: str | None = None) -> _Signed:
    """A copy of a frozen record with its ``signature`` filled in; a record with a ``key_id``
    field gets the signing key's id first (``key_id`` saves computing it per record)."""
    if "key_id" in type(record).model_fields:
        kid = key_id or key_id_of(key.public_key())
        record = record.model_copy(update={"key_id": kid})
    return record.model_copy(update={"signature": signature_of(record_to_dict(record), key)})


def verify_mapping(data: dict[str, Any], key: Ed25519PublicKey) -> bool:
    """True when ``data['signature']`` is a valid signature of ``data`` by ``key``."""
    signature = data.get("signature")
    if not isinstance(signature, str) or not signature:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), canonical_bytes(data))
    except (InvalidSignature, ValueError):
        return False
    return True


def generate_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (PEM PKCS8, mode 0600) and ``NAME.pub`` (PEM) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    if private_path.exists():
        raise KeyError_(f"{private_path} already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as err:
        raise KeyError_(f"{path}: cannot read the private key ({err.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyError_(f"{path}: private key is readable by others; run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyError_(f"{path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path}: not an Ed25519 key (make one with: rollguard keys generate)")
    return key


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key from PEM text or the base64 of its 32 raw bytes."""
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(stripped.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(stripped, validate=True))
    except (ValueError, TypeError):
        raise KeyError_("not an Ed25519 public key (PEM or base64 of 32 bytes)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_("not an Ed25519 public key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        text = path.read_text()
    except OSError as err:
        raise KeyError_(f"{path}: cannot read the public key ({err.strerror})") from None
    try:
        return public_key_from_text(text)
    except KeyError_ as err:
        raise KeyError_(f"{path}: {err}") from None
