"""The worker mode on the local broker (issue 14): slots over workers, against one leader.

(a) Throughput. A seeded fleet (``replay_throughput.fleet_lines``: SERVICES services, 3 metrics
    every 10 s, a deploy every 2 minutes of event time, one in five bad) is produced once into
    a fresh prefixed topic set with 6 partitions (key = service). Then, over the same filled
    topics, each pass with its own app id: the single leader (``ROLLGUARD_SCALE_OUT_SLOTS=1``,
    the baseline), ``--slots`` slots on one worker, and ``--slots`` slots on ``--workers``
    workers started together. The rate is ``rollguard_events_processed_total`` summed over
    the pass's workers, from 5 % of the events (or, with several workers, from the moment every
    worker leads a slot, if later) to 95 %; CPU per event is per worker (its /proc CPU time
    over the same interval). Reported as ratios to the single leader of the
    same run. A slot restarted by a rebalance processes its events since its last checkpoint
    again; they count twice (the workers start together, so this is at most a second's worth).
(b) Decision latency, live: ``e2e.live_run`` (bench/e2e.py, "Decision latency") against the
    single leader and against ``--slots`` slots on ``--workers`` workers, one after the other.
    Every auto rollback is a ruling with a trigger, so in the worker mode it waits at the fleet
    barrier for the other slots' reports; the workers' ``rollguard_fleet_barrier_wait_seconds``
    histograms are read at the end.

On this 2-core machine the broker, the producer of (b) and every worker share the cores: an
aggregate rate above one worker's is bounded by the cores, not by the protocol.

    scripts/kafka.sh start
    .venv/bin/python bench/scale_kafka.py                        # 2,000 services, 600k events
    .venv/bin/python bench/scale_kafka.py --services 10000 --events 1000000
    .venv/bin/python bench/scale_kafka.py --only latency --live-services 48 --deployments 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from e2e import (  # noqa: E402
    Worker,
    bench_policy,
    cpu_seconds,
    delete_topics,
    histogram_summary,
    live_run,
    percentile,
    produce_fleet,
    tree_state,
)

from rollguard.streams.signing import generate_key_pair  # noqa: E402

PARTITIONS = "6"
WAITS = "rollguard_fleet_barrier_wait_seconds"


def crew(args: argparse.Namespace, prefix: str, home: Path, count: int, **env: str,
         ) -> list[Worker]:
    """``count`` workers of one prefix (one app id is given at start), not started."""
    return [Worker(args.bootstrap_servers, prefix, home / f"w{i}", ROLLGUARD_PARTITIONS=PARTITIONS,
                   **env) for i in range(count)]


def processed(workers: list[Worker]) -> float:
    total = 0.0
    for worker in workers:
        try:
            total += worker.metric("rollguard_events_processed_total")
        except OSError:
            pass
    return total


def _leads(worker: Worker) -> bool:
    try:
        return worker.health().get("role") == "leader"
    except (OSError, ValueError):
        return False


def run_pass(workers: list[Worker], count: int, app_id: str) -> dict[str, Any]:
    """Start ``workers`` together on ``app_id``; until they have processed ``count`` events."""
    for worker in workers:
        worker.workdir.mkdir(parents=True, exist_ok=True)
        worker.start(app_id)
    started = time.perf_counter()
    samples: list[tuple[float, float]] = []
    cpu: list[list[float]] = []
    settled: int | None = None  # the first sample at which every worker leads a slot
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            for worker in workers:
                worker.check_alive()
            n = processed(workers)
            samples.append((time.perf_counter(), n))
            cpu.append([cpu_seconds(w.process.pid) for w in workers])  # type: ignore[union-attr]
            if settled is None and (len(workers) == 1 or all(_leads(w) for w in workers)):
                settled = len(samples) - 1
            if n >= count:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"{app_id}: {samples[-1][1]:,.0f} of {count:,} in 900 s")
    finally:
        for worker in workers:
            worker.stop()
    lo = next(i for i, (_, n) in enumerate(samples) if n >= 0.05 * count)
    lo = max(lo, settled if settled is not None else len(samples))
    hi = next(i for i, (_, n) in enumerate(samples) if n >= 0.95 * count)
    if hi <= lo:
        raise SystemExit(f"{app_id}: the group settled after 95 % of the events; use more")
    span = samples[hi][0] - samples[lo][0]
    rate = (samples[hi][1] - samples[lo][1]) / span
    cores = [(cpu[hi][i] - cpu[lo][i]) / span for i in range(len(workers))]
    return {"rate": rate, "seconds": span, "from": samples[lo][1] / count, "cores": cores,
            "us_per_event": [c / rate * 1e6 for c in cores],
            "startup_s": next((t for t, n in samples if n > 0), started) - started}


def throughput(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    prefix = f"e2e-{uuid.uuid4().hex[:10]}."
    single = crew(args, prefix, workdir / "single", 1)
    one = crew(args, prefix, workdir / "one", 1, ROLLGUARD_SCALE_OUT_SLOTS=str(args.slots))
    many = crew(args, prefix, workdir / "many", args.workers,
                ROLLGUARD_SCALE_OUT_SLOTS=str(args.slots))
    single[0].workdir.mkdir(parents=True)
    single[0].create_topics()
    base = single[0].app_base
    try:
        counts = asyncio.run(produce_fleet(single[0], args.events, args.services, args.seed))
        total = counts["metric"]
        print(f"produced          {total:>10,} metric events, {counts['deploy']} deploys, "
              f"{args.services:,} services, {PARTITIONS} partitions", flush=True)
        out: dict[str, Any] = {"events": total, "passes": []}
        for i in range(args.repeat):
            lead = run_pass(single, total, f"{base}-single-{i}")
            slots1 = run_pass(one, total, f"{base}-one-{i}")
            slotsn = run_pass(many, total, f"{base}-many-{i}")
            row = {"single": lead, "one_worker": slots1, "workers": slotsn,
                   "one_ratio": slots1["rate"] / lead["rate"],
                   "workers_ratio": slotsn["rate"] / lead["rate"],
                   "workers_over_one": slotsn["rate"] / slots1["rate"]}
            out["passes"].append(row)
            for name, r in (("single leader", lead), (f"{args.slots} slots, 1 worker", slots1),
                            (f"{args.slots} slots, {args.workers} workers", slotsn)):
                per = ", ".join(f"{c:.2f} cores {u:.1f} us/event"
                                for c, u in zip(r["cores"], r["us_per_event"], strict=True))
                print(f"{name:<22} {r['rate']:>9,.0f} events/s  ({per}; {r['from']:.0%}-95 %: "
                      f"{r['seconds']:.1f} s)", flush=True)
            print(f"ratios                 {args.slots} slots/1 worker {row['one_ratio']:.2f}x, "
                  f"{args.workers} workers {row['workers_ratio']:.2f}x of the single leader; "
                  f"{args.workers} workers / 1 worker {row['workers_over_one']:.2f}x", flush=True)
        out["workers_ratio"] = statistics.median(p["workers_ratio"] for p in out["passes"])
        return out
    finally:
        for worker in (*single, *one, *many):
            worker.stop()
        asyncio.run(delete_topics(args.bootstrap_servers, prefix, base))


def latency_pass(args: argparse.Namespace, home: Path, workers: int, slots: int,
                 ) -> dict[str, Any]:
    prefix = f"e2e-{uuid.uuid4().hex[:10]}."
    home.mkdir(parents=True)
    bench_policy(home / "policy.yaml", args.live_services)
    private, _ = generate_key_pair(home / "keys", "gate")
    team = crew(args, prefix, home, workers, ROLLGUARD_IDLE_ADVANCE_SECONDS="1",
                ROLLGUARD_POLICY=str(home / "policy.yaml"), ROLLGUARD_SIGNING_KEY=str(private),
                ROLLGUARD_SCALE_OUT_SLOTS=str(slots))
    team[0].workdir.mkdir(parents=True)
    team[0].create_topics()
    try:
        for worker in team:
            worker.start()
        for worker in team:
            worker.wait_healthy()
        deadline = time.monotonic() + 60
        while slots > 1 and time.monotonic() < deadline:  # every worker leads its share
            held = [len(w.health().get("slots", [])) for w in team]
            if sum(held) == slots and all(held):
                break
            time.sleep(0.5)
        result = asyncio.run(live_run(args, team[0]))
        waits: dict[str, float] = {}
        for worker in team:
            worker.check_alive()
            for key, value in worker.histogram(WAITS).items():
                waits[key] = waits.get(key, 0.0) + value
        result["barrier_waits"] = waits
    finally:
        for worker in team:
            worker.stop()
        asyncio.run(delete_topics(args.bootstrap_servers, prefix, team[0].app_base))
    values = result["latencies"]
    if not values:
        raise SystemExit(f"no rollback command arrived ({home}); {result}")
    result.update(p50=percentile(values, 50), p99=percentile(values, 99), max=max(values))
    name = "single leader" if slots == 1 else f"{slots} slots, {workers} workers"
    print(f"{name:<22} {len(values)} rollbacks ({result['missing']} missing): decision latency "
          f"p50 {result['p50'] * 1e3:,.0f} ms, p99 {result['p99'] * 1e3:,.0f} ms, max "
          f"{result['max'] * 1e3:,.0f} ms", flush=True)
    if slots > 1:
        print(f"{'':<22} barrier waits: {histogram_summary(waits).replace('closes', 'waits')}",
              flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers",
                        default=os.environ.get("ROLLGUARD_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--events", type=int, default=600_000, help="metric events in (a)")
    parser.add_argument("--services", type=int, default=2_000, help="services in (a)")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="passes of (a)")
    parser.add_argument("--live-services", type=int, default=20, help="services in (b)")
    parser.add_argument("--deployments", type=int, default=10, help="bad deployments in (b)")
    parser.add_argument("--spread", type=float, default=60.0, help="deploys spread in (b), s")
    parser.add_argument("--lead", type=float, default=30.0, help="live seconds before deploys")
    parser.add_argument("--history", type=float, default=1200.0, help="history seconds in (b)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", choices=("throughput", "latency"))
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"rollguard worker-mode bench: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"broker {args.bootstrap_servers}, tree {tree_state()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rollguard-scale-") as tmp:
        if args.only != "latency":
            throughput(args, Path(tmp) / "a")
        if args.only != "throughput":
            latency_pass(args, Path(tmp) / "b1", 1, 1)
            latency_pass(args, Path(tmp) / "b2", args.workers, args.slots)
    print(f"total             {time.perf_counter() - began:.0f} s "
          f"(load after {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
