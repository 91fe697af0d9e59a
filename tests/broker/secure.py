"""The secured local broker for tests: `scripts/kafka.sh start --secure` and its credentials.

Its port is KAFKA_SECURE_PORT, else the plain broker's port + 4 (KAFKA_PORT, else the port of
ROLLGUARD_BOOTSTRAP_SERVERS, else 9092), as scripts/kafka.sh computes it. A broker this session
started is stopped at its end; one that was already running is left running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = str(REPO / "scripts" / "kafka.sh")
USERS = ("admin", "gate", "executor", "approver", "producer", "analyst")


def secure_port() -> int:
    if os.environ.get("KAFKA_SECURE_PORT"):
        return int(os.environ["KAFKA_SECURE_PORT"])
    plain = os.environ.get("KAFKA_PORT") or os.environ.get(
        "ROLLGUARD_BOOTSTRAP_SERVERS", "127.0.0.1:9092").split(",")[0].rpartition(":")[2]
    return int(plain) + 4


@dataclass(frozen=True)
class SecureBroker:
    """Address and generated passwords of the secured broker."""

    bootstrap: str
    passwords: dict[str, str]
    mechanism: str

    def env(self, user: str, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a rollguard process that authenticates as ``user``."""
        env = dict(os.environ if base is None else base)
        env.update(ROLLGUARD_BOOTSTRAP_SERVERS=self.bootstrap,
                   ROLLGUARD_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                   ROLLGUARD_SASL_MECHANISM=self.mechanism,
                   ROLLGUARD_SASL_USERNAME=user,
                   ROLLGUARD_SASL_PASSWORD=self.passwords[user])
        return env

    def client_options(self, user: str) -> dict[str, Any]:
        """aiokafka keyword arguments of a client that authenticates as ``user``."""
        return {"bootstrap_servers": self.bootstrap, "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": self.mechanism, "sasl_plain_username": user,
                "sasl_plain_password": self.passwords[user]}


def _unavailable(message: str) -> None:
    if os.environ.get("ROLLGUARD_REQUIRE_BROKER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def secure_broker_session() -> Iterator[SecureBroker]:
    """Start the secured broker unless it runs; yield it; stop it if this session started it."""
    if shutil.which("java") is None:
        _unavailable("java not found: the secured broker cannot start")
    port = secure_port()
    env = {**os.environ, "KAFKA_SECURE_PORT": str(port)}
    running = subprocess.run([KAFKA_SH, "status", "--secure"], env=env, capture_output=True,
                             text=True, timeout=60, check=False).returncode == 0
    if not running:
        started = subprocess.run([KAFKA_SH, "start", "--secure"], env=env, capture_output=True,
                                 text=True, timeout=300, check=False)
        if started.returncode != 0:
            _unavailable(f"scripts/kafka.sh start --secure failed:\n{started.stderr[-3000:]}")
    home = Path(os.environ.get("ROLLGUARD_KAFKA_HOME", REPO / ".cache" / "kafka"))
    credentials = json.loads((home / f"run-secure-{port}" / "credentials.json").read_text())
    try:
        yield SecureBroker(bootstrap=credentials["bootstrap_servers"],
                           passwords=credentials["users"],
                           mechanism=credentials["sasl_mechanism"])
    finally:
        if not running:
            subprocess.run([KAFKA_SH, "stop", "--secure"], env=env, capture_output=True,
                           timeout=120, check=False)
