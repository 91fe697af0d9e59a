"""The end-to-end demo, driven by scripts/demo.sh once the broker is up.

Makes a gate key and an approver (alice), starts `rollguard worker` and the reference
`rollguard executor`, publishes a small simulated fleet — a bad release that rolls back on its
own, one on an approval-only service that alice approves from the command line, and a clean
one that passes — with a few bad records, and prints every record rollguard publishes as it
arrives. Stops everything it started.
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
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console

from rollguard.streams.settings import load_settings
from rollguard.streams.signing import generate_key_pair
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, shifted_to_now

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


def live(name: str, events: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Place a scenario in real time: a clean bake ends now; a bad release deployed 4 min ago."""
    if name == "healthy":
        return shifted_to_now(events, now)
    deployed = next(e["ts"] for e in events if e["type"] == "deploy")
    delta = (now - 240.0) - deployed
    return [{**e, "ts": round(e["ts"] + delta, 3)} for e in events if e["ts"] + delta <= now]


def make_people(run_dir: Path) -> dict[str, Path]:
    keys = run_dir / "keys"
    generate_key_pair(keys, "gate")
    generate_key_pair(keys, "alice")
    approvers = run_dir / "approvers.yaml"
    approvers.write_text(yaml.safe_dump({"approvers": {"user:alice": {
        "roles": ["sre-oncall"], "public_key": (keys / "alice.pub").read_text()}}}))
    return {"gate_key": keys / "gate.key", "gate_pub": keys / "gate.pub",
            "alice_key": keys / "alice.key", "approvers": approvers}


async def run() -> int:
    prefix = f"demo-{int(time.time())}."
    log_dir = REPO / "var" / "demo" / prefix.rstrip(".")
    log_dir.mkdir(parents=True, exist_ok=True)
    people = make_people(log_dir)
    env = dict(os.environ, ROLLGUARD_TOPIC_PREFIX=prefix,
               ROLLGUARD_APP_ID=f"rollguard-{prefix.rstrip('.')}",
               ROLLGUARD_WEB_PORT=str(free_port()), ROLLGUARD_PARTITIONS="2",
               ROLLGUARD_SIGNING_KEY=str(people["gate_key"]),
               ROLLGUARD_VERIFY_KEY=str(people["gate_pub"]),  # approve, console verify
               ROLLGUARD_APPROVERS=str(people["approvers"]),
               ROLLGUARD_IDLE_ADVANCE_SECONDS="2")
    settings = load_settings(topic_prefix=prefix, partitions=2)
    console.rule(f"rollguard demo — topics prefixed {prefix!r}")
    subprocess.run([ROLLGUARD, "topics", "create"], env=env, check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    worker_log = open(log_dir / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([ROLLGUARD, "worker"], env=env, cwd=REPO, stdout=worker_log,
                              stderr=subprocess.STDOUT)
    executor_log = open(log_dir / "executor.log", "wb")  # noqa: SIM115
    executor = subprocess.Popen(
        [ROLLGUARD, "executor", "--verify-key", str(people["gate_pub"]),
         "--ledger", str(log_dir / "ledger.sqlite3"),
         "--exec", f"{sys.executable} -c \"import sys; print('deploy-tool rollback', "
                   "*sys.argv[1:])\" {service} {from_version} {to_version}"],
        env=env, cwd=REPO, stdout=executor_log, stderr=subprocess.STDOUT)
    console_port = free_port()
    console_log = open(log_dir / "console.log", "wb")  # noqa: SIM115
    console_process = subprocess.Popen([ROLLGUARD, "console", "--port", str(console_port)],
                                       env=env, cwd=REPO, stdout=console_log,
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
        console.print(f"worker up (pid {worker.pid}); approval console on "
                      f"[bold]http://127.0.0.1:{console_port}/[/bold] (rollguard console)")
        console.print("publishing the fleet and some bad records")
        expected_deployments: set[str] = set()
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            events: list[dict[str, Any]] = []
            now = time.time()
            for name, seed in FLEET:
                scenario = generate(name, seed)
                expected_deployments |= set(scenario.labels)
                console.print(f"  scenario {name} (seed {seed}): labels {scenario.labels}")
                events.extend(live(name, list(scenario.events), now))
            events.sort(key=lambda e: e["ts"])
            await send_events(producer, events, settings)
            for topic, key, value in BAD_RECORDS:
                await producer.send(prefix + topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()
        console.print(f"published {len(events)} events and {len(BAD_RECORDS)} bad records\n")
        outputs = [settings.topic(n) for n in ("dead_letters", "decisions", "commands",
                                              "approvals", "verdicts", "results")]
        consumer = AIOKafkaConsumer(*outputs, bootstrap_servers=settings.bootstrap_servers,
                                    auto_offset_reset="earliest", group_id=None,
                                    isolation_level="read_committed")
        await consumer.start()
        dead = executed = 0
        decided: set[str] = set()
        try:
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for message in messages:
                        record = orjson.loads(message.value)
                        show(record)
                        kind = record.get("type")
                        dead += kind == "dead_letter"
                        executed += kind == "rollback_result" and record["status"] == "executed"
                        if kind == "release_verdict" and record["verdict"] in FINAL:
                            decided.add(record["deployment_id"])
                        if kind == "approval_request":
                            await approve_as_alice(record, env, people["alice_key"])
                if dead >= len(BAD_RECORDS) and decided >= expected_deployments and executed >= 2:
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
        console.print(f"{executed} rollbacks executed by the reference executor; logs in {log_dir}")
        ok = dead == len(BAD_RECORDS) and decided >= expected_deployments and executed >= 2
        return 0 if ok else 1
    finally:
        for process in (console_process, executor, worker):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        worker_log.close()
        executor_log.close()
        console_log.close()
        console.print("worker, executor and console stopped")


FINAL = {"rolled_back", "pass", "inconclusive"}


async def approve_as_alice(request: dict[str, Any], env: dict[str, str], key: Path) -> None:
    """What an SRE on call does: look at the request, then sign an approval on the CLI."""
    console.print("[bold]$ rollguard approvals list[/bold]")
    listed = await asyncio.to_thread(subprocess.run, [ROLLGUARD, "approvals", "list"], env=env,
                                     cwd=REPO, capture_output=True, text=True, timeout=60,
                                     check=False)
    print(listed.stdout.rstrip() or listed.stderr.strip(), flush=True)
    command = [ROLLGUARD, "approve", request["request_id"], "--as", "user:alice", "--key",
               str(key), "--comment", "confirmed on dashboards", "--service", request["service"]]
    console.print(f"[bold]$ rollguard approve {request['request_id']} --as user:alice "
                  f"--key alice.key --comment 'confirmed on dashboards'[/bold]")
    result = await asyncio.to_thread(subprocess.run, command, env=env, cwd=REPO,
                                     capture_output=True, text=True, timeout=60, check=False)
    console.print(result.stdout.strip() or result.stderr.strip())


if __name__ == "__main__":
    sys.exit(asyncio.run(run()))
