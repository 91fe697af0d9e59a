"""Shared fixtures. Broker tests need the Kafka that scripts/kafka.sh starts.

With ROLLGUARD_REQUIRE_BROKER=1 (set by `make test` and CI) an unreachable broker is a failure;
on a developer's laptop without it, broker tests skip.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = os.environ.get("ROLLGUARD_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def broker_reachable(bootstrap: str = BOOTSTRAP) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The bootstrap address of the real broker; fail (CI) or skip (laptop) without one."""
    if broker_reachable():
        return BOOTSTRAP
    message = f"Kafka broker not reachable at {BOOTSTRAP} (start it: scripts/kafka.sh start)"
    if os.environ.get("ROLLGUARD_REQUIRE_BROKER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def run_id() -> Iterator[str]:
    """A unique prefix for topics and app ids, so broker tests never see each other's data."""
    yield f"t{uuid.uuid4().hex[:10]}."
