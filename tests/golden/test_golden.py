"""Golden replay files: the exact bytes of ``rollguard replay`` for the whole simulated corpus
(seeds 0 and 1) and for hand-made edge cases (``tests/golden/edges.py``).

Inputs are generated on the fly (the simulator and the edge builder are deterministic); the
outputs are committed under ``tests/golden/out``. Any change to the core that changes one byte of
output fails here. To accept a deliberate change, regenerate and review the diff:

    .venv/bin/python -m tests.golden.test_golden
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from rollguard.models.policy import Policy
from rollguard.streams.replay import replay_to_bytes
from rollguard.streams.scenarios import SCENARIOS, generate
from rollguard.streams.serde import dumps
from rollguard.streams.settings import load_policy
from tests.golden.edges import APPROVERS, EDGES

REPO = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "out"
SEEDS = (0, 1)


@cache
def policy() -> Policy:
    return load_policy(REPO / "config" / "policy.yaml")


def _scenario(name: str, seed: int) -> Callable[[], list[bytes]]:
    return lambda: [dumps(e) for e in generate(name, seed).events]


CASES: dict[str, Callable[[], list[bytes]]] = {
    **{f"{name}-{seed}": _scenario(name, seed) for seed in SEEDS for name in SCENARIOS},
    **EDGES,
}


def replay_bytes(lines: list[bytes]) -> bytes:
    """What ``rollguard replay FILE`` writes for these lines with the default settings."""
    return b"".join(replay_to_bytes(lines, policy(), approvers=APPROVERS))


@pytest.mark.parametrize("case", sorted(CASES))
def test_replay_matches_golden_bytes(case: str) -> None:
    expected = (OUT / f"{case}.jsonl").read_bytes()
    got = replay_bytes(CASES[case]())
    if got != expected:
        g, e = got.splitlines(), expected.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(g, e, strict=False)) if a != b),
                     min(len(g), len(e)))
        pytest.fail(
            f"{case}: output differs from tests/golden/out/{case}.jsonl at line {first + 1} "
            f"({len(g)} lines, expected {len(e)})"
        )


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.stem for p in OUT.glob("*.jsonl")) == sorted(CASES)


def main() -> None:
    """Rewrite every golden output (review the diff before committing it)."""
    OUT.mkdir(exist_ok=True)
    for case, build in sorted(CASES.items()):
        (OUT / f"{case}.jsonl").write_bytes(replay_bytes(build()))
        print(case, file=sys.stderr)


if __name__ == "__main__":
    main()
