"""The HTTP bridges against the real tools (Debian packages; scripts/ensure-prometheus.sh).

- Prometheus scrapes a small exporter this test runs, remote-writes through
  ``rollguard bridge prometheus``, and the worker decides a bad deploy from that telemetry as
  replay decides from the same records in native JSON.
- Alertmanager receives alerts through its API; its webhook reaches ``telemetry.alerts``
  through ``rollguard bridge alertmanager``, firing and then resolved.

Short intervals everywhere (1 s scrapes, 1 s remote-write deadline, 1 s group interval).
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rollguard.streams.replay import replay_to_bytes
from rollguard.streams.serde import dumps
from rollguard.streams.settings import load_policy
from tests.broker.conftest import REPO, ROLLGUARD, WorkerRun, consume
from tests.broker.worker_io import read_all

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

FAST_POLICY = REPO / "tests" / "broker" / "data" / "fast-policy.yaml"


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} is not installed: run scripts/ensure-prometheus.sh")


def port_in_range(low: int = 9400, high: int = 9500) -> int:
    """A free port in 9400-9499 (this project's range; never the tools' defaults)."""
    candidates = list(range(low, high))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 9400-9499")


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url} process exited:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer:\n{log.read_text(errors='replace')[-3000:]}")


class Processes:
    """Processes started by one test; all stopped at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None
              ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp_path / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=handle,
                                   stderr=subprocess.STDOUT)
        self.running.append(process)
        return process, log

    def bridge(self, kind: str, run: WorkerRun, **env: str) -> int:
        port = port_in_range()
        process, log = self.start(f"bridge-{kind}", [ROLLGUARD, "bridge", kind, "--port",
                                                    str(port)], env={**run.env, **env})
        wait_http(f"http://127.0.0.1:{port}/healthz", process, log)
        return port

    def stop(self) -> None:
        for process in reversed(self.running):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop()


