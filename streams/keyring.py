"""The gate's public keys as verifiers hold them: a keyring, so the gate key can rotate.

Commands and approval requests carry ``key_id`` (``key_id_of`` the signing key's public key,
signed with the rest). A verifier — the executor, ``rollguard approve|deny`` — looks the id up
in its keyring and accepts the signature only from that key, and only until the key's
``not_after`` (the end of a rotation's overlap). The keyring file (YAML):

    keys:
      ed25519-3f1c0a9be4d27c55:
        public_key: |
          -----BEGIN PUBLIC KEY-----
          ...
        not_after: null                    # the current key
      ed25519-90ab11d2c3e4f5a6:
        public_key: "<PEM or base64 of 32 bytes>"
        not_after: "2026-12-06T18:00:00Z"  # the previous key, accepted until then

``rotate`` makes a new gate key pair and writes the keyring with both keys (docs/security.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rollguard.models.events import format_ts, parse_ts
from rollguard.streams.signing import (
    KeyError_,
    generate_key_pair,
    key_id_of,
    load_private_key,
    load_public_key,
    public_key_from_text,
    verify_mapping,
)

log = logging.getLogger("rollguard.keyring")

__all__ = [
    "Keyring",
    "KeyringFollower",
    "TrustedKey",
    "load_keyring",
    "load_verifiers",
    "retired_keys",
    "rotate",
    "write_keyring",
]


@dataclass(frozen=True)
class TrustedKey:
    key: Ed25519PublicKey
    not_after: float | None = None


@dataclass(frozen=True)
class Keyring:
    """Key id → public key (and the end of its validity, if it is being retired)."""

    keys: dict[str, TrustedKey] = field(default_factory=dict)

    @classmethod
    def of(cls, *keys: Ed25519PublicKey) -> Keyring:
        """A keyring of current keys (no end of validity)."""
        return cls({key_id_of(k): TrustedKey(k) for k in keys})

    def merged(self, other: Keyring) -> Keyring:
        return Keyring({**self.keys, **other.keys})

    def __len__(self) -> int:
        return len(self.keys)

    def problem(self, data: dict[str, Any], now: float) -> str | None:
        """Why ``data`` is not signed by a key of this keyring valid at ``now``, or None."""
        if not data.get("signature"):
            return "unsigned: no signature"
        kid = data.get("key_id")
        if not isinstance(kid, str) or not kid:
            return "unsigned: no key_id"
        trusted = self.keys.get(kid)
        if trusted is None:
            return f"bad signature: key {kid} is not in the keyring"
        if trusted.not_after is not None and now > trusted.not_after:
            return f"bad signature: key {kid} was retired at {format_ts(trusted.not_after)}"
        if not verify_mapping(data, trusted.key):
            return "bad signature: tampered, or signed by another key"
        return None


def _public_text(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_keyring(path: Path) -> Keyring:
    """Read a keyring file; KeyError_ names the file, the entry and what is wrong."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise KeyError_(f"{path}: cannot read the keyring ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise KeyError_(f"{path}: not valid YAML: {err}") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise KeyError_(f"{path}: expected a mapping 'keys: {{<key id>: {{public_key: ...}}}}'")
    keys: dict[str, TrustedKey] = {}
    for kid, entry in entries.items():
        if not isinstance(entry, dict) or "public_key" not in entry:
            raise KeyError_(f"{path}: keys.{kid}: needs public_key")
        try:
            key = public_key_from_text(str(entry["public_key"]))
            not_after = entry.get("not_after")
            until = None if not_after is None else parse_ts(not_after)
        except (KeyError_, ValueError) as err:
            raise KeyError_(f"{path}: keys.{kid}: {err}") from None
        if key_id_of(key) != kid:
            raise KeyError_(f"{path}: keys.{kid}: the key's id is {key_id_of(key)}")
        keys[str(kid)] = TrustedKey(key, until)
    return Keyring(keys)


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Write ``keyring`` (current keys last), atomically."""
    entries = {
        kid: {"public_key": _public_text(t.key),
              "not_after": None if t.not_after is None else format_ts(t.not_after)}
        for kid, t in sorted(keyring.keys.items(),
                             key=lambda item: (item[1].not_after is None, item[0]))
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(yaml.safe_dump({"keys": entries}, sort_keys=False))
    os.replace(temporary, path)


def load_verifiers(key_files: Iterable[str], keyring_file: str | None) -> Keyring:
    """The keyring of a verifier: ``--verify-key`` files (current keys) and a keyring file."""
    ring = Keyring.of(*(load_public_key(Path(p)) for p in key_files))
    if keyring_file:
        ring = ring.merged(load_keyring(Path(keyring_file)))
    return ring


class KeyringFollower:
    """A verifier's keys that follow the keyring file: ``refresh`` re-reads the file when it
    changed (``keys rotate`` rewrote it) and gives the new keys (plus the fixed
    ``--verify-key`` ones), or None; a file that does not load is logged and the last good
    keys are kept. Without a file, the keys never change."""

    def __init__(self, fixed: Keyring, path: Path | None,
                 initial: Keyring | None = None) -> None:
        self.fixed = fixed
        self.path = path
        self.stamp = self._stamp()
        self.keyring = initial if initial is not None else (
            fixed.merged(load_keyring(path)) if path is not None else fixed)

    def _stamp(self) -> tuple[float, int] | None:
        try:
            info = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return None if info is None else (info.st_mtime, info.st_size)

    def refresh(self) -> Keyring | None:
        stamp = self._stamp()
        if self.path is None or stamp is None or stamp == self.stamp:
            return None
        self.stamp = stamp
        try:
            keyring = self.fixed.merged(load_keyring(self.path))
        except KeyError_ as err:
            log.error("keyring not reloaded, keeping the previous keys: %s", err)
            return None
        log.info("keyring reloaded from %s: %s", self.path, ", ".join(sorted(keyring.keys)))
        self.keyring = keyring
        return keyring


def rotate(directory: Path, name: str, keyring_path: Path, overlap_seconds: float,
           now: float) -> tuple[str, str | None]:
    """Retire ``NAME.key`` (renamed ``NAME.<key id>.key``), make a new ``NAME.key``, and write
    the keyring: the new key, and the old one accepted until ``now + overlap_seconds``.
    Returns (new key id, old key id or None when there was no key)."""
    ring = load_keyring(keyring_path) if keyring_path.exists() else Keyring()
    keys = dict(ring.keys)
    old_id = None
    public = directory / f"{name}.pub"
    if public.exists():
        old = load_public_key(public)
        old_id = key_id_of(old)
        until = now + overlap_seconds
        previous = keys.get(old_id)
        if previous is not None and previous.not_after is not None:
            until = min(until, previous.not_after)
        keys[old_id] = TrustedKey(old, until)
        for suffix in ("key", "pub"):
            source = directory / f"{name}.{suffix}"
            if source.exists():
                os.replace(source, directory / f"{name}.{old_id}.{suffix}")
    _, new_public = generate_key_pair(directory, name)
    new = load_public_key(new_public)
    keys[key_id_of(new)] = TrustedKey(new)
    write_keyring(keyring_path, Keyring(keys))
    return key_id_of(new), old_id



def retired_keys(signing_key: Path | None) -> list[Ed25519PrivateKey]:
    """The gate keys ``rotate`` retired beside ``signing_key`` (``NAME.<key id>.key``): the
    worker still accepts the state it sealed with them, so a rotated gate resumes its state."""
    if signing_key is None:
        return []
    keys = []
    for path in sorted(signing_key.parent.glob(f"{signing_key.stem}.ed25519-*.key")):
        try:
            keys.append(load_private_key(path))
        except KeyError_ as err:
            log.warning("retired gate key not used for the state: %s", err)
    return keys
