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

    Each worker's CPU per event it processed and the share of the run its checkpoints took
    (``rollguard_checkpoint_seconds``) are read over the live run as well.
(c) State, checkpoints and restore, per slot, with (a). Over each worker's time leading (from
    its first event processed to the end of the pass): the share of the wall time it had a
    checkpoint in flight (``rollguard_checkpoint_seconds``:
    from taking the state to the committed transaction; the loop reads on meanwhile) and the
    share it spent taking the state (``rollguard_checkpoint_encode_seconds``, the loop waits).
    After the single leader's pass and the ``--workers`` workers' pass, the worker of the last
    slot is killed (SIGKILL) and the state changelog read from the broker, per partition (=
    slot): records and bytes (uncompacted history included: what a restore reads), keys, and
    the bytes of the latest record per key (the state itself). A new worker is then started on
    the same app id; reported: the time from the kill to every slot led again (the session
    timeout of the killed member is in it), and each restore as the workers log it (services,
    seconds: the changelog read, checked and decoded), the survivors' slots included (the
    rebalance restarts them too). Once every worker has stopped cleanly (SIGTERM: a last
    checkpoint each), the changelog is read again: the state at the end of the input.

On this 2-core machine the broker, the producer of (b) and every worker share the cores: an
aggregate rate above one worker's is bounded by the cores, not by the protocol.

    scripts/kafka.sh start
    .venv/bin/python bench/scale_kafka.py                        # 2,000 services, 600k events
    .venv/bin/python bench/scale_kafka.py --services 10000 --events 1000000
    .venv/bin/python bench/scale_kafka.py --only latency --live-services 48 --deployments 16
    .venv/bin/python bench/scale_kafka.py --only latency --live-services 10000 \
        --deployments 20 --history 400 --lead 150         # the dense live fleet
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

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
PROCESSED = "rollguard_events_processed_total"
CHECKPOINT = "rollguard_checkpoint_seconds"
ENCODE = "rollguard_checkpoint_encode_seconds"
SERIES = (PROCESSED, f"{CHECKPOINT}_sum", f"{CHECKPOINT}_count", f"{ENCODE}_sum")
RESTORED = re.compile(r"restored (\d+) services from the changelog(?: \(slot (\d+)\))? in "
                      r"([\d.]+) s")


def crew(args: argparse.Namespace, prefix: str, home: Path, count: int, **env: str,
         ) -> list[Worker]:
    """``count`` workers of one prefix (one app id is given at start), not started."""
    return [Worker(args.bootstrap_servers, prefix, home / f"w{i}", ROLLGUARD_PARTITIONS=PARTITIONS,
                   **env) for i in range(count)]


def scrape(workers: list[Worker]) -> list[dict[str, float]]:
    """``SERIES`` of each worker (zeros while its web server is not up yet)."""
    out = []
    for worker in workers:
        try:
            out.append(worker.values(*SERIES))
        except OSError:
            out.append(dict.fromkeys(SERIES, 0.0))
    return out


def restores(text: str) -> list[dict[str, Any]]:
    """The restores a worker logged: slot (None for the single leader), services, seconds.

    >>> restores('{"message": "restored 5012 services from the changelog (slot 1) in 6.20 s"}')
    [{'slot': 1, 'services': 5012, 'seconds': 6.2}]
    >>> restores("restored 0 services from the changelog in 0.01 s")
    [{'slot': None, 'services': 0, 'seconds': 0.01}]
    """
    return [{"slot": int(slot) if slot else None, "services": int(services),
             "seconds": float(seconds)}
            for services, slot, seconds in RESTORED.findall(text)]