class Exporter:
    """A tiny /metrics endpoint: an error-ratio gauge and a request counter for one service."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.error_ratio = 0.01
        self.started = time.time()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port_in_range()), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def text(self) -> str:
        requests = int((time.time() - self.started) * 50)  # 50 requests/s
        return (
            "# TYPE service:error_rate:ratio gauge\n"
            f'service:error_rate:ratio{{service="{self.service}"}} {self.error_ratio}\n'
            "# TYPE http_requests_total counter\n"
            f'http_requests_total{{service="{self.service}",code="200"}} {requests}\n'
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PROMETHEUS_RULES = json.dumps([
    {"source": "service:error_rate:ratio", "metric": "error_rate"},
    {"source": "http_requests_total", "metric": "request_rate", "kind": "counter"},
])


async def test_prometheus_remote_write_drives_a_decision(
    worker_run: WorkerRun, processes: Processes, producer: AIOKafkaProducer,
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    prometheus = _binary("prometheus")
    service = f"shop-{worker_run.prefix.strip('.')}"
    worker_run.env["ROLLGUARD_POLICY"] = str(FAST_POLICY)
    worker_run.start()
    bridge = processes.bridge("prometheus", worker_run,
                              ROLLGUARD_INGEST__PROMETHEUS__RULES=PROMETHEUS_RULES)
    exporter = Exporter(service)
    try:
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "shop", "static_configs": [
                {"targets": [f"127.0.0.1:{exporter.port}"]}]}],
            "remote_write": [{"url": f"http://127.0.0.1:{bridge}/api/v1/write",
                              "queue_config": {"batch_send_deadline": "1s",
                                               "min_backoff": "100ms", "max_backoff": "1s"},
                              "metadata_config": {"send": False}}],
        }))
        web = port_in_range()
        process, log = processes.start("prometheus", [
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}"])
        wait_http(f"http://127.0.0.1:{web}/-/ready", process, log)
        worker_run.wait_healthy()
        metrics_topic = worker_run.topic("telemetry.metrics")

        # A healthy baseline arrives through Prometheus and the bridge...
        await _until_records(kafka_bootstrap, metrics_topic, 24, 90, log)
        deploy = {"type": "deploy", "deployment_id": f"dep-{service}", "service": service,
                  "version": "v2", "previous_version": "v1", "rollback_target": "v1",
                  "status": "started", "actor": "svc:ci-deployer", "ts": time.time() - 2}
        await producer.send_and_wait(worker_run.topic("deploys"), dumps(deploy),
                                     key=service.encode())
        # ... then the release goes bad.
        exporter.error_ratio = 0.4
        decided = await _until_decided(kafka_bootstrap, worker_run, deploy["deployment_id"])
    finally:
        exporter.close()
    assert decided["action"] in ("auto_rollback", "request_approval"), decided
    assert "THRESHOLD_BREACH" in decided["reasons"], decided

    # The same records, in native JSON, replayed: the same first decision.
    records = [orjson.loads(m.value) for m in await read_all(kafka_bootstrap, metrics_topic)]
    assert {r["source"] for r in records} == {"prometheus"}
    assert {r["name"] for r in records} == {"error_rate", "request_rate"}
    events = sorted([*records, deploy], key=lambda e: e["ts"])
    replayed = [orjson.loads(line) for line in replay_to_bytes(
        (orjson.dumps(e) for e in events), load_policy(FAST_POLICY),
        max_clock_skew_seconds=1e10)]
    first = next(r for r in replayed if r.get("type") == "decision"
                 and r.get("action") in ("auto_rollback", "request_approval"))
    assert (first["action"], first["reasons"], first["ts"]) == (
        decided["action"], decided["reasons"], decided["ts"])


async def _until_records(bootstrap: str, topic: str, count: int, timeout: float,
                         log: Path) -> None:
    messages = await consume(bootstrap, topic, count, timeout=timeout, committed=False)
    assert len(messages) >= count, log.read_text(errors="replace")[-3000:]


async def _until_decided(bootstrap: str, run: WorkerRun, deployment_id: str,
                         timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in await read_all(bootstrap, run.topic("rollguard.decisions")):
            record = orjson.loads(message.value)
            if record["deployment_id"] == deployment_id and record["action"] in (
                    "auto_rollback", "request_approval"):
                return dict(record)
        await _sleep(1.0)
    raise AssertionError("no decision for the bad deploy:\n" + run.log_tail())


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


async def test_alertmanager_webhook_reaches_the_alerts_topic(
    worker_run: WorkerRun, processes: Processes, kafka_bootstrap: str, tmp_path: Path,
) -> None:
    alertmanager = _binary("prometheus-alertmanager", "alertmanager")
    bridge = processes.bridge("alertmanager", worker_run)
    config = tmp_path / "alertmanager.yml"
    config.write_text(json.dumps({
        "route": {"receiver": "rollguard", "group_by": ["alertname", "service"],
                  "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "rollguard", "webhook_configs": [
            {"url": f"http://127.0.0.1:{bridge}/alerts", "send_resolved": True}]}],
    }))
    web = port_in_range()
    process, log = processes.start("alertmanager", [
        alertmanager, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
        f"--web.listen-address=127.0.0.1:{web}", "--cluster.listen-address="])
    wait_http(f"http://127.0.0.1:{web}/-/ready", process, log)

    labels = {"alertname": "HighErrorRate", "service": "checkout", "severity": "page"}
    started = time.time() - 5

    def post(alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{web}/api/v2/alerts", data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            assert answer.status == 200

    post([{"labels": labels, "startsAt": _rfc3339(started)},
          {"labels": {"alertname": "NoService", "severity": "warning"},
           "startsAt": _rfc3339(started)}])
    topic = worker_run.topic("telemetry.alerts")
    firing = await consume(kafka_bootstrap, topic, 1, timeout=60, committed=False)
    assert firing, log.read_text(errors="replace")[-3000:]
    ended = time.time() - 1
    post([{"labels": labels, "startsAt": _rfc3339(started), "endsAt": _rfc3339(ended)}])
    both = await consume(kafka_bootstrap, topic, 2, timeout=60, committed=False)
    records = [orjson.loads(m.value) for m in both]
    assert [(r["status"], r["service"], r["name"], r["severity"]) for r in records] == [
        ("firing", "checkout", "HighErrorRate", "critical"),
        ("resolved", "checkout", "HighErrorRate", "critical")]
    assert records[0]["alert_id"] == records[1]["alert_id"] and len(records[0]["alert_id"]) >= 8
    assert abs(records[0]["ts"] - started) < 1e-3 and abs(records[1]["ts"] - ended) < 1e-3
    assert all(m.key == b"checkout" for m in both)
    assert dict(both[0].headers)["ce_type"] == b"dev.rollguard.alert"
    # The alert without a service label was dead-lettered with the webhook's body.
    letters = await consume(kafka_bootstrap, worker_run.topic("rollguard.dead-letters"), 1,
                            timeout=10, committed=False)
    assert letters and "no 'service' label" in orjson.loads(letters[0].value)["error"]


@pytest.mark.parametrize(("headers", "body", "status", "error"), [
    # remote-write 1.0 is snappy protobuf: a JSON body is refused as a media type
    ({"Content-Type": "application/json"}, b"{}", 415, "Content-Type"),
    # snappy declared, but the body is not snappy
    ({"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"},
     b"\x00garbage", 400, "snappy"),
])
def test_remote_write_errors_are_answered_and_dead_lettered(
    worker_run: WorkerRun, processes: Processes, kafka_bootstrap: str,
    headers: dict[str, str], body: bytes, status: int, error: str,
) -> None:
    import asyncio
    import base64
    import urllib.error

    port = processes.bridge("prometheus", worker_run)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/write", data=body,
                                     headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback
    assert caught.value.code == status
    letters = asyncio.run(consume(kafka_bootstrap, worker_run.topic("rollguard.dead-letters"),
                                  1, timeout=20, committed=False))
    letter = orjson.loads(letters[0].value)
    assert error in letter["error"] and base64.b64decode(letter["value_b64"]) == body
    assert dict(letters[0].headers)["content-type"] == headers["Content-Type"].encode()
