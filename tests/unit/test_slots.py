"""The worker mode's pieces that need no broker: its setting, its policy check, what a slot's
checkpoint keeps of its fleet barrier (docs/worker.md, "On Kafka: slots")."""

from __future__ import annotations

import pytest
import yaml

from rollguard.models.fleet import FleetFact, FleetReport, Phase
from rollguard.models.policy import Policy
from rollguard.streams.checkpoint import Positions
from rollguard.streams.fleet_topic import PartitionBarrier, barrier_snapshot, restore_barrier
from rollguard.streams.settings import ConfigError, check_slots_policy, load_settings
from tests.golden.test_golden import policy


def test_slots_default_to_one_and_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().scale_out_slots == 1
    monkeypatch.setenv("ROLLGUARD_SCALE_OUT_SLOTS", "0")
    with pytest.raises(ConfigError, match="ROLLGUARD_SCALE_OUT_SLOTS"):
        load_settings()
    monkeypatch.setenv("ROLLGUARD_SCALE_OUT_SLOTS", "3")
    assert load_settings().scale_out_slots == 3


def test_slots_need_one_lateness_for_the_fleet() -> None:
    rules = policy()
    check_slots_policy(load_settings(scale_out_slots=3), rules)
    with open("config/policy.yaml", "rb") as handle:
        data = yaml.safe_load(handle)
    name = next(iter(data["services"]))
    data["services"][name]["allowed_lateness_seconds"] = 25
    mixed = Policy.from_mapping(data, version="x", source="test")
    check_slots_policy(load_settings(), mixed)  # one slot: the single leader, any policy
    with pytest.raises(ConfigError, match="one allowed_lateness_seconds"):
        check_slots_policy(load_settings(scale_out_slots=2), mixed)


def test_a_checkpoint_keeps_the_barrier() -> None:
    barrier = PartitionBarrier("slot-0", {0, 2}, 4, lambda s: 1)
    fact = FleetFact(60.0, Phase.JUDGE, "cart", 30.0, (True, False, True, False))
    barrier.through = {1: 60.0, 3: 30.0}
    barrier.inbox = [FleetReport(60.0, (fact,))]
    positions = Positions()
    positions.next_offset[("deploys", 0)] = 7
    positions.fleet = barrier_snapshot(barrier, 42)
    restored = Positions.from_snapshot(positions.snapshot([]))
    assert restored.next_offset == {("deploys", 0): 7}
    again = PartitionBarrier("slot-0", {0, 2}, 4, lambda s: 1)
    assert restore_barrier(again, restored.fleet) == 42
    assert again.through == barrier.through and again.inbox == barrier.inbox
    assert restore_barrier(PartitionBarrier("slot-1", {1}, 4, lambda s: 1), None) is None
    with pytest.raises(ValueError, match="made with 4"):  # partitions were added: refused
        restore_barrier(PartitionBarrier("slot-0", {0, 2}, 6, lambda s: 1), restored.fleet)
