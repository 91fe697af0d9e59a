"""Does a stuck webhook slow the decision loop? Approval → command latency with and without it.

Each pass starts a ``rollguard worker`` on fresh topics, publishes the ``approval-only-service``
scenario (payments needs a human), waits for the approval request, publishes alice's signed
approval and measures, with Kafka timestamps, approval response → rollback command. In the
"notify" passes, ``rollguard notify``'s Notifier runs beside it (same machine, same broker),
posting to a webhook that hangs (each try times out after 2 s, 100 tries): the notifier is stuck
for the whole pass. Passes alternate (plain, notify) ``--repeat`` times; the report gives the
median of each and their ratio (notify / plain; 1.0 = no effect). Each pass deletes its topics.

    scripts/kafka.sh start
    .venv/bin/python bench/notify_isolation.py --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import delete_topics  # noqa: E402  (bench/e2e.py: one topic clean-up for the benches)

from rollguard.models.events import ApprovalResponse
from rollguard.streams.keyring import Keyring
from rollguard.streams.notify import Notifier
from rollguard.streams.notify_config import NotifyConfig
from rollguard.streams.serde import record_to_dict
from rollguard.streams.settings import load_settings
from rollguard.streams.signing import (
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign_record,
)
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, shifted_to_now

REPO = Path(__file__).resolve().parents[1]
ROLLGUARD = str(Path(sys.executable).with_name("rollguard"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def first(bootstrap: str, topic: str, timeout: float) -> Any:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                return messages[0]
    finally:
        await consumer.stop()
    raise TimeoutError(f"nothing on {topic} after {timeout:g} s")


async def hanging(_: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(status=503)


async def one_pass(bootstrap: str, keys: Path, approvers: Path, with_notify: bool,
                   hook: str) -> float:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    web_port = free_port()
    env = dict(os.environ, ROLLGUARD_BOOTSTRAP_SERVERS=bootstrap, ROLLGUARD_TOPIC_PREFIX=prefix,
               ROLLGUARD_APP_ID=f"rollguard-{prefix[:-1]}", ROLLGUARD_PARTITIONS="2",
               ROLLGUARD_WEB_PORT=str(web_port), ROLLGUARD_APPROVERS=str(approvers),
               ROLLGUARD_SIGNING_KEY=str(keys / "gate.key"), ROLLGUARD_IDLE_ADVANCE_SECONDS="2",
               ROLLGUARD_LOG_LEVEL="WARNING")
    subprocess.run([ROLLGUARD, "topics", "create"], env=env, cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    worker = subprocess.Popen([ROLLGUARD, "worker"], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = load_settings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    stop = asyncio.Event()
    task = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{web_port}/health", timeout=2)  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        if with_notify:
            config = NotifyConfig.model_validate({
                "webhooks": [{"name": "stuck", "url": hook}],
                "retry": {"attempts": 100, "initial_backoff_seconds": 0.1,
                          "max_backoff_seconds": 0.5, "timeout_seconds": 2}})
            keyring = Keyring.of(load_public_key(keys / "gate.pub"))
            task = asyncio.create_task(Notifier(settings, config, f"{prefix}notify",
                                                keyring).run(stop))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000)
        await producer.start()
        try:
            events = shifted_to_now(list(generate("approval-only-service", 1).events),
                                    time.time())
            await send_events(producer, events, settings)
            request = orjson.loads((await first(bootstrap, settings.topic("approvals"),
                                                120)).value)
            await asyncio.sleep(3.0)  # let the notifier get stuck on the request
            response = sign_record(ApprovalResponse(
                request_id=request["request_id"], approver="user:alice", decision="approve",
                ts=time.time(), service=request["service"]), load_private_key(keys / "alice.key"))
            sent = await producer.send_and_wait(settings.topic("approval_responses"),
                                                orjson.dumps(record_to_dict(response)),
                                                key=request["service"].encode())
        finally:
            await producer.stop()
        command = await first(bootstrap, settings.topic("commands"), 120)
        return float(command.timestamp - sent.timestamp) / 1000.0
    finally:
        stop.set()
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        await delete_topics(bootstrap, prefix, f"rollguard-{prefix[:-1]}")


async def main(args: argparse.Namespace) -> int:
    bootstrap = os.environ.get("ROLLGUARD_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    work = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    keys = work / "keys"
    for name in ("gate", "alice"):
        generate_key_pair(keys, name)
    approvers = work / "approvers.yaml"
    approvers.write_text(yaml.safe_dump({"approvers": {"user:alice": {
        "roles": ["sre-oncall"], "public_key": (keys / "alice.pub").read_text()}}}))
    app = web.Application()
    app.router.add_post("/hook", hanging)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore
    results: dict[str, list[float]] = {"plain": [], "notify": []}
    try:
        for index in range(args.repeat):
            for mode in ("plain", "notify"):
                seconds = await one_pass(bootstrap, keys, approvers, mode == "notify", hook)
                results[mode].append(seconds)
                print(f"pass {index + 1} {mode:<6} approval → command {seconds * 1000:,.0f} ms",
                      flush=True)
    finally:
        await runner.cleanup()
    plain, notify = (statistics.median(results[m]) for m in ("plain", "notify"))
    print(f"median plain {plain * 1000:,.0f} ms, with a stuck notifier {notify * 1000:,.0f} ms: "
          f"ratio {notify / plain:.2f} (1.0 = no effect)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    sys.exit(asyncio.run(main(parser.parse_args())))
