"""The end-to-end demo, driven by scripts/demo.sh once the broker is up.

Starts `rollguard worker` (and, when a signing key is configured, the reference executor),
publishes a small simulated fleet to the input topics together with a few bad records, and
prints every record rollguard publishes — dead letters, decisions with their reasons,
approval requests, commands, verdicts — as it arrives. Stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console

from streams.settings import load_settings
from streams.simulate import generate
from streams.simulate_io import shifted_to_now

REPO = Path(__file__).resolve().parents[1]
ROLLGUARD = str(Path(sys.executable).with_name("rollguard"))
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)

# The fleet the demo publishes: (scenario, seed). Each brings its own neighbours.
# Seeds chosen so that no two scenarios share a service name.
FLEET = [("bad-deploy", 0), ("approval-only-service", 1), ("healthy", 4)]
BAD_RECORDS: list[tuple[str, bytes | None, bytes]] = [
    ("telemetry.metrics", b"checkout", b'{"type": "metric", "service": "checkout", "na'),
    ("telemetry.metrics", b"checkout",
     b'{"type":"metric","service":"checkout","name":"error_rate","value":NaN,"ts":0}'),
    ("telemetry.alerts", b"checkout", b'{"type":"page","service":"checkout"}'),
    ("deploys", b"search", b'{"type":"deploy","service":"search","status":"started"}'),
    ("telemetry.metrics", b"wrong-key",
     b'{"type":"metric","service":"checkout","name":"error_rate","value":0.1,"ts":1}'),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def show(record: dict[str, Any]) -> None:
    kind = record.get("type")
    service = record.get("service", "")
    if kind == "dead_letter":
        console.print(f"[red]DEAD LETTER[/red] {record['topic']}@{record['offset']}: "
                      f"{record['error']}")
    elif kind == "decision":
        colour = {"auto_rollback": "bold red", "request_approval": "yellow",
                  "pass": "green"}.get(record["action"], "white")
        console.print(f"[{colour}]DECISION {record['action']:>16}[/{colour}] {service:<14} "
                      f"{record.get('deployment_id') or '-':<28} "
                      f"{', '.join(record['reasons']) or '-'}  (event time {record['ts']})")
    elif kind == "rollback_command":
        console.print(f"[bold red]COMMAND[/bold red] {record['command_id']} {service} "
                      f"{record['from_version']} → {record['to_version']} "
                      f"authority={record['authority']} "
                      f"signed={'yes' if record['signature'] else 'no'}")
    elif kind == "approval_request":
        codes = ", ".join(r["code"] for r in record["reasons"])
        console.print(f"[yellow]APPROVAL REQUEST[/yellow] {record['request_id']} {service} "
                      f"role={record['required_role']}: {codes}")
    elif kind == "release_verdict":
        console.print(f"[cyan]VERDICT[/cyan] {service} {record['deployment_id']}: "
                      f"{record['verdict']}")
    elif kind == "rollback_result":
        console.print(f"[magenta]EXECUTOR[/magenta] {record['command_id']}: {record['status']} "
                      f"({record['reason']})")


async def run() -> int:
    prefix = f"demo-{int(time.time())}."
    env = dict(os.environ, ROLLGUARD_TOPIC_PREFIX=prefix,
               ROLLGUARD_APP_ID=f"rollguard-{prefix.rstrip('.')}",
               ROLLGUARD_WEB_PORT=str(free_port()), ROLLGUARD_PARTITIONS="2")
    settings = load_settings(topic_prefix=prefix, partitions=2)
    log_dir = REPO / "var" / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    console.rule(f"rollguard demo — topics prefixed {prefix!r}")
    subprocess.run([ROLLGUARD, "topics", "create"], env=env, check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    worker_log = open(log_dir / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([ROLLGUARD, "worker"], env=env, cwd=REPO, stdout=worker_log,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(  # noqa: S310 - loopback
                    f"http://127.0.0.1:{env['ROLLGUARD_WEB_PORT']}/health", timeout=2)
                break
            except OSError:
                if worker.poll() is not None or time.monotonic() > deadline:
                    console.print("[red]worker did not start[/red]; see var/demo/worker.log")
                    return 1
                await asyncio.sleep(0.5)
        console.print(f"worker up (pid {worker.pid}); publishing the fleet and some bad records")
        expected_deployments: set[str] = set()
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            events: list[dict[str, Any]] = []
            for name, seed in FLEET:
                scenario = generate(name, seed)
                expected_deployments |= set(scenario.labels)
                console.print(f"  scenario {name} (seed {seed}): labels {scenario.labels}")
                events.extend(shifted_to_now(list(scenario.events), time.time()))
            events.sort(key=lambda e: e["ts"])
            topic_of = {"deploy": "deploys", "metric": "metrics", "alert": "alerts"}
            for event in events:
                await producer.send(settings.topic(topic_of[event["type"]]), orjson.dumps(event),
                                    key=event["service"].encode())
            for topic, key, value in BAD_RECORDS:
                await producer.send(prefix + topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()
        console.print(f"published {len(events)} events and {len(BAD_RECORDS)} bad records\n")
        outputs = [settings.topic(n) for n in ("dead_letters", "decisions", "commands",
                                              "approvals", "verdicts", "results")]
        consumer = AIOKafkaConsumer(*outputs, bootstrap_servers=settings.bootstrap_servers,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        dead = 0
        decided: set[str] = set()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for message in messages:
                        record = orjson.loads(message.value)
                        show(record)
                        dead += record.get("type") == "dead_letter"
                        if record.get("type") == "release_verdict":
                            decided.add(record["deployment_id"])
                if dead >= len(BAD_RECORDS) and decided >= expected_deployments:
                    break
        finally:
            await consumer.stop()
        counts = orjson.loads(urllib.request.urlopen(  # noqa: S310 - loopback
            f"http://127.0.0.1:{env['ROLLGUARD_WEB_PORT']}/counts", timeout=5).read())
        console.rule("what the worker consumed, per service")
        for service, by_type in counts.items():
            console.print(f"  {service:<16} {by_type}")
        console.print(f"\n{dead} dead letters (of {len(BAD_RECORDS)} bad records); "
                      f"verdicts for {len(decided & expected_deployments)} of "
                      f"{len(expected_deployments)} deployments")
        ok = dead == len(BAD_RECORDS)
        return 0 if ok else 1
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        worker_log.close()
        console.print("worker stopped")


if __name__ == "__main__":
    sys.exit(asyncio.run(run()))
