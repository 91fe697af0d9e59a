"""Replay throughput of the decision core, against a parse-only loop measured in the same run.

A seeded fleet of SERVICES services publishes 3 metrics every 10 s (30-s windows), with a few
deployments (healthy and bad) so that decisions are made; the events are written to a temporary
JSON Lines file in event-time order. Then, in one process:

(a) parse only: ``streams.serde.decode_line`` on every line;
(b) parse + core: ``decode_line`` then ``models.engine.step`` on every record (and ``advance``
    at the end, as replay does).

Both passes run as ``rollguard replay`` runs the core: with the collector's first-generation
threshold raised as the worker raises it (``streams/collector.py``), then once more with
Python's default collector (700; the setting of the benches before it), for comparison.
It prints events/s for both, their ratio, and the memory after 250k and after all events:
current and peak since the previous mark (tracemalloc, in a separate pass, so that it does
not slow the timed ones)
and the size of the pickled engine state.
Targets: (b) >= 100,000 events/s over 1,000,000 events and >= 30 % of (a); flat memory.

    .venv/bin/python bench/replay_throughput.py            # 1,000,000 events, 1,000 services
    .venv/bin/python bench/replay_throughput.py --events 200000 --profile
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import pickle
import pstats
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rollguard.models.engine import EngineState, advance, new_state, step  # noqa: E402
from rollguard.models.policy import Policy  # noqa: E402
from rollguard.streams.collector import collector_for_state  # noqa: E402
from rollguard.streams.serde import decode_line  # noqa: E402

T0 = 1_795_593_600.0  # 2026-11-25T08:00:00Z
METRICS = (("error_rate", 0.004), ("latency_p99_ms", 180.0), ("request_rate", 120.0))


def fleet_lines(events: int, services: int, seed: int) -> Iterator[bytes]:
    """``events`` JSON lines from ``services`` services, in event-time order."""
    rng = random.Random(seed)
    names = [f"svc-{i:04d}" for i in range(services)]
    phase = [rng.uniform(1.0, 9.0) for _ in names]
    level = [[base * rng.uniform(0.6, 1.4) for _, base in METRICS] for _ in names]
    # A deployment every ~2 minutes of event time, one in five of them bad.
    deploy_every = 120.0
    bad: dict[int, float] = {}
    written = 0
    tick = 0
    next_deploy = T0 + 1200.0
    deployments = 0
    while written < events:
        slot = T0 + tick * 10.0
        if slot >= next_deploy:
            svc = rng.randrange(services)
            deployments += 1
            if deployments % 5 == 0:
                bad[svc] = slot + 30.0
            else:
                bad.pop(svc, None)
            yield (
                b'{"type":"deploy","deployment_id":"dep-%d","service":"%s","version":"v%d",'
                b'"previous_version":"v%d","rollback_target":"v%d","status":"started",'
                b'"actor":"svc:ci-deployer","ts":%.3f}'
                % (deployments, names[svc].encode(), deployments + 1, 1, 1, slot)
            )
            written += 1
            next_deploy += deploy_every
        for i, name in enumerate(names):
            ts = slot + phase[i]
            broken = bad.get(i)
            for m, (metric, _) in enumerate(METRICS):
                value = level[i][m] * (1.0 + rng.gauss(0.0, 0.05))
                if broken is not None and ts >= broken and metric == "error_rate":
                    value = 0.2
                yield (
                    b'{"type":"metric","service":"%s","name":"%s","value":%.6g,"ts":%.3f,'
                    b'"source":"prometheus","instance":"pod-1"}'
                    % (name.encode(), metric.encode(), value, ts)
                )
                written += 1
                if written >= events:
                    return
        tick += 1


def parse_only(path: Path, limit: int) -> tuple[int, float]:
    n = 0
    start = time.perf_counter()
    with path.open("rb") as fh:
        for line in fh:
            decode_line(line)
            n += 1
            if n >= limit:
                break
    return n, time.perf_counter() - start


def parse_and_step(
    path: Path, limit: int, policy: Policy, *, memory_at: tuple[int, ...] = ()
) -> tuple[int, float, int, EngineState, dict[int, tuple[int, int, int]]]:
    state = new_state()
    n = outputs = 0
    newest = 0.0
    memory: dict[int, tuple[int, int, int]] = {}
    start = time.perf_counter()
    with path.open("rb") as fh:
        for line in fh:
            record = decode_line(line).record
            if record is not None:
                outputs += len(step(state, record, policy))
                if record.ts > newest:
                    newest = record.ts
            n += 1
            if n in memory_at:
                gc.collect()
                current, peak = tracemalloc.get_traced_memory()
                memory[n] = (current, peak, len(pickle.dumps(state)))
                tracemalloc.reset_peak()  # the next peak excludes this pickling
            if n >= limit:
                break
    outputs += len(advance(state, policy, newest))
    return n, time.perf_counter() - start, outputs, state, memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the parse+core loop")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    parser.add_argument("--no-default-collector", action="store_true",
                        help="skip the second timing, with Python's default collector")
    args = parser.parse_args()

    policy = Policy.from_mapping(
        yaml.safe_load((REPO / "config" / "policy.yaml").read_text()), version="bench"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet.jsonl"
        with path.open("wb") as fh:
            for line in fleet_lines(args.events, args.services, args.seed):
                fh.write(line + b"\n")
        size = path.stat().st_size

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            parse_and_step(path, args.events, policy)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return 0

        print(f"events            {args.events:>12,}  ({size / 1e6:.0f} MB, "
              f"{args.services} services)")
        # First as ``rollguard replay`` runs (the worker's collector setting), then with
        # Python's default collector (what earlier trees' benches measured).
        for label, collector in (("", collector_for_state), (" (Python's default collector)",
                                                             contextlib.nullcontext)):
            with collector():
                n, parse_s = parse_only(path, args.events)
                n2, core_s, outputs, state, _ = parse_and_step(path, args.events, policy)
            rate, rate2 = n / parse_s, n2 / core_s
            if not label:
                parse_rate, core_rate = rate, rate2
            else:
                print(label.strip(" ()") + ":")
            print(f"parse only        {rate:>12,.0f} events/s  ({parse_s:.2f} s)")
            print(f"parse + core      {rate2:>12,.0f} events/s  ({core_s:.2f} s)")
            print(f"ratio             {rate2 / rate:>12.1%}" + ("" if label else
                                                                "  (target >= 30 %)"))
            if not label:
                print(f"outputs           {outputs:>12,}")
            del state
            gc.collect()
            if args.no_default_collector:
                break

        if not args.no_memory:
            marks = tuple(m for m in (250_000, args.events) if m <= args.events)
            tracemalloc.start()
            *_, memory = parse_and_step(path, args.events, policy, memory_at=marks)
            tracemalloc.stop()
            for mark, (traced, peak, pickled) in sorted(memory.items()):
                print(
                    f"memory @ {mark:>9,}  {traced / 1e6:>6.1f} MB now, {peak / 1e6:>6.1f} MB peak "
                    f"(tracemalloc), state pickles to {pickled / 1e6:.1f} MB; per service "
                    f"{traced / 1e3 / args.services:.1f} KB now, "
                    f"{pickled / 1e3 / args.services:.1f} KB pickled"
                )
        ok = core_rate >= 100_000 and core_rate >= 0.3 * parse_rate
        print("targets           " + ("met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