def load() -> str:
    """The 1, 5 and 15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


async def changelog(bootstrap: str, topic: str, partitions: int) -> list[dict[str, Any]]:
    """Per partition of the state changelog (committed records, as a restore reads them):
    records and bytes (keys + values), distinct keys, and the latest record per key."""
    out = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed",
                                max_partition_fetch_bytes=32 * 1024 * 1024)
    await consumer.start()
    try:
        for partition in range(partitions):
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            records = size = 0
            latest: dict[bytes, int] = {}
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for m in batch.get(tp, ()):
                    records += 1
                    length = len(m.key or b"") + len(m.value or b"")
                    size += length
                    latest[m.key or b""] = length if m.value is not None else 0
            services = {k: v for k, v in latest.items() if k.startswith(b"svc:") and v}
            out.append({"partition": partition, "records": records, "bytes": size,
                        "keys": len(latest), "state_bytes": sum(latest.values()),
                        "services": len(services), "service_bytes": sum(services.values()),
                        "other": {k.decode(errors="replace"): v for k, v in latest.items()
                                  if not k.startswith(b"svc:")}})
    finally:
        await consumer.stop()
    return out


def fail_over(args: argparse.Namespace, workers: list[Worker], fresh: Worker, slots: int,
              ) -> dict[str, Any]:
    """Kill -9 the worker of the last slot; read the changelog; start ``fresh`` in its place
    and time it until every slot is led again. The other workers are left running."""
    victim = workers[-1]
    survivors = workers[:-1]
    held = victim.health().get("slots", [0])
    marks = [w.log.stat().st_size for w in survivors]
    assert victim.process is not None
    victim.process.kill()
    victim.process.wait()
    killed = time.perf_counter()
    state = asyncio.run(changelog(args.bootstrap_servers, f"{victim.app_id}-state-changelog",
                                  slots))
    read = time.perf_counter() - killed
    fresh.start(victim.app_id)
    started = time.perf_counter()
    deadline = time.monotonic() + 300
    team = [*survivors, fresh]
    while time.monotonic() < deadline:
        for worker in team:
            worker.check_alive()
        try:
            if slots == 1:
                led = fresh.health().get("role") == "leader"
            else:
                led = sum(len(w.health().get("slots", [])) for w in team) == slots
        except (OSError, ValueError):
            led = False
        if led:
            break
        time.sleep(0.1)
    else:
        raise SystemExit(f"slots not led again 300 s after the kill (log: {fresh.log})")
    done = time.perf_counter()
    logged = restores(fresh.log.read_text(errors="replace"))
    for worker, mark in zip(survivors, marks, strict=True):
        with open(worker.log, "rb") as f:
            f.seek(mark)
            logged += [dict(r, survivor=True) for r in restores(f.read().decode(errors="replace"))]
    return {"killed_slots": held, "changelog": state, "start_to_led_s": done - started,
            "kill_to_led_s": done - killed - read, "restores": logged}


def print_final(name: str, parts: list[dict[str, Any]]) -> None:
    """The changelog after every worker stopped cleanly (each committed a last checkpoint)."""
    for part in parts:
        per = part["service_bytes"] / max(1, part["services"])
        other = ", ".join(f"{k} {v / 1024:,.0f} KiB" for k, v in part["other"].items())
        print(f"{name:<22} after a clean stop, changelog partition {part['partition']}: "
              f"{part['records']:,} records, {part['bytes'] / 2**20:,.1f} MiB; state "
              f"{part['state_bytes'] / 2**20:,.1f} MiB: {part['services']:,} services "
              f"{part['service_bytes'] / 2**20:,.1f} MiB ({per / 1024:,.1f} KiB each), {other}",
              flush=True)


def print_state(result: dict[str, Any]) -> None:
    for part in result["changelog"]:
        print(f"{'':<22} changelog partition {part['partition']}: {part['records']:,} records, "
              f"{part['bytes'] / 2**20:,.1f} MiB; latest per key: {part['keys']:,} keys "
              f"{part['state_bytes'] / 2**20:,.1f} MiB, of which {part['services']:,} services "
              f"{part['service_bytes'] / 2**20:,.1f} MiB", flush=True)
    logged = "; ".join(
        f"{'slot ' + str(r['slot']) if r['slot'] is not None else 'leader'}"
        f"{' (survivor)' if r.get('survivor') else ''}: {r['services']:,} services "
        f"in {r['seconds']:.2f} s" for r in result["restores"])
    print(f"{'':<22} kill -9 of the worker of slot(s) {result['killed_slots']}: led again "
          f"{result['kill_to_led_s']:.1f} s after the kill ({result['start_to_led_s']:.1f} s "
          f"after the new worker's start); restores logged: {logged}", flush=True)


def _leads(worker: Worker) -> bool:
    try:
        return worker.health().get("role") == "leader"
    except (OSError, ValueError):
        return False


def run_pass(workers: list[Worker], count: int, app_id: str, keep: bool = False,
             ) -> dict[str, Any]:
    """Start ``workers`` together on ``app_id``; until they have processed ``count`` events.
    With ``keep`` they are left running (stopped only on an error)."""
    print(f"{'':<22} (load {load()} before the pass {app_id.rpartition('-')[0][-9:]})",
          flush=True)
    for worker in workers:
        worker.workdir.mkdir(parents=True, exist_ok=True)
        worker.start(app_id)
    started = time.perf_counter()
    samples: list[tuple[float, float]] = []
    scraped: list[list[dict[str, float]]] = []
    cpu: list[list[float]] = []
    settled: int | None = None  # the first sample at which every worker leads a slot
    ok = False
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            for worker in workers:
                worker.check_alive()
            scraped.append(scrape(workers))
            n = sum(w[PROCESSED] for w in scraped[-1])
            samples.append((time.perf_counter(), n))
            cpu.append([cpu_seconds(w.process.pid) for w in workers])  # type: ignore[union-attr]
            if settled is None and (len(workers) == 1 or all(_leads(w) for w in workers)):
                settled = len(samples) - 1
            if n >= count:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"{app_id}: {samples[-1][1]:,.0f} of {count:,} in 900 s")
        ok = True
    finally:
        if not (ok and keep):
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

    def delta(i: int, name: str, since: int = lo, until: int = hi) -> float:
        return scraped[until][i][name] - scraped[since][i][name]

    def share(i: int, name: str) -> float:
        """Of worker ``i``'s time leading: from its first event processed to the last sample
        (a checkpoint's time is counted when it commits, so a short interval is too coarse)."""
        first = next((k for k, row in enumerate(scraped) if row[i][PROCESSED] > 0), hi)
        wall = samples[-1][0] - samples[first][0]
        return delta(i, name, first, len(samples) - 1) / wall if wall > 0 else 0.0

    return {"rate": rate, "seconds": span, "from": samples[lo][1] / count, "cores": cores,
            "us_per_event": [c / rate * 1e6 for c in cores],
            "us_per_own_event": [(cpu[hi][i] - cpu[lo][i]) / max(1.0, delta(i, PROCESSED)) * 1e6
                                 for i in range(len(workers))],
            "checkpoint_share": [share(i, f"{CHECKPOINT}_sum") for i in range(len(workers))],
            "encode_share": [share(i, f"{ENCODE}_sum") for i in range(len(workers))],
            "checkpoints": [delta(i, f"{CHECKPOINT}_count", 0, len(samples) - 1)
                            for i in range(len(workers))],
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
            lead = run_pass(single, total, f"{base}-single-{i}", keep=True)
            fresh = crew(args, prefix, workdir / f"single-restored-{i}", 1)[0]
            try:
                lead["fail_over"] = fail_over(args, single, fresh, 1)
            finally:
                for worker in (*single, fresh):
                    worker.stop()
            lead["final_state"] = asyncio.run(changelog(
                args.bootstrap_servers, f"{fresh.app_id}-state-changelog", 1))
            print_final("single leader", lead["final_state"])
            slots1 = run_pass(one, total, f"{base}-one-{i}")
            slotsn = run_pass(many, total, f"{base}-many-{i}", keep=True)
            fresh = crew(args, prefix, workdir / f"many-restored-{i}", 1,
                         ROLLGUARD_SCALE_OUT_SLOTS=str(args.slots))[0]
            try:
                slotsn["fail_over"] = fail_over(args, many, fresh, args.slots)
            finally:
                for worker in (*many, fresh):
                    worker.stop()
            slotsn["final_state"] = asyncio.run(changelog(
                args.bootstrap_servers, f"{fresh.app_id}-state-changelog", args.slots))
            print_final(f"{args.workers} workers", slotsn["final_state"])
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
                own = ", ".join(
                    f"{u:.1f} us/own event, checkpoints {c:.0%} of the time in flight, "
                    f"{e:.0%} taking the state ({n:.0f})" for u, c, e, n in zip(
                        r["us_per_own_event"], r["checkpoint_share"], r["encode_share"],
                        r["checkpoints"], strict=True))
                print(f"{'':<22} per worker: {own}", flush=True)
                if "fail_over" in r:
                    print_state(r["fail_over"])
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
        print(f"{'':<22} (load {load()} before the live run, {workers} worker(s))", flush=True)
        before = scrape(team)
        cpu = [cpu_seconds(w.process.pid) for w in team]  # type: ignore[union-attr]
        began = time.perf_counter()
        result = asyncio.run(live_run(args, team[0]))
        wall = time.perf_counter() - began
        after = scrape(team)
        used = [cpu_seconds(w.process.pid) - c  # type: ignore[union-attr]
                for w, c in zip(team, cpu, strict=True)]
        own = [a[PROCESSED] - b[PROCESSED] for a, b in zip(after, before, strict=True)]
        result["workers"] = [
            {"events": n, "cpu_s": c, "us_per_event": c / max(1.0, n) * 1e6,
             "checkpoint_share": (a[f"{CHECKPOINT}_sum"] - b[f"{CHECKPOINT}_sum"]) / wall,
             "encode_share": (a[f"{ENCODE}_sum"] - b[f"{ENCODE}_sum"]) / wall,
             "checkpoints": a[f"{CHECKPOINT}_count"] - b[f"{CHECKPOINT}_count"]}
            for n, c, a, b in zip(own, used, after, before, strict=True)]
        result["wall_s"] = wall
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
    print(f"{'':<22} sent {result['events_sent']:,} events; live part {result['live_events']:,}"
          f" at {result['live_rate']:,.0f} events/s (asked {args.live_services * 0.3:,.0f}), "
          f"sent behind its event time p50 {result['send_behind_p50'] * 1e3:,.0f} ms, p99 "
          f"{result['send_behind_p99'] * 1e3:,.0f} ms; {result['late_deploys']} deploys sent "
          f"> 0.5 s late, {result['idle_first']} closed by the idle clock first", flush=True)
    for i, w in enumerate(result["workers"]):
        print(f"{'':<22} worker {i}: {w['events']:,.0f} events, {w['us_per_event']:.1f} us CPU "
              f"per event ({w['cpu_s']:.1f} CPU s over {result['wall_s']:.0f} s), checkpoints "
              f"{w['checkpoint_share']:.0%} of the time in flight, {w['encode_share']:.0%} "
              f"taking the state ({w['checkpoints']:.0f})", flush=True)
    print(f"{'':<22} window-close lag: {histogram_summary(result['close_lag'])}", flush=True)
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
    parser.add_argument("--repeat", type=int, default=1, help="passes of (a), runs of (b)")
    parser.add_argument("--live-services", type=int, default=20, help="services in (b)")
    parser.add_argument("--deployments", type=int, default=10, help="bad deployments in (b)")
    parser.add_argument("--spread", type=float, default=60.0, help="deploys spread in (b), s")
    parser.add_argument("--lead", type=float, default=30.0, help="live seconds before deploys")
    parser.add_argument("--history", type=float, default=1200.0, help="history seconds in (b)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", choices=("throughput", "latency"))
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"rollguard worker-mode bench: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"broker {args.bootstrap_servers}, tree {tree_state()}", flush=True)
    figures: dict[str, Any] = {"tree": tree_state(), "load_before": os.getloadavg(),
                               "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="rollguard-scale-") as tmp:
        if args.only != "latency":
            figures["throughput"] = throughput(args, Path(tmp) / "a")
        if args.only != "throughput":
            figures["latency"] = []
            for i in range(args.repeat):
                figures["latency"].append({
                    "single": latency_pass(args, Path(tmp) / f"b1-{i}", 1, 1),
                    "workers": latency_pass(args, Path(tmp) / f"b2-{i}", args.workers,
                                            args.slots)})
    if args.json:
        args.json.write_text(orjson.dumps(figures, default=str,
                                          option=orjson.OPT_INDENT_2).decode())
    print(f"total             {time.perf_counter() - began:.0f} s "
          f"(load after {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
