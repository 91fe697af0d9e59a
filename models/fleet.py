"""Fleet facts exchanged between engines that each decide for a subset of the services.

An engine decides alone for its own services; only two blockers look across services
(FLEET_WIDE_ANOMALY: who else breaches in the window; RATE_LIMITED: rollbacks in the last hour,
fleet-wide and of the service). Engines therefore exchange, in event time, what their services
did that those two blockers read (``FleetFact``), in ``FleetReport`` s: each report says how far
its engine has got (``through``) and what happened since its previous report.

- a breaching window closed (``Phase.CLOSE`` at the window's end),
- a judgement that *may* roll back (a **claim**, ``Phase.JUDGE`` at the window's end), with
  what ``decide`` rules for each of the four cases (fleet-wide anomaly or not, budget spent or
  not) — so every engine can spend the budget in the same order without knowing the rest,
- a rollback ordered by an approved request (``Phase.CONTROL``).

Every engine folds the same facts in the same order (time, phase, service: the order of one
engine), so each gets the same budget and breach view at every window end. A judgement that
needs those facts at window end ``t`` waits until every other engine has reported
``through >= t`` (the barrier); every other judgement goes ahead at once. ``Solo`` is the
exchange of an engine that is the whole fleet (replay, one worker): nothing to wait for.
``FleetBoard`` connects engines in one process (tests, benchmarks); the Kafka worker publishes
reports to a topic (docs/worker.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple, Protocol

__all__ = [
    "Case",
    "FleetBoard",
    "FleetExchange",
    "FleetFact",
    "FleetReport",
    "Phase",
    "Seat",
    "Solo",
    "case_index",
]

NEVER = (False, False, False, False)


class Phase(IntEnum):
    """Phases of the work due at one instant, in order."""

    CLOSE = 0
    """Windows close (services in name order) and announce their breaches."""
    JUDGE = 1
    """Deployments whose window closed are judged (fleet facts are complete)."""
    CONTROL = 2
    """Control events apply: deploys, then approval responses, then expiries."""


class FleetFact(NamedTuple):
    """One thing a service did that other engines' fleet blockers read.

    Ordered as the engine orders its work: time, then phase, then service.
    """

    t: float
    """Its place in event time: the window's end (breach, claim), or when a rollback of an
    approved request counts (its time, or just after the reporter's previous report if it
    arrived later than that: see ``models.engine``)."""
    phase: Phase
    """CLOSE: a breaching window; JUDGE: a claim; CONTROL: a rollback of an approved request."""
    service: str
    start: float
    """The window's start (breach, claim); the rollback's own time (approved request)."""
    rolls_back: tuple[bool, bool, bool, bool] = NEVER
    """A claim: does the ruling roll back, indexed by ``case_index(fleet_wide, spent)``."""


Case = tuple[bool, bool]
"""(fleet-wide anomaly, rollback budget spent)."""


def case_index(fleet_wide: bool, spent: bool) -> int:
    """Index into ``FleetFact.rolls_back``."""
    return 2 * fleet_wide + spent


class FleetReport(NamedTuple):
    """An engine's progress: every fact before ``(through, JUDGE)`` and its claims at
    ``through`` have been reported (this report holds those since the previous one)."""

    through: float
    facts: tuple[FleetFact, ...]


class FleetExchange(Protocol):
    """How an engine shares its fleet facts and receives everyone else's."""

    def publish(self, report: FleetReport) -> None:
        """Send this engine's report to the others."""

    def collect(self, through: float) -> list[FleetReport] | None:
        """The others' reports not yet collected, once every other engine has reported
        through at least ``through``; None while one has not (the barrier holds)."""


class Solo:
    """The exchange of an engine that decides for the whole fleet: no one else to hear from."""

    def publish(self, report: FleetReport) -> None:
        """Nobody to tell."""

    def collect(self, through: float) -> list[FleetReport] | None:
        """Nothing to wait for."""
        return []


class FleetBoard:
    """Engines of one process exchanging fleet facts (the in-process fleet exchange).

    >>> board = FleetBoard(["a", "b"])
    >>> a, b = board.seat("a"), board.seat("b")
    >>> a.publish(FleetReport(60.0, ()))
    >>> b.collect(30.0), b.collect(90.0)
    ([FleetReport(through=60.0, facts=())], None)
    """

    def __init__(self, members: Iterable[str]) -> None:
        self.reports: dict[str, list[FleetReport]] = {m: [] for m in members}

    def seat(self, member: str) -> Seat:
        """The exchange of one member engine."""
        return Seat(self, member)

    def through(self, member: str) -> float:
        """How far ``member`` has reported (``-inf``: not yet)."""
        reports = self.reports[member]
        return reports[-1].through if reports else float("-inf")


class Seat:
    """One engine's place at a ``FleetBoard``."""

    def __init__(self, board: FleetBoard, member: str) -> None:
        self.board = board
        self.member = member
        self.read: dict[str, int] = dict.fromkeys(board.reports, 0)

    def publish(self, report: FleetReport) -> None:
        """Post the report for the other members."""
        self.board.reports[self.member].append(report)

    def collect(self, through: float) -> list[FleetReport] | None:
        """The other members' new reports, once each has reported through ``through``."""
        board = self.board
        others = [m for m in board.reports if m != self.member]
        if any(board.through(m) < through for m in others):
            return None
        new: list[FleetReport] = []
        for m in others:
            reports = board.reports[m]
            new.extend(reports[self.read[m]:])
            self.read[m] = len(reports)
        return new
