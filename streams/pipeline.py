"""The worker's hand-off to the decision core: one entry point, ``Pipeline.process``.

Replay and the worker both go through this class, so they run the very same code: decode →
(approval check) → ``models.engine.step`` → sign commands.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rollguard.models.engine import (
    ApprovalCheck,
    EngineState,
    advance,
    last_bake_end,
    new_state,
    resume,
    step,
)
from rollguard.models.events import ApprovalRequest, ApprovalResponse, CoreOutput, RollbackCommand
from rollguard.models.policy import Policy
from rollguard.streams.approvers import ApproverDirectory, approval_check
from rollguard.streams.serde import InputRecord
from rollguard.streams.signing import key_id_of, sign_record

__all__ = ["Pipeline"]


class Pipeline:
    """Feeds valid input records to the decision core and returns what it decided."""

    def __init__(
        self,
        policy: Policy,
        *,
        approvers: ApproverDirectory | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        state: EngineState | None = None,
        max_clock_skew_seconds: float | None = None,
    ) -> None:
        self.policy = policy
        self.max_clock_skew_seconds = max_clock_skew_seconds
        self.approvers = approvers if approvers is not None else ApproverDirectory({})
        self.signing_key = signing_key
        self._key_id: str | None = None
        self.state = state if state is not None else new_state()
        self._counts: Counter[tuple[str, str]] = Counter()

    def process(self, record: InputRecord, raw: bytes = b"") -> list[CoreOutput]:
        """Hand one valid record to the core; return the output records to publish."""
        self._counts[(record.service or "(none)", record.type)] += 1
        check: ApprovalCheck | None = None
        if isinstance(record, ApprovalResponse):
            check = approval_check(raw, record, self.approvers, self.max_clock_skew_seconds)
        outputs = step(self.state, record, self.policy, approval_check=check)
        return self._signed(outputs) if outputs else outputs

    def advance(self, event_time: float) -> list[CoreOutput]:
        """Move the watermark without an event (idle inputs, end of a replay)."""
        return self._signed(advance(self.state, self.policy, event_time))

    @property
    def held(self) -> bool:
        """The core waits at a window end for the other engines' fleet facts: feed it nothing
        until ``resume`` lets it go on."""
        return self.state.held is not None

    def resume(self) -> list[CoreOutput]:
        """Go on after a wait for the fleet (see ``held``); what that decides."""
        return self._signed(resume(self.state, self.policy))

    def finish(self, newest: float) -> list[CoreOutput]:
        """The input has ended at event time ``newest``: let time run out every open bake.

        Nothing more will arrive, so replay lets event time run on until each deployment
        still under trial has reached the end of its bake (plus one window and the lateness),
        exactly as a live worker would decide if its telemetry fell silent. A release whose
        telemetry stopped therefore ends ``inconclusive`` instead of never being judged.
        Approval requests are not expired by this: their outcome needs a human, not time.
        """
        target = max(newest, last_bake_end(self.state, self.policy))
        return self.advance(target)

    def _signed(self, outputs: list[CoreOutput]) -> list[CoreOutput]:
        """Commands and approval requests signed by the gate's key, with its key id."""
        key = self.signing_key
        if key is None:
            return outputs
        if self._key_id is None:
            self._key_id = key_id_of(key.public_key())
        return [sign_record(o, key, self._key_id)
                if isinstance(o, RollbackCommand | ApprovalRequest) else o for o in outputs]

    def counts_by_service(self) -> dict[str, dict[str, int]]:
        by_service: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for (service, kind), count in sorted(self._counts.items()):
            by_service[service][kind] = count
        return dict(by_service)

    def counts_by_type(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for (_, kind), count in self._counts.items():
            total[kind] += count
        return dict(sorted(total.items()))
