"""End-to-end benchmark of ``rollguard worker`` on the local broker (issue 4), in one run.

(a) Throughput. A seeded fleet (``replay_throughput.fleet_lines``: SERVICES services, 3 metrics
    every 10 s, a deploy every 2 minutes of event time, one in five bad) is produced into a fresh
    prefixed topic set (``rollguard topics create``, key = service). Then, over the same filled
    topics: a plain aiokafka consumer (getmany, its own group) that decodes every metric message
    with ``streams.serde.decode`` exactly as the worker does — the baseline — and a
    ``rollguard worker`` subprocess with its own app id, whose
    ``rollguard_events_processed_total`` (events handed to the decision core, after the
    event-time merge) on /metrics is polled. Both rates are taken between 5 % and 95 % of the
    metric events, so start-up and the tail are excluded. The two run back to back ``--repeat``
    times (3; quick 1) and the median ratio is reported. Target: worker / plain >= 0.5.
    A reference, not a target: the plain loop plus ``Pipeline.process`` on each fetch sorted by
    event time (the decision core's own cost, without the worker's shell).
(b) Decision latency. A worker on a fresh prefix (ROLLGUARD_IDLE_ADVANCE_SECONDS=1) is fed,
    paced by the wall clock, LIVE_SERVICES services' telemetry with event time = now: 20 minutes
    of history published at once, then live samples every 10 s, and staggered bad deploys whose
    error rate jumps to 0.2. For each deployment, W is the ``ts`` of its ``auto_rollback``
    Decision (the window end); the watermark passes W when the first event with
    ts >= W + allowed_lateness is processed. Latency = arrival of the RollbackCommand at a
    read_committed consumer of rollback.commands (the worker's outputs are transactional)
    minus the wall-clock time that event was sent. The worker's own
    ``rollguard_window_close_lag_seconds`` histogram is read at the end.
    Target: p99 < 1 s. The policy is config/policy.yaml with the fleet guard raised (so that
    tens of simultaneous bad deploys each roll back) and commands are signed, as in production.

Each run uses fresh topics (prefix ``e2e-<uuid>.``) and app ids, deletes them at the end, and
prints the commit it measured. Figures and their analysis: docs/performance.md.

    scripts/kafka.sh start
    .venv/bin/python bench/e2e.py                   # 500k metric events / 1,000 services (~6 min)
    .venv/bin/python bench/e2e.py --quick           # 100k events, 10 deployments (~3.5 min)
    .venv/bin/python bench/e2e.py --only throughput --profile py-spy   # + a profiled pass
    .venv/bin/python bench/e2e.py --only latency --live-services 1000 --lead 90  # dense input
    .venv/bin/python bench/e2e.py --json out.json --keep /tmp/e2e      # figures; logs, profiles

``--profile py-spy`` needs py-spy (``pip install py-spy``; not a project dependency);
``--profile cprofile`` runs the worker under ``python -m cProfile`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from replay_throughput import METRICS, fleet_lines  # noqa: E402

from rollguard.streams.collector import GC_THRESHOLD  # noqa: E402
from rollguard.streams.pipeline import Pipeline  # noqa: E402
from rollguard.streams.serde import decode  # noqa: E402
from rollguard.streams.settings import Settings, TopicNames, load_policy  # noqa: E402
from rollguard.streams.signing import generate_key_pair  # noqa: E402

PYTHON = sys.executable
ROLLGUARD = str(Path(sys.executable).with_name("rollguard"))
TOPICS = TopicNames()


# ----------------------------------------------------------------------------------------------
# A worker subprocess, isolated by topic prefix and app id
# ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """``rollguard worker`` in its own directory (faust may write ``<app id>-data`` there)."""

    def __init__(self, bootstrap: str, prefix: str, workdir: Path, **env: str) -> None:
        self.prefix = prefix
        self.app_base = "rg-bench-" + prefix.strip(".")
        """Every app id of this run starts with it (the worker's lease and state topics are
        named after the app id)."""
        self.app_id = self.app_base
        self.workdir = workdir
        self.port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            ROLLGUARD_BOOTSTRAP_SERVERS=bootstrap,
            ROLLGUARD_TOPIC_PREFIX=prefix,
            ROLLGUARD_APP_ID=self.app_id,
            ROLLGUARD_PARTITIONS="4",
            ROLLGUARD_WEB_PORT=str(self.port),
            ROLLGUARD_LOG_LEVEL="INFO",
            ROLLGUARD_POLICY=str(REPO / "config" / "policy.yaml"),
            ROLLGUARD_APPROVERS=str(REPO / "config" / "approvers.yaml"),
            ROLLGUARD_CONFIG=str(REPO / "config" / "rollguard.yaml"),
        )
        self.env.update(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "worker.log"

    def topic(self, name: str) -> str:
        return self.prefix + str(getattr(TOPICS, name))

    def create_topics(self) -> None:
        done = subprocess.run([ROLLGUARD, "topics", "create"], env=self.env, cwd=self.workdir,
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise SystemExit(f"rollguard topics create failed: {done.stderr.strip()}")

    def start(self, app_id: str | None = None, argv: list[str] | None = None) -> None:
        if app_id:
            self.app_id = self.env["ROLLGUARD_APP_ID"] = app_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv or [ROLLGUARD, "worker"], cwd=self.workdir,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-30:]
            raise SystemExit("worker exited:\n" + "\n".join(tail))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` on /metrics whose labels include ``labels``."""
        total = 0.0
        for line in self._metrics_text().splitlines():
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name and all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def _metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return str(response.read().decode())

    def values(self, *names: str) -> dict[str, float]:
        """The unlabelled series ``names`` on /metrics (e.g. ``x_total``, ``h_sum``), one read."""
        out = dict.fromkeys(names, 0.0)
        for line in self._metrics_text().splitlines():
            head, _, value = line.rpartition(" ")
            if head in out:
                out[head] = float(value)
        return out

    def histogram(self, name: str) -> dict[str, float]:
        """A Prometheus histogram's cumulative bucket counts by ``le``, plus sum and count."""
        out: dict[str, float] = {}
        for line in self._metrics_text().splitlines():
            head, _, value = line.rpartition(" ")
            if head.startswith(name + "_bucket{"):
                out[head.partition('le="')[2].partition('"')[0]] = float(value)
            elif head in (name + "_sum", name + "_count"):
                out[head.rpartition("_")[2]] = float(value)
        return out

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/health"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            data: dict[str, Any] = orjson.loads(response.read())
        return data

    def wait_healthy(self, timeout: float = 90) -> None:
        """Until /health answers and the worker holds the lease (``role`` is ``leader``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self.health().get("role") == "leader":
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"worker not leading after {timeout:.0f} s (log: {self.log})")


async def delete_topics(bootstrap: str, *markers: str) -> None:
    """Delete every topic whose name starts with one of ``markers`` (this run's only)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(markers)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


Polls = list[tuple[float, float]]


def rate_between(samples: Polls, total: int) -> tuple[float, float, float]:
    """(events/s, t5, t95): the rate between 5 % and 95 % of ``total``, interpolating samples.

    >>> rate, t5, t95 = rate_between([(0.0, 0), (1.0, 50), (2.0, 100)], 100)
    >>> round(rate, 6), round(t5, 6), round(t95, 6)
    (50.0, 0.1, 1.9)
    """

    def crossing(level: float) -> float:
        for (t0, n0), (t1, n1) in zip(samples, samples[1:], strict=False):
            if n0 < level <= n1:
                return t0 + (t1 - t0) * (level - n0) / (n1 - n0)
        raise ValueError(f"count never crossed {level:.0f}")

    t5, t95 = crossing(0.05 * total), crossing(0.95 * total)
    return 0.9 * total / (t95 - t5), t5, t95


# ----------------------------------------------------------------------------------------------
# (a) Throughput
# ----------------------------------------------------------------------------------------------


async def produce_fleet(worker: Worker, metrics: int, services: int, seed: int) -> Counter[str]:
    """Produce fleet_lines until ``metrics`` metric events are written; counts per type."""
    topic_of = {"metric": worker.topic("metrics"), "deploy": worker.topic("deploys")}
    producer = AIOKafkaProducer(bootstrap_servers=worker.env["ROLLGUARD_BOOTSTRAP_SERVERS"],
                                linger_ms=20, max_batch_size=256 * 1024, acks=1)
    await producer.start()
    counts: Counter[str] = Counter()
    newest = 0.0
    try:
        for line in fleet_lines(10**12, services, seed):
            record = orjson.loads(line)
            kind = record["type"]
            if kind == "metric" and counts["metric"] >= metrics:
                break
            await producer.send(topic_of[kind], line, key=record["service"].encode())
            counts[kind] += 1
            newest = max(newest, float(record["ts"]))
        await producer.flush()
    finally:
        await producer.stop()
    if newest > time.time():
        raise SystemExit("fleet_lines' event times run past the wall clock: the worker would "
                         "dead-letter them (max_clock_skew_seconds); use fewer --events")
    return counts


async def plain_consume(worker: Worker, count: int, pipeline: Pipeline | None = None,
                        tag: str = "") -> tuple[Polls, float, int]:
    """Read and decode ``count`` metric messages with a bare aiokafka consumer.

    With ``pipeline``, also hand every record to the decision core, each fetched batch sorted
    by event time (no merger, no checkpoints): roughly the core's own cost on top of the
    baseline. In plain arrival order a fetch is partition after partition, each ~85 s of event
    time ahead of the last, and half of the events would be late and skip the window work.
    Returns the (t, n) marks, the CPU use (cores) over the whole read and the late events.
    """
    consumer = AIOKafkaConsumer(
        worker.topic("metrics"), bootstrap_servers=worker.env["ROLLGUARD_BOOTSTRAP_SERVERS"],
        group_id=f"{worker.prefix}plain-{pipeline is not None}{tag}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    settings = Settings()
    marks: list[tuple[float, float]] = [(time.perf_counter(), 0)]
    n = bad = 0
    thresholds = gc.get_threshold()
    if pipeline is not None:  # it keeps a fetch's records: tune the collector as the worker does
        gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
    cpu_start = time.process_time()
    try:
        deadline = time.monotonic() + 600
        while n < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            records: list[tuple[Any, bytes]] = []
            for messages in batch.values():
                for m in messages:
                    decoded = decode(
                        m.value, key=m.key, topic=m.topic, partition=m.partition,
                        offset=m.offset, expected_type="metric", reference_time=time.time(),
                        max_clock_skew_seconds=settings.max_clock_skew_seconds,
                        max_message_bytes=settings.max_message_bytes,
                    )
                    if decoded.record is None:
                        bad += 1
                    elif pipeline is not None:
                        records.append((decoded.record, m.value))
                n += len(messages)
            if pipeline is not None:
                records.sort(key=_event_time)
                for record, raw in records:
                    pipeline.process(record, raw)
            marks.append((time.perf_counter(), n))
    finally:
        gc.set_threshold(*thresholds)
        await consumer.stop()
    if n < count or bad:
        raise SystemExit(f"plain consumer read {n:,} of {count:,} ({bad} undecodable)")
    late = 0 if pipeline is None else sum(
        svc.late_total for svc in pipeline.state.services.values())
    return marks, (time.process_time() - cpu_start) / (marks[-1][0] - marks[0][0]), late


def _event_time(item: tuple[Any, bytes]) -> float:
    return float(item[0].ts)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pass(worker: Worker, count: int, app_id: str, argv: list[str] | None = None,
                profiler: list[str] | None = None) -> tuple[Polls, float, float]:
    """Run a worker over the filled topics until it has read ``count`` metric events.

    Returns the (t, count) polls, the seconds from process start to the first event, and the
    worker's CPU use (cores) between the polls around 5 % and 95 % of ``count``.
    """
    worker.start(app_id, argv)
    started = time.perf_counter()
    spy = None
    if profiler:
        assert worker.process is not None
        spy = subprocess.Popen([*profiler, "--pid", str(worker.process.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, float]] = []
    cpu: list[float] = []
    first = None
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            worker.check_alive()
            try:
                # Events handed to the decision core (not merely decoded: the merger may
                # still hold those). All types count; the few deploys are negligible.
                n = worker.metric("rollguard_events_processed_total")
            except OSError:
                n = 0.0
            now = time.perf_counter()
            samples.append((now, n))
            cpu.append(cpu_seconds(worker.process.pid))  # type: ignore[union-attr]
            if first is None and n > 0:
                first = now - started
            if n >= count:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"worker read {samples[-1][1]:,.0f} of {count:,} in 900 s")
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(timeout=60)
        worker.stop()
    lo = next(i for i, (_, n) in enumerate(samples) if n >= 0.05 * count)
    hi = next(i for i, (_, n) in enumerate(samples) if n >= 0.95 * count)
    cores = (cpu[hi] - cpu[lo]) / (samples[hi][0] - samples[lo][0]) if hi > lo else float("nan")
    return samples, first or 0.0, cores


def throughput(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    worker = Worker(args.bootstrap_servers, f"e2e-{uuid.uuid4().hex[:10]}.", workdir / "a")
    worker.workdir.mkdir(parents=True)
    worker.create_topics()
    try:
        t = time.perf_counter()
        counts = asyncio.run(produce_fleet(worker, args.events, args.services, args.seed))
        produce_s = time.perf_counter() - t
        total = counts["metric"]
        print(f"produced          {total:>12,} metric events, {counts['deploy']} deploys, "
              f"{args.services:,} services, 4 partitions ({sum(counts.values()) / produce_s:,.0f}"
              f" msg/s)", flush=True)

        policy = load_policy(worker.env["ROLLGUARD_POLICY"])
        cored, busy, late = asyncio.run(plain_consume(worker, total, Pipeline(policy)))
        core_rate, c5, c95 = rate_between(cored, total)
        print(f"plain + core      {core_rate:>12,.0f} events/s  (consume + decode + "
              f"Pipeline.process per fetch sorted by event time; {busy / core_rate * 1e6:.1f} us "
              f"CPU/event; {late / total:.1%} late; a reference)", flush=True)

        pairs: list[dict[str, float]] = []
        for i in range(args.repeat):
            # The baseline and the worker back to back, so that both see the same machine.
            plain, busy, _ = asyncio.run(plain_consume(worker, total, tag=str(i)))
            plain_rate, p5, p95 = rate_between(plain, total)
            print(f"plain aiokafka    {plain_rate:>12,.0f} events/s  (consume + decode; 5-95 %: "
                  f"{p95 - p5:.1f} s, {busy:.2f} cores, {busy / plain_rate * 1e6:.1f} us "
                  f"CPU/event)", flush=True)
            samples, startup, cores = worker_pass(worker, total, f"{worker.app_base}-{i}")
            worker_rate, w5, w95 = rate_between(samples, total)
            print(f"rollguard worker  {worker_rate:>12,.0f} events/s  (5-95 %: {w95 - w5:.1f} s, "
                  f"{cores:.2f} cores busy, {cores / worker_rate * 1e6:.1f} us CPU/event; "
                  f"first event {startup:.1f} s after start)", flush=True)
            ratio = worker_rate / plain_rate
            print(f"ratio             {ratio:>12.1%}  (target >= 50 %)", flush=True)
            pairs.append({"plain_rate": plain_rate, "plain_cores": busy,
                          "worker_rate": worker_rate, "worker_cores": cores, "ratio": ratio,
                          "startup_s": startup})
        ratios = sorted(pair["ratio"] for pair in pairs)
        ratio = statistics.median(ratios)
        if len(pairs) > 1:
            print(f"ratio, median     {ratio:>12.1%}  of {len(pairs)} pairs "
                  f"({ratios[0]:.1%}-{ratios[-1]:.1%}; target >= 50 %)", flush=True)
        result: dict[str, Any] = {
            "events": total, "plain_core_rate": core_rate, "plain_core_late": late,
            "pairs": pairs, "ratio": ratio,
            "plain_rate": statistics.median(pair["plain_rate"] for pair in pairs),
            "worker_rate": statistics.median(pair["worker_rate"] for pair in pairs),
        }
        if args.profile != "none":
            result["profile"] = profile_pass(args, worker, total, workdir)
        return result
    finally:
        worker.stop()
        asyncio.run(delete_topics(args.bootstrap_servers, worker.prefix, worker.app_base))


def profile_pass(args: argparse.Namespace, worker: Worker, total: int, workdir: Path) -> str:
    """One more worker pass over the same topics, profiled; prints and returns the top costs."""
    app_id = worker.app_id + "-prof"
    if args.profile == "cprofile":
        out = workdir / "worker.prof"
        argv = [PYTHON, "-m", "cProfile", "-o", str(out), "-m", "rollguard.streams.cli", "worker"]
        samples, *_ = worker_pass(worker, total, app_id, argv)
        import pstats

        report = workdir / "profile.txt"
        with report.open("w") as fh:
            pstats.Stats(str(out), stream=fh).sort_stats("tottime").print_stats(30)
    else:
        out = workdir / "worker.pyspy.txt"
        spy = [args.py_spy, "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", str(out)]
        samples, *_ = worker_pass(worker, total, app_id, profiler=spy)
        report = workdir / "profile.txt"
        report.write_text(summarise_py_spy(out))
    rate, *_ = rate_between(samples, total)
    text = f"profiled pass: {rate:,.0f} events/s ({args.profile})\n" + report.read_text()
    print(text, flush=True)
    return text


def summarise_py_spy(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function, and per area, from py-spy's raw stacks;
    then the same inside the engine's loop only (start-up, imports and shutdown excluded)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    in_loop: Counter[str] = Counter()
    loop_areas: Counter[str] = Counter()
    total = looped = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f.rsplit(":", 1)[0].replace(" (", " ") for f in stack.split(";")]
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
        area = _area(stack.split(";"))
        areas[area] += n
        loop = [i for i, f in enumerate(frames) if f.startswith(LOOP_FRAME)]
        if loop:
            looped += n
            loop_areas[area] += n
            for name in set(frames[loop[-1] + 1:]):
                in_loop[name] += n
    lines = [f"{total} samples; by area of the innermost project/library frame:"]
    lines += [f"  {n / total:6.1%}  {a}" for a, n in areas.most_common()]
    lines.append("self time (top functions):")
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive time (top functions):")
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    if looped:
        lines.append(f"inside {LOOP_FRAME} ({looped / total:.1%} of the samples), by area:")
        lines += [f"  {n / looped:6.1%}  {a}" for a, n in loop_areas.most_common()]
        lines.append(f"inside {LOOP_FRAME}, inclusive (top functions):")
        lines += [f"  {n / looped:6.1%}  {f}" for f, n in in_loop.most_common(top)]
    return "\n".join(lines) + "\n"


LOOP_FRAME = "_Leading.loop"


# py-spy names files relative to their sys.path entry: the first component is the package.
_AREAS = {"models": "models (decision core)", "pydantic": "pydantic", "pydantic_core": "pydantic",
          "prometheus_client": "prometheus_client", "faust": "faust", "mode": "mode (faust)",
          "aiokafka": "aiokafka", "kafka": "aiokafka", "asyncio": "asyncio",
          "selectors.py": "asyncio", "orjson": "orjson"}


def _area(frames: list[str]) -> str:
    """The package of the innermost frame that is ours or a library's we can name."""
    for frame in reversed(frames):
        path = frame.rpartition("(")[2]
        top = path.split("/", 1)[0]
        if top == "streams":
            return "streams." + path.split("/", 1)[1].split(".")[0] + " (shell)"
        if top in _AREAS:
            return _AREAS[top]
    return "other"


# ----------------------------------------------------------------------------------------------
# (b) Decision latency
# ----------------------------------------------------------------------------------------------


def bench_policy(path: Path, services: int) -> None:
    """config/policy.yaml with the fleet guard raised above the run's simultaneous rollbacks."""
    data = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())
    data["fleet"].update(fleet_anomaly_limit=services + 1,
                         max_auto_rollbacks_per_hour=services + 1)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def timeline(start: float, names: list[str], deploy_at: dict[str, float], healed: set[str],
             seed: int) -> Iterator[tuple[float, str, str, bytes]]:
    """Events in event-time order: (ts, topic name, service, value).

    Every 10 s slot, each service scrapes its 3 metrics once, at one of N evenly spaced
    offsets, shuffled per slot: every 30 s window gets its 3 samples per metric, the input is
    never quiet for 10/N s or more (the idle clock does not close windows), and which
    partitions carry the events around a window close varies from close to close. Deploys at
    ``deploy_at``; a deployed service's error rate is 0.2 until its rollback command arrives
    (``healed``).
    """
    rng = random.Random(seed)
    spacing = 10.0 / len(names)
    level = {s: [base * rng.uniform(0.6, 1.4) for _, base in METRICS] for s in names}
    deploys = sorted((ts, s) for s, ts in deploy_at.items())
    tick = 0
    while True:
        order = rng.sample(names, len(names))
        for i, s in enumerate(order):
            ts = round(start + tick * 10.0 + (i + 0.5) * spacing, 3)
            while deploys and deploys[0][0] <= ts:
                when, svc = deploys.pop(0)
                yield when, "deploys", svc, orjson.dumps({
                    "type": "deploy", "deployment_id": f"dep-{svc}", "service": svc,
                    "version": "v2.0.0", "previous_version": "v1.9.3",
                    "rollback_target": "v1.9.3", "status": "started",
                    "actor": "svc:ci-deployer", "ts": when, "environment": "prod"})
            broken = s in deploy_at and ts >= deploy_at[s] and s not in healed
            for m, (name, _) in enumerate(METRICS):
                value = level[s][m] * (1.0 + rng.gauss(0.0, 0.05))
                if broken and name == "error_rate":
                    value = 0.2 * (1.0 + rng.gauss(0.0, 0.05))
                yield ts, "metrics", s, orjson.dumps({
                    "type": "metric", "service": s, "name": name, "value": round(value, 6),
                    "ts": ts, "source": "prometheus", "instance": "pod-1"})
        tick += 1


async def collect(worker: Worker, name: str, out: dict[str, Any], stop: asyncio.Event) -> None:
    """Record the arrival wall time and value of every record on a topic, by deployment id."""
    consumer = AIOKafkaConsumer(worker.topic(name),
                                bootstrap_servers=worker.env["ROLLGUARD_BOOTSTRAP_SERVERS"],
                                group_id=None, auto_offset_reset="earliest",
                                isolation_level="read_committed")  # outputs are transactional
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            arrived = time.time()
            for messages in batch.values():
                for m in messages:
                    record = orjson.loads(m.value)
                    out.setdefault(record.get("deployment_id"), []).append((arrived, record))
    finally:
        await consumer.stop()


async def live_run(args: argparse.Namespace, worker: Worker) -> dict[str, Any]:
    policy = load_policy(worker.env["ROLLGUARD_POLICY"])
    names = [f"svc-{i:04d}" for i in range(args.live_services)]
    sp = policy.for_service(names[0])
    width, lateness = sp.window_seconds, sp.allowed_lateness_seconds
    now = time.time()
    first = now + args.lead
    gap = args.spread / max(1, args.deployments - 1)
    deploy_at = {s: round(first + i * gap, 3) for i, s in enumerate(names[:args.deployments])}
    # The decisive window: the consecutive_breach_windows-th whole window after the deploy.
    last_w = max(-(-ts // width) * width for ts in deploy_at.values())
    end = last_w + sp.consecutive_breach_windows * width + lateness + 5.0

    commands: dict[str, Any] = {}
    decisions: dict[str, Any] = {}
    stop = asyncio.Event()
    readers = [asyncio.create_task(collect(worker, "commands", commands, stop)),
               asyncio.create_task(collect(worker, "decisions", decisions, stop))]
    producer = AIOKafkaProducer(bootstrap_servers=worker.env["ROLLGUARD_BOOTSTRAP_SERVERS"])
    await producer.start()
    sent_ts: list[float] = []
    sent_at: list[float] = []
    late_deploys = 0
    close_lag_before: dict[str, float] | None = None
    healed: set[str] = set()
    history_start = (now - args.history) // 10.0 * 10.0
    try:
        for ts, topic, svc, value in timeline(history_start, names, deploy_at, healed, args.seed):
            if ts > end:
                break
            delay = ts - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
                healed.update(d.removeprefix("dep-") for d in commands)
            wall = time.time()
            if topic == "deploys" and wall - ts > 0.5:
                late_deploys += 1
            if topic == "deploys" and close_lag_before is None:
                # The history has been read by now: window closes from here on are live ones.
                close_lag_before = await asyncio.to_thread(worker.histogram, CLOSE_LAG)
            await producer.send(worker.topic(topic), value, key=svc.encode())
            sent_ts.append(ts)
            sent_at.append(wall)
        deadline = time.time() + 15
        while len(commands) < args.deployments and time.time() < deadline:
            await asyncio.sleep(0.2)
        close_lag_after = await asyncio.to_thread(worker.histogram, CLOSE_LAG)
    finally:
        await producer.stop()
        stop.set()
        await asyncio.gather(*readers)

    latencies: list[float] = []
    by_close: dict[float, list[float]] = {}
    idle_first = missing = 0
    for dep_id in (f"dep-{s}" for s in deploy_at):
        rollbacks = [r for _, r in decisions.get(dep_id, []) if r["action"] == "auto_rollback"]
        if not rollbacks or dep_id not in commands:
            missing += 1
            continue
        w = datetime.fromisoformat(rollbacks[0]["ts"]).timestamp()
        first_after = bisect.bisect_left(sent_ts, w + lateness)
        if first_after == len(sent_ts):  # nothing sent that late: the idle clock closed it
            idle_first += 1
            continue
        latency = commands[dep_id][0][0] - sent_at[first_after]
        idle_first += latency < 0
        latencies.append(latency)
        by_close.setdefault(w, []).append(latency)
    # The live part (event time from 30 s before the first deploy on, or from the start of the
    # run if sooner): how fast it was sent (wall clock) and how far behind its event time.
    since = max(now, first - 30.0)
    live = [(at - ts, at) for ts, at in zip(sent_ts, sent_at, strict=True) if ts >= since]
    behind = sorted(b for b, _ in live)
    return {"latencies": latencies, "closes": len(by_close), "missing": missing,
            "live_events": len(live),
            "live_rate": len(live) / max(1e-9, live[-1][1] - live[0][1]) if live else 0.0,
            "send_behind_p50": percentile(behind, 50) if behind else 0.0,
            "send_behind_p99": percentile(behind, 99) if behind else 0.0,
            "per_close": [(w, min(v), max(v), len(v)) for w, v in sorted(by_close.items())],
            "idle_first": idle_first, "late_deploys": late_deploys,
            "events_sent": len(sent_ts), "actions": Counter(
                r["action"] for rs in decisions.values() for _, r in rs),
            "close_lag": {k: v - (close_lag_before or {}).get(k, 0.0)
                          for k, v in close_lag_after.items()}}


CLOSE_LAG = "rollguard_window_close_lag_seconds"


def histogram_summary(hist: dict[str, float]) -> str:
    """Count, mean and the bucket bounds under which 50 % and 99 % of observations fall."""
    count = hist.get("count", 0.0)
    if not count:
        return "no observations"
    buckets = sorted((float(le), n) for le, n in hist.items() if le not in ("sum", "count"))

    def bound(q: float) -> str:
        le = next(le for le, n in buckets if n >= q * count)
        return f"<= {le * 1e3:,.0f} ms" if le != float("inf") else "> last bucket"

    return (f"{count:.0f} closes, mean {hist['sum'] / count * 1e3:,.0f} ms, "
            f"p50 {bound(0.5)}, p99 {bound(0.99)}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-len(ordered) * q // 100)) - 1))]


def latency(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    prefix = f"e2e-{uuid.uuid4().hex[:10]}."
    home = workdir / "b"
    home.mkdir(parents=True)
    bench_policy(home / "policy.yaml", args.live_services)
    private, _ = generate_key_pair(home / "keys", "gate")
    worker = Worker(args.bootstrap_servers, prefix, home, ROLLGUARD_IDLE_ADVANCE_SECONDS="1",
                    ROLLGUARD_POLICY=str(home / "policy.yaml"), ROLLGUARD_SIGNING_KEY=str(private))
    worker.create_topics()
    try:
        worker.start()
        worker.wait_healthy()
        result = asyncio.run(live_run(args, worker))
        worker.check_alive()
    finally:
        worker.stop()
        asyncio.run(delete_topics(args.bootstrap_servers, prefix, worker.app_base))
    values = result["latencies"]
    if not values:
        raise SystemExit(f"no rollback command arrived (log: {worker.log}); {result}")
    result.update(p50=percentile(values, 50), p99=percentile(values, 99), max=max(values),
                  mean=statistics.fmean(values))
    print(f"deployments       {len(values):>12} rolled back over {result['closes']} window "
          f"closes ({result['missing']} missing; {result['events_sent']:,} events sent, "
          f"{args.live_services} services, {args.live_services * 0.3:.1f} events/s live)")
    for w, low, high, n in result["per_close"]:
        print(f"  window end {time.strftime('%H:%M:%S', time.gmtime(w))}Z  {n:>3} commands, "
              f"{low * 1e3:,.0f}-{high * 1e3:,.0f} ms")
    print(f"decision latency  p50 {result['p50'] * 1e3:,.0f} ms  p99 {result['p99'] * 1e3:,.0f} ms"
          f"  max {result['max'] * 1e3:,.0f} ms  (target p99 < 1 s)")
    print(f"window-close lag  {histogram_summary(result['close_lag'])}  (the worker's histogram, "
          "live phase: watermark passing end + lateness -> window closed)")
    if result["idle_first"] or result["late_deploys"]:
        print(f"note              {result['idle_first']} closed by the idle clock first, "
              f"{result['late_deploys']} deploys sent > 0.5 s late")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers",
                        default=os.environ.get("ROLLGUARD_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--quick", action="store_true", help="100k events, 10 deployments")
    parser.add_argument("--events", type=int, help="metric events for (a) [500,000]")
    parser.add_argument("--services", type=int, default=1_000, help="services in (a)")
    parser.add_argument("--live-services", type=int, help="services in (b) [48; quick 20]")
    parser.add_argument("--deployments", type=int, help="bad deployments in (b) [32; quick 10]")
    parser.add_argument("--spread", type=float, help="deploys spread, s [150; quick 60]")
    parser.add_argument("--lead", type=float, default=30.0, help="live seconds before deploys")
    parser.add_argument("--history", type=float, default=1200.0, help="history seconds in (b)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int,
                        help="(plain, worker) pairs in (a), median reported [3; quick 1]")
    parser.add_argument("--only", choices=("throughput", "latency"))
    parser.add_argument("--profile", choices=("none", "py-spy", "cprofile"), default="none",
                        help="add a profiled worker pass to (a) and print its top costs")
    parser.add_argument("--py-spy", default="py-spy", help="py-spy executable")
    parser.add_argument("--keep", type=Path, help="keep logs and profiles in this directory")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    quick = args.quick
    args.events = args.events or (100_000 if quick else 500_000)
    args.repeat = args.repeat or (1 if quick else 3)
    args.live_services = args.live_services or (20 if quick else 48)
    args.deployments = args.deployments or (10 if quick else 32)
    args.spread = args.spread if args.spread is not None else (60.0 if quick else 150.0)
    if args.deployments > args.live_services:
        parser.error("--deployments cannot exceed --live-services")

    began = time.perf_counter()
    figures: dict[str, Any] = {"tree": tree_state(), "cpus": os.cpu_count(),
                               "load_before": os.getloadavg()[0], "args": vars(args)}
    print(f"rollguard e2e bench: {figures['cpus']} CPUs, load {figures['load_before']:.2f}, "
          f"broker {args.bootstrap_servers}, tree {figures['tree']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rollguard-e2e-") as tmp:
        workdir = Path(tmp) if args.keep is None else args.keep / time.strftime("%H%M%S")
        if args.only != "latency":
            figures["throughput"] = throughput(args, workdir)
        if args.only != "throughput":
            figures["latency"] = latency(args, workdir)
    figures["seconds"] = time.perf_counter() - began
    print(f"total             {figures['seconds']:>12.0f} s (load after {os.getloadavg()[0]:.2f})")
    if args.json:
        args.json.write_text(orjson.dumps(figures, default=str,
                                          option=orjson.OPT_INDENT_2).decode())
    return 0


def tree_state() -> str:
    """The commit measured, and whether the code the worker runs differs from it."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True,
                              check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "streams", "models", "config")
    return git("rev-parse", "--short", "HEAD") + (" (+ uncommitted streams/models/config)"
                                                 if dirty else "")


if __name__ == "__main__":
    raise SystemExit(main())
