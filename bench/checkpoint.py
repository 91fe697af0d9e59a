"""Checkpoint cost, state size and restore time: authenticated plain data vs the old pickles.

One seeded fleet (``replay_throughput.fleet_lines``: SERVICES services, 3 metrics every 10 s,
a deploy every 2 minutes, one in five bad) is fed to the decision core, and a checkpoint is
taken every ``--every`` events, as the leader does about once a second. At each checkpoint both
encodings are taken from the same state, timed apart, in the same process:

- before (main up to c19fd01, reproduced here): every service that was touched, has an open
  window or a deployment, or owns a request is pickled; its bytes are hashed and written if
  they changed; the fleet is pickled;
- after (streams/checkpoint.py): the services the core reports it touched are encoded by the
  annotation-driven codec to JSON and sealed with an HMAC, with the fleet and the positions.

Printed: the time per checkpoint of each (median and total, and as a share of the time the core
took for the same events), records and bytes per checkpoint, the state bytes per service, and
the time to restore the final changelog (all records, compaction not assumed: the worst case)
in each format. Ratios are within one run.

    .venv/bin/python bench/checkpoint.py                       # 1,000 services, 300k events
    .venv/bin/python bench/checkpoint.py --services 10000 --events 600000 --every 3000
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.replay_throughput import fleet_lines  # noqa: E402
from rollguard.models.engine import EngineState, take_touched  # noqa: E402
from rollguard.streams.checkpoint import StateLog, restore, state_secret  # noqa: E402
from rollguard.streams.pipeline import Pipeline  # noqa: E402
from rollguard.streams.serde import decode_line  # noqa: E402
from rollguard.streams.settings import load_policy  # noqa: E402

SECRET = state_secret("bench", b"bench key material, 32 bytes...")


class PickleCheckpoints:
    """The checkpoint of main before this change (streams/checkpoint.py at c19fd01)."""

    def __init__(self) -> None:
        self.digests: dict[bytes, bytes] = {}
        self.active: set[str] = set()

    def names(self, state: EngineState, touched: set[str]) -> set[str]:
        active = {name for name, svc in state.services.items()
                  if svc.open or svc.deployment is not None}
        owners = {request.service for request in state.fleet.requests.values()}
        names = touched | active | self.active | owners
        self.active = active
        return names

    def entries(self, state: EngineState, names: Iterable[str]) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for name in names:
            svc = state.services.get(name)
            if svc is None:
                continue
            key = b"svc:" + name.encode()
            value = b"\x01" + pickle.dumps(svc, protocol=pickle.HIGHEST_PROTOCOL)
            mark = hashlib.blake2b(value, digest_size=16).digest()
            if self.digests.get(key) != mark:
                self.digests[key] = mark
                out.append((key, value))
        out.append((b"fleet", b"\x01" + pickle.dumps(state.fleet, protocol=5)))
        return out


def pickle_restore(entries: list[tuple[bytes, bytes]]) -> EngineState:
    """Restore of the old format (the bench's own records: the pickles are its own)."""
    latest = dict(entries)
    state = EngineState()
    for key, value in latest.items():
        obj = pickle.loads(value[1:])  # noqa: S301 - written by this process just now
        if key.startswith(b"svc:"):
            state.services[obj.name] = obj
        else:
            state.fleet = obj
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--every", type=int, default=1000,
                        help="events between two checkpoints [1000: ~1 s of the worker]")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    policy = load_policy(Path(__file__).resolve().parent.parent / "config" / "policy.yaml")
    pipeline = Pipeline(policy)
    records = [decode_line(line, max_clock_skew_seconds=1e12) for line in
               fleet_lines(args.events, args.services, args.seed)]
    before, after = PickleCheckpoints(), StateLog(secret=SECRET)
    shell_touched: set[str] = set()
    old_log: list[tuple[bytes, bytes]] = []
    new_log: list[tuple[int, bytes | None, bytes | None]] = []
    times: dict[str, list[float]] = {"before": [], "after": []}
    sizes: dict[str, list[tuple[int, int]]] = {"before": [], "after": []}
    core = 0.0
    positions: dict[str, Any] = {"t\x000": [0, []]}
    state = pipeline.state
    start = time.perf_counter()
    for i, decoded in enumerate(records, 1):
        record = decoded.record
        assert record is not None
        shell_touched.add(record.service)
        pipeline.process(record)
        if i % args.every:
            continue
        core += time.perf_counter() - start
        t0 = time.perf_counter()
        old = before.entries(state, before.names(state, shell_touched))
        t1 = time.perf_counter()
        touched = take_touched(state)
        new = after.entries(state, touched, positions)
        t2 = time.perf_counter()
        shell_touched = set()
        times["before"].append(t1 - t0)
        times["after"].append(t2 - t1)
        sizes["before"].append((len(old), sum(len(v) for _, v in old)))
        sizes["after"].append((len(new), sum(len(v or b"") for _, v in new)))
        old_log.extend(old)
        new_log.extend((len(new_log) + j, k, v) for j, (k, v) in enumerate(new))
        start = time.perf_counter()
    core += time.perf_counter() - start

    print(f"{len(records):,} events, {len(state.services):,} services, a checkpoint every "
          f"{args.every:,} events ({len(times['after'])} checkpoints); core {core:.2f} s "
          f"({len(records) / core:,.0f} events/s)")
    for name in ("before", "after"):
        spent = times[name]
        recs = statistics.median(n for n, _ in sizes[name])
        size = statistics.median(b for _, b in sizes[name])
        print(f"{name:<7} checkpoint median {statistics.median(spent) * 1e3:7.2f} ms, "
              f"total {sum(spent):6.2f} s = {sum(spent) / core:6.1%} of the core's time; "
              f"median {recs:,.0f} records, {size / 1024:,.0f} KiB per checkpoint")
    ratio = sum(times["after"]) / sum(times["before"])
    print(f"after / before   {ratio:.2f} (checkpoint time, same events, same run)")

    final = dict(old_log)
    per_old = statistics.mean(len(v) for k, v in final.items() if k.startswith(b"svc:"))
    latest = {k: v for _, k, v in new_log}
    per_new = statistics.mean(len(v or b"") for k, v in latest.items() if k.startswith(b"svc:"))
    print(f"state per service: before {per_old / 1024:.1f} KiB (pickle), after "
          f"{per_new / 1024:.1f} KiB (JSON + 33-byte header)")
    t0 = time.perf_counter()
    pickle_restore(old_log)
    t1 = time.perf_counter()
    restored = restore(new_log, [SECRET])
    t2 = time.perf_counter()
    assert len(restored.state.services) == len(state.services)
    compacted = sorted({k: (o, k, v) for o, k, v in new_log}.values())
    t3 = time.perf_counter()
    restore(compacted, [SECRET])
    t4 = time.perf_counter()
    print(f"restore: before {t1 - t0:.2f} s ({len(old_log):,} records), after {t2 - t1:.2f} s "
          f"({len(new_log):,} records), after compaction {t4 - t3:.2f} s "
          f"({len(compacted):,} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
