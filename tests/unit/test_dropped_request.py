"""Issue 11, item 6: a due approval request that waited for another trigger is never dropped.

The exact sequence: an error breach confirmed for two windows with a blocker (``data_writes``)
is due as an approval request; a latency departure starts in the second window, so the
request waits "while another trigger builds"; the error breach clears in the next window and
the latency departure does not persist. Before the fix the bake ended ``pass`` with no request
ever emitted (a contract deviation, DESIGN §1).
"""

from __future__ import annotations

from tests.unit.core_factories import actions, of_type, run
from tests.unit.test_engine import POLICY, D, recording


def _between(start: float, stop: float, bad: float, good: float):  # type: ignore[no-untyped-def]
    return lambda t: bad if start <= t < stop else good


def test_deferred_request_is_emitted_when_the_breach_clears_while_it_waits() -> None:
    levels = {
        # errors breach in [D+30, D+60) and [D+60, D+90), then clear
        "error_rate": _between(D + 30, D + 90, 0.2, 0.01),
        # latency departs (+60 %, below its 2x limit) in [D+60, D+90) only: an anomaly building
        "latency_p99_ms": _between(D + 60, D + 90, 320.0, 200.0),
    }
    outputs = run(recording(levels, data_writes=True), POLICY)
    got = actions(outputs)
    assert got[0][0] == "watch" and "THRESHOLD_BREACH" in got[0][1]
    asked = [reasons for action, reasons in got if action == "request_approval"]
    assert asked, f"the due request was dropped: {got}"
    assert "THRESHOLD_BREACH" in asked[0] and "DATA_WRITES" in asked[0]
    assert ("pass", ()) not in got
    (request,) = of_type(outputs, "approval_request")
    assert {r.code for r in request.reasons} >= {"THRESHOLD_BREACH", "DATA_WRITES"}
    assert not of_type(outputs, "rollback_command")
    # It is made at the close of the window after the due one, not later.
    decided = next(d for d in of_type(outputs, "decision") if d.action == "request_approval")
    assert decided.ts == D + 120
