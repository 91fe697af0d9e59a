"""Compare ``replay_throughput.py``'s parse+core ratio of two source trees in one run.

Each tree runs its own copy of ``bench/replay_throughput.py`` (its ``fleet_lines``,
``parse_only`` and ``parse_and_step``) in its own virtualenv (``TREE/.venv/bin/python``), one
process at a time, alternating A B, B A, A B, ... so that a slow spell of a shared machine falls
on both sides. Inside a process the same event file is timed ``--reps`` times, parse-only then
parse+core each time. The ratio is parse+core events/s over parse-only events/s, as the bench
prints it, from wall time and from the process's CPU time (``time.process_time``; other
processes on the machine take wall time, not this process's CPU time). Printed: each pair, then
per tree the median and spread, and the ratio of ratios B/A.

    git worktree add /tmp/before c19fd01 && (cd /tmp/before && make install)
    .venv/bin/python bench/compare_trees.py /tmp/before . --pairs 6

``--instructions`` counts instead of timing: each tree's parse-only and parse+core loops run
under valgrind's callgrind (machine instructions executed, the same from run to run whatever
else the machine does) at ``--events`` and at a quarter of it, and the ratio is taken over the
difference (start-up and the first windows cancel out). Slow (~50x): 150,000 events take a
few minutes per tree.

    .venv/bin/python bench/compare_trees.py /tmp/before . --instructions --events 150000

``--cycles`` adds callgrind's cache simulation and counts estimated cycles (instructions +
10 per first-level miss + 100 per last-level miss), which sees memory latency too; slower.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The child scripts' prelude: the tree's own bench module and policy (``tree`` set before).
_LOAD = r"""spec = importlib.util.spec_from_file_location("replay_throughput",
                                              tree / "bench" / "replay_throughput.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
policy = bench.Policy.from_mapping(
    yaml.safe_load((tree / "config" / "policy.yaml").read_text()), version="bench")
"""

# Run by each tree's interpreter: argv = tree, events, services, seed, reps, gc threshold (0:
# Python's default). Prints one JSON
# object: wall and CPU seconds of each timed pass, and the event count.
_CHILD = r"""
import gc, importlib.util, json, sys, tempfile, time, yaml
from pathlib import Path
tree, events, services, seed, reps, threshold = Path(sys.argv[1]), *map(int, sys.argv[2:])
if threshold:
    gc.set_threshold(threshold, *gc.get_threshold()[1:])
""" + _LOAD + r"""
out = {"parse_wall": [], "parse_cpu": [], "core_wall": [], "core_cpu": []}
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "fleet.jsonl"
    with path.open("wb") as fh:
        for line in bench.fleet_lines(events, services, seed):
            fh.write(line + b"\n")
    for _ in range(reps):
        cpu = time.process_time()
        n, wall = bench.parse_only(path, events)
        out["parse_cpu"].append(time.process_time() - cpu)
        out["parse_wall"].append(wall)
        cpu = time.process_time()
        n2, wall, *_ = bench.parse_and_step(path, events, policy)
        out["core_cpu"].append(time.process_time() - cpu)
        out["core_wall"].append(wall)
out["events"] = n
print(json.dumps(out))
"""


# Run by each tree's interpreter: argv = tree, events, services, seed, path. Writes the fleet.
_WRITE = r"""
import importlib.util, sys
from pathlib import Path
tree, events, services, seed, path = Path(sys.argv[1]), *map(int, sys.argv[2:5]), sys.argv[5]
spec = importlib.util.spec_from_file_location("replay_throughput",
                                              tree / "bench" / "replay_throughput.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
with open(path, "wb") as fh:
    for line in bench.fleet_lines(events, services, seed):
        fh.write(line + b"\n")
"""

# Run under callgrind: argv = tree, mode (parse | core), events, path.
_COUNTED = r"""
import importlib.util, sys, yaml
from pathlib import Path
tree, mode, events, path = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
""" + _LOAD + r"""
state = bench.new_state()
with open(path, "rb") as fh:
    for n, line in enumerate(fh):
        if n >= events:
            break
        record = bench.decode_line(line).record
        if mode == "core" and record is not None:
            bench.step(state, record, policy)
"""


def instructions(tree: Path, mode: str, events: int, path: Path, cache: bool = False) -> int:
    """Machine instructions one counted run executes (callgrind's ``Collected``); with
    ``cache``, cachegrind's estimated cycles instead: instructions + 10 per first-level miss +
    100 per last-level miss of the simulated caches (memory latency, which counting
    instructions does not see: the collector's passes and the state's cold objects)."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         *(["--cache-sim=yes"] if cache else []),
         str(tree / ".venv" / "bin" / "python"), "-c", _COUNTED, str(tree), mode, str(events),
         str(path)],
        cwd=tree, capture_output=True, text=True, check=True, env={**os.environ,
                                                                   "PYTHONHASHSEED": "0"},
    )
    names = re.findall(r"Events *: ([\w ]+)", done.stderr)[-1].split()
    counts = dict(zip(names, map(int, re.findall(r"Collected : ([\d ]+)", done.stderr)[-1]
                                 .split()), strict=True))
    if not cache:
        return counts["Ir"]
    first = counts["I1mr"] + counts["D1mr"] + counts["D1mw"]
    last = counts["ILmr"] + counts["DLmr"] + counts["DLmw"]
    return counts["Ir"] + 10 * first + 100 * last


def count_trees(
    trees: dict[str, Path], events: int, services: int, seed: int, cache: bool = False
) -> None:
    """Print each tree's parse+core ratio from instruction counts (or estimated cycles), and
    B over A."""
    ratios: dict[str, float] = {}
    unit = "estimated cycles" if cache else "instructions"
    with tempfile.TemporaryDirectory() as tmp:
        for side, tree in trees.items():
            path = Path(tmp) / f"{side}.jsonl"
            subprocess.run([str(tree / ".venv" / "bin" / "python"), "-c", _WRITE, str(tree),
                            str(events), str(services), str(seed), str(path)],
                           cwd=tree, check=True)
            delta = {mode: instructions(tree, mode, events, path, cache)
                     - instructions(tree, mode, events // 4, path, cache)
                     for mode in ("parse", "core")}
            ratios[side] = delta["parse"] / delta["core"]
            print(f"{side} {tree}: parse {delta['parse'] / 1e9:.3f} G, parse+core "
                  f"{delta['core'] / 1e9:.3f} G {unit} for {events - events // 4:,} "
                  f"events; ratio {ratios[side]:.1%}", flush=True)
    print(f"B/A of the ratios, {unit}: {ratios['B'] / ratios['A']:.3f}")


@dataclass(frozen=True, slots=True)
class Run:
    """One process's passes in one tree (seconds summed over its reps)."""

    events: int
    parse_wall: float
    parse_cpu: float
    core_wall: float
    core_cpu: float

    @property
    def wall_ratio(self) -> float:
        """parse+core events/s over parse-only events/s, from wall time (the bench's figure)."""
        return self.parse_wall / self.core_wall

    @property
    def cpu_ratio(self) -> float:
        """The same ratio from this process's CPU time."""
        return self.parse_cpu / self.core_cpu

    @property
    def core_rate(self) -> float:
        """parse+core events/s, wall."""
        return self.events / self.core_wall

    @property
    def parse_cpu_rate(self) -> float:
        """parse-only events per CPU second."""
        return self.events / self.parse_cpu

    @property
    def core_cpu_rate(self) -> float:
        """parse+core events per CPU second."""
        return self.events / self.core_cpu


def run_tree(
    tree: Path, events: int, services: int, seed: int, reps: int, gc_threshold: int = 0
) -> Run:
    """One process in ``tree`` with that tree's own interpreter."""
    done = subprocess.run(
        [str(tree / ".venv" / "bin" / "python"), "-c", _CHILD, str(tree), str(events),
         str(services), str(seed), str(reps), str(gc_threshold)],
        cwd=tree, capture_output=True, text=True, check=True,
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    total = reps * data["events"]
    return Run(total, sum(data["parse_wall"]), sum(data["parse_cpu"]),
               sum(data["core_wall"]), sum(data["core_cpu"]))


def spread(values: list[float]) -> str:
    """Median, min, max and the range relative to the median."""
    mid = statistics.median(values)
    return (f"median {mid:.3f}  min {min(values):.3f}  max {max(values):.3f}  "
            f"(range {(max(values) - min(values)) / mid:.0%} of median)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree_a", type=Path, help="baseline tree (with its .venv)")
    parser.add_argument("tree_b", type=Path, help="tree compared with the baseline")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--reps", type=int, default=2, help="timed passes per process")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions under callgrind instead of timing")
    parser.add_argument("--cycles", action="store_true",
                        help="as --instructions, with callgrind's cache simulation: estimated "
                        "cycles (instructions + 10 per L1 miss + 100 per last-level miss)")
    parser.add_argument("--gc-threshold", type=int, default=0,
                        help="the collector's first-generation threshold in both trees' timed "
                        "processes (0: Python's default, 700)")
    args = parser.parse_args()
    trees = {"A": args.tree_a.resolve(), "B": args.tree_b.resolve()}
    if args.instructions or args.cycles:
        count_trees(trees, args.events, args.services, args.seed, cache=args.cycles)
        return 0
    runs: dict[str, list[Run]] = {"A": [], "B": []}
    for pair in range(args.pairs):
        order = ("A", "B") if pair % 2 == 0 else ("B", "A")
        for side in order:
            runs[side].append(run_tree(trees[side], args.events, args.services, args.seed,
                                       args.reps, args.gc_threshold))
        a, b = runs["A"][-1], runs["B"][-1]
        print(f"pair {pair + 1} ({order[0]} first): "
              f"A wall {a.wall_ratio:.1%} cpu {a.cpu_ratio:.1%} ({a.core_rate:,.0f} ev/s)  "
              f"B wall {b.wall_ratio:.1%} cpu {b.cpu_ratio:.1%} ({b.core_rate:,.0f} ev/s)  "
              f"B/A wall {b.wall_ratio / a.wall_ratio:.3f} cpu {b.cpu_ratio / a.cpu_ratio:.3f}",
              flush=True)
    for side in ("A", "B"):
        print(f"{side} {trees[side]}")
        print(f"  ratio, wall  {spread([r.wall_ratio for r in runs[side]])}")
        print(f"  ratio, CPU   {spread([r.cpu_ratio for r in runs[side]])}")
        print(f"  core ev/s    {spread([r.core_rate for r in runs[side]])}")
        print(f"  parse ev/CPU s  {spread([r.parse_cpu_rate for r in runs[side]])}")
        print(f"  core ev/CPU s   {spread([r.core_cpu_rate for r in runs[side]])}")
    pairs = list(zip(runs["A"], runs["B"], strict=True))
    print(f"B/A per pair, wall: {spread([b.wall_ratio / a.wall_ratio for a, b in pairs])}")
    print(f"B/A per pair, CPU:  {spread([b.cpu_ratio / a.cpu_ratio for a, b in pairs])}")
    for label, a_ratios, b_ratios in (
        ("wall", [r.wall_ratio for r in runs["A"]], [r.wall_ratio for r in runs["B"]]),
        ("CPU", [r.cpu_ratio for r in runs["A"]], [r.cpu_ratio for r in runs["B"]]),
    ):
        print(f"B/A of the median ratios, {label}: "
              f"{statistics.median(b_ratios) / statistics.median(a_ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
