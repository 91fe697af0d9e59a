"""The decision core split over engines: CPU per event of each, against one engine, same run.

A dense fleet (default 10,000 services, 3 metrics every 10 s, a deploy every 10 s of event
time, one in five bad) is decoded once; then, in one process, one engine (``Solo``) folds it
all, and 2 engines (``FleetBoard``) each fold the services of half the partitions (murmur2 of
the service, 6 partitions, partition i to engine i % 2), fed round-robin in chunks, each
resumed when it waits at the fleet barrier. Printed: CPU seconds and events per CPU second of
each engine, the split's total CPU over one engine's (the cost of splitting: each engine folds
every fleet fact), the busiest engine's CPU over one engine's (what bounds the speed-up when
each runs on its own core), how often an engine waited at the barrier, and whether the
outputs are the same records per service.

This measures the core only. On Kafka each worker also decodes its inputs, commits its
transactions and reads the fleet topic; the broker shares this machine's two cores.

    .venv/bin/python bench/scale_split.py                       # 10,000 services, 2 M events
    .venv/bin/python bench/scale_split.py --services 2000 --events 400000
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import yaml
from aiokafka.partitioner import murmur2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rollguard.models.engine import advance, last_bake_end, new_state, resume, step  # noqa: E402
from rollguard.models.events import CoreOutput  # noqa: E402
from rollguard.models.fleet import FleetBoard  # noqa: E402
from rollguard.models.policy import Policy  # noqa: E402
from rollguard.models.state import EngineState  # noqa: E402
from rollguard.streams.collector import GC_THRESHOLD  # noqa: E402
from rollguard.streams.serde import InputRecord, decode_line, encode  # noqa: E402

T0 = 1_795_593_600.0
METRICS = (("error_rate", 0.004), ("latency_p99_ms", 180.0), ("request_rate", 120.0))
PARTITIONS = 6
CHUNK = 5_000


def dense_fleet(events: int, services: int, seed: int) -> Iterator[bytes]:
    """``events`` JSON lines, in event-time order: telemetry of every service every 10 s, and
    after 6 minutes of history (12 windows) a deploy every 10 s (one in five bad)."""
    rng = random.Random(seed)
    names = [f"svc-{i:05d}" for i in range(services)]
    phase = [rng.uniform(1.0, 9.0) for _ in names]
    bad: dict[int, float] = {}
    written = deployments = tick = 0
    next_deploy = T0 + 360.0
    while written < events:
        slot = T0 + tick * 10.0
        while slot >= next_deploy:
            svc = rng.randrange(services)
            deployments += 1
            if deployments % 5 == 0:
                bad[svc] = next_deploy + 30.0
            yield (
                b'{"type":"deploy","deployment_id":"dep-%d","service":"%s","version":"v2",'
                b'"previous_version":"v1","rollback_target":"v1","status":"started",'
                b'"actor":"svc:ci-deployer","ts":%.3f}' % (deployments, names[svc].encode(),
                                                          next_deploy)
            )
            written += 1
            next_deploy += 10.0
        for i, name in enumerate(names):
            ts = slot + phase[i]
            broken = bad.get(i)
            for metric, base in METRICS:
                value = base * (1.0 + rng.gauss(0.0, 0.05))
                if broken is not None and ts >= broken and metric == "error_rate":
                    value = 0.2
                yield (
                    b'{"type":"metric","service":"%s","name":"%s","value":%.6g,"ts":%.3f,'
                    b'"source":"prometheus"}' % (name.encode(), metric.encode(), value, ts)
                )
                written += 1
        tick += 1


class Engine:
    """One engine and the CPU time spent in it."""

    def __init__(self, records: list[InputRecord], state: EngineState) -> None:
        self.records, self.state = records, state
        self.read = 0
        self.cpu = 0.0
        self.waits = 0
        self.out: list[CoreOutput] = []

    def work(self, policy: Policy, until: float | None) -> bool:
        started = time.process_time()
        try:
            state = self.state
            if state.held is not None:
                self.out.extend(resume(state, policy))
                return state.held is None
            if self.read < len(self.records):
                for record in self.records[self.read:self.read + CHUNK]:
                    self.read += 1
                    self.out.extend(step(state, record, policy))
                    if state.held is not None:
                        self.waits += 1
                        break
                return True
            if until is not None and state.fleet.floor < until:
                self.out.extend(advance(state, policy, until))
                return True
            return False
        finally:
            self.cpu += time.process_time() - started


def run(engines: list[Engine], policy: Policy, newest: float) -> None:
    lateness = policy.defaults.allowed_lateness_seconds
    for until in (newest - lateness, None):
        while any([e.work(policy, until) for e in engines]):
            pass
    target = max([newest] + [last_bake_end(e.state, policy) for e in engines])
    for e in engines:
        e.out.extend(advance(e.state, policy, target))
    while any([e.work(policy, None) for e in engines]):
        pass
    assert all(e.state.held is None for e in engines), "an engine waits forever"


def per_service(outputs: list[CoreOutput]) -> dict[str, list[bytes]]:
    grouped: defaultdict[str, list[bytes]] = defaultdict(list)
    for o in outputs:
        grouped[str(getattr(o, "service", None))].append(encode(o))
    return dict(grouped)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    policy = Policy.from_mapping(
        yaml.safe_load((REPO / "config" / "policy.yaml").read_text()), version="bench"
    )
    records = [r for line in dense_fleet(args.events, args.services, args.seed)
               if (r := decode_line(line).record) is not None]
    newest = max(r.ts for r in records)
    # As the worker does (streams/collector.py): the collector's passes over the
    # decoded input and the states would otherwise weigh on whichever run comes second.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    print(f"{len(records):,} events, {args.services:,} services, "
          f"{(newest - T0) / 60:.0f} min of event time")

    solo = Engine(records, new_state())
    run([solo], policy, newest)
    solo.state = new_state()  # only its outputs are kept: the next run's heap is the same size
    gc.collect()
    board = FleetBoard(["0", "1"])
    halves: list[list[InputRecord]] = [[], []]
    for r in records:
        p = (murmur2(r.service.encode()) & 0x7FFFFFFF) % PARTITIONS
        halves[p % 2].append(r)
    pair = []
    for w in range(2):
        state = new_state()
        state.exchange = board.seat(str(w))
        pair.append(Engine(halves[w], state))
    run(pair, policy, newest)

    decisions = sum(1 for o in solo.out if o.type == "decision")
    print(f"1 engine : {solo.cpu:7.2f} CPU s  {len(records) / solo.cpu:9,.0f} events/CPU s  "
          f"({decisions} decisions)")
    for w, e in enumerate(pair):
        print(f"engine {w} : {e.cpu:7.2f} CPU s  {len(e.records) / e.cpu:9,.0f} events/CPU s  "
              f"{len(e.records):,} events, waited at the barrier {e.waits} times")
    total = sum(e.cpu for e in pair)
    busiest = max(e.cpu for e in pair)
    print(f"2 engines: total CPU / one engine's {total / solo.cpu:.3f}; busiest / one "
          f"engine's {busiest / solo.cpu:.3f} (speed-up bound on 2 cores: "
          f"{solo.cpu / busiest:.2f}x)")
    same = per_service(solo.out) == per_service([o for e in pair for o in e.out])
    print(f"outputs per service identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
