"""RunningSum answers exactly what summing the rolling baseline again answers (models/rolling.py).

The idle window close asks ``value > ratio * (sum(past) / len(past))``; the running sum must
give that answer bit for bit, or a replay's decisions would depend on the cache (a restored
leader starts without it). The values probed are the limit itself and its neighbouring
floats, where a running sum's rounding would show.
"""

from __future__ import annotations

import math
from collections import deque

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from rollguard.models.rolling import RunningSum


def _reference(past: deque[float], ratio: float, value: float) -> bool:
    return value > ratio * (sum(past) / len(past))


def _probes(past: deque[float], ratio: float) -> list[float]:
    limit = ratio * (sum(past) / len(past))
    below, above = math.nextafter(limit, -math.inf), math.nextafter(limit, math.inf)
    return [limit, below, above, math.nextafter(below, -math.inf), limit * 1.5, limit * 0.5]


values = st.one_of(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),  # latencies, rates
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),  # a signed metric
    st.sampled_from([0.0, 1e-9, 0.1, 0.2, 0.3, 1e12, 3.0]),  # cancellation, exact ties
)


@settings(max_examples=300, deadline=None)
@given(
    maxlen=st.integers(min_value=1, max_value=25),
    pushes=st.lists(values, min_size=1, max_size=120),
    ratio=st.sampled_from([1.0, 1.5, 2.0, 3.0, 0.7]),
)
def test_every_answer_is_the_summed_answer(maxlen: int, pushes: list[float], ratio: float) -> None:
    past: deque[float] = deque(maxlen=maxlen)
    run = RunningSum(past)
    for value in pushes:
        run.push(past, value)
        for probe in _probes(past, ratio):
            assert run.above(past, ratio, probe) == _reference(past, ratio, probe), (
                list(past), ratio, probe)


def test_a_huge_value_leaving_does_not_leave_its_rounding_behind() -> None:
    # 1e16 + 0.3 - 1e16 is 0.0 or 2.0 in floats, not 0.3: the bound must send the comparison
    # to the exact sum once the huge value has left.
    past: deque[float] = deque(maxlen=2)
    run = RunningSum(past)
    for value in (1e16, 0.3, 0.1):
        run.push(past, value)
    assert list(past) == [0.3, 0.1]
    limit = 2.0 * (sum(past) / 2)
    assert run.above(past, 2.0, math.nextafter(limit, math.inf)) is True
    assert run.above(past, 2.0, limit) is False


def test_the_cache_is_not_state_and_is_rebuilt() -> None:
    from rollguard.models.state import ServiceState
    from rollguard.streams.checkpoint import CODEC

    svc = ServiceState("checkout", 30, 10.0)
    svc.rolling["latency_p99_ms"] = past = deque([180.0, 190.0], maxlen=20)
    svc.sums["latency_p99_ms"] = RunningSum(past)
    tree = orjson.loads(orjson.dumps(CODEC.encode(ServiceState, svc)))
    assert "sums" not in tree
    restored = CODEC.decode(ServiceState, tree)
    assert restored.sums == {} and restored.rolling == svc.rolling
