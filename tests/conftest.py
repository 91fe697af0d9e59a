"""Shared fixtures. Broker tests need the Kafka that scripts/kafka.sh starts.

With ROLLGUARD_REQUIRE_BROKER=1 (set by `make test` and CI) an unreachable broker is a failure;
on a developer's laptop without it, broker tests skip.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = os.environ.get("ROLLGUARD_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def broker_unreachable_reason(bootstrap: str = BOOTSTRAP, timeout: float = 10.0) -> str | None:
    """None if a Kafka broker at ``bootstrap`` answers a metadata request, else why not."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=2.0).close()
    except OSError as exc:
        return f"no Kafka broker listening on {bootstrap} ({exc})"

    async def metadata() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    try:
        asyncio.run(asyncio.wait_for(metadata(), timeout))
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"Kafka broker on {bootstrap} does not answer a metadata request ({exc!r})"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every test in an xdist group, for `make test`'s ``-n 2 --dist loadgroup``.

    A module's tests stay on one pytest-xdist worker, in their order (a module fixture is built
    once and never raced by its own module, e.g. the wheel's build in the checkout), and every
    test of the secured broker goes to one worker: the broker that ``secure_broker`` starts and
    stops is one per machine. Without xdist the marks do nothing.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        group = ("secure-broker" if "secure_broker" in getattr(item, "fixturenames", ())
                 else item.nodeid.split("::", 1)[0])
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The bootstrap address of the real broker; fail (CI) or skip (laptop) without one."""
    reason = broker_unreachable_reason()
    if reason is None:
        return BOOTSTRAP
    message = f"{reason} (start it: scripts/kafka.sh start)"
    if os.environ.get("ROLLGUARD_REQUIRE_BROKER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def run_id() -> Iterator[str]:
    """A unique prefix for topics and app ids, so broker tests never see each other's data."""
    yield f"t{uuid.uuid4().hex[:10]}."
