"""Creating rollguard's topics (DESIGN §2): idempotent, with the configured partitions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from rollguard.streams.settings import Settings

__all__ = [
    "ARRIVAL_ORDERED",
    "SlotsMismatch",
    "TopicReport",
    "all_topics",
    "check_slots",
    "create_topics",
    "ensure_topics",
    "internal_topics",
]

log = logging.getLogger("rollguard.topics")

TOPIC_ALREADY_EXISTS = 36

ARRIVAL_ORDERED = {"message.timestamp.type": "LogAppendTime"}
"""Approval responses take the broker's time (DESIGN §6): their order and time are their
arrival, never what the approver's client claims (docs/security.md)."""


def all_topics(settings: Settings) -> list[str]:
    """Every topic of DESIGN §2 (and rollback.results), with the prefix."""
    return [settings.topic(name) for name in type(settings.topics).model_fields]


def internal_topics(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """The worker's own topics, named after its app id: name → (partitions, configs).

    The state changelog has one partition per slot (one writer each: the slot's lead; one
    slot by default) and is compacted, with small segments so that compaction keeps up with a
    checkpoint every second. The leader topic has one partition per slot too (the lease group
    hands them out). The fleet topic carries the fleet reports of the slots (docs/worker.md).
    """
    slots = settings.scale_out_slots
    state_configs = {
        "cleanup.policy": "compact",
        "segment.bytes": str(64 * 1024 * 1024),
        "min.cleanable.dirty.ratio": "0.2",
        "max.message.bytes": str(16 * 1024 * 1024),
    }
    # Fleet reports: one partition (every worker reads all of them, in one order); kept a day,
    # far longer than any worker may lag behind the barrier.
    fleet_configs = {"retention.ms": str(24 * 3600 * 1000)}
    return {
        settings.state_topic: (slots, state_configs),
        settings.leader_topic: (slots, {}),
        settings.fleet_topic: (1, fleet_configs),
    }


@dataclass(frozen=True)
class TopicReport:
    """What ``ensure_topics`` did: created, already there, refused by the broker (name → why)."""

    created: list[str]
    existing: list[str]
    refused: dict[str, str] = field(default_factory=dict)


async def create_topics(settings: Settings) -> tuple[list[str], list[str]]:
    """Create the missing topics; return (created, already existing).

    A topic the broker refuses to create is logged, not raised: on a secured cluster the worker
    may not create topics (nor see the ones it has no ACL on); the administrator creates them.
    """
    report = await ensure_topics(settings)
    for name, error in report.refused.items():
        log.warning("cannot create topic %s: %s (on a secured cluster an administrator "
                    "creates the topics; see docs/security.md)", name, error)
    return report.created, report.existing


async def ensure_topics(settings: Settings) -> TopicReport:
    """Create the missing topics and report per topic what the broker answered."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_client_options()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        public = {"max.message.bytes": str(max(1048576, settings.max_message_bytes * 4))}
        wanted = {name: (settings.partitions, public) for name in all_topics(settings)}
        responses = settings.topic("approval_responses")
        wanted[responses] = (settings.partitions, {**public, **ARRIVAL_ORDERED})
        wanted.update(internal_topics(settings))
        missing = [name for name in wanted if name not in existing]
        refused: dict[str, str] = {}
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name=name,
                        num_partitions=wanted[name][0],
                        replication_factor=settings.replication_factor,
                        topic_configs=wanted[name][1],
                    )
                    for name in missing
                ]
            )
            for name, code, *_ in response.topic_errors:
                if code == TOPIC_ALREADY_EXISTS:  # created meanwhile, or not visible to us
                    existing.add(name)
                elif code != 0:
                    refused[name] = for_code(code).__name__
        if responses in existing:
            await _ensure_configs(admin, responses, wanted[responses][1])
        created = [name for name in missing if name not in existing and name not in refused]
        return TopicReport(created, [name for name in wanted if name in existing], refused)
    finally:
        await admin.close()


async def _ensure_configs(admin: AIOKafkaAdminClient, topic: str, configs: dict[str, str]) -> None:
    """Give an existing topic ``configs`` (an approval-responses topic made before arrival
    order was required gets LogAppendTime). A client not allowed to alter it logs why."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    try:
        (response,) = await admin.describe_configs([resource])
        current = {entry[0]: entry[1] for entry in response.resources[0][4]}
        if all(current.get(name) == value for name, value in configs.items()):
            return
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                  configs=configs)])
        log.info("set %s on %s", configs, topic)
    except Exception as err:  # noqa: BLE001 - the worker refuses CreateTime approvals anyway
        log.warning("could not set %s on %s (%s); approval responses on it are dead-lettered "
                    "until it is set", ARRIVAL_ORDERED, topic, err)


class SlotsMismatch(RuntimeError):
    """The topics do not fit ``scale_out_slots`` (the worker refuses to start)."""


async def check_slots(settings: Settings) -> dict[str, int]:
    """Partition counts of the input topics; SlotsMismatch if the leader or state topic does not
    have ``scale_out_slots`` partitions, or (with more than one slot) the input topics are not
    co-partitioned (a service's events would reach different slots)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_client_options()
    )
    await admin.start()
    try:
        inputs = [settings.topic_prefix + name for name in settings.topics.inputs()]
        inputs.append(settings.topic("otlp_metrics"))
        names = [*inputs, settings.leader_topic, settings.state_topic]
        counts = {
            d["topic"]: len(d["partitions"])
            for d in await admin.describe_topics(names)
            if d.get("error_code", 0) == 0 and d["partitions"]
        }
    finally:
        await admin.close()
    slots = settings.scale_out_slots
    for name in (settings.leader_topic, settings.state_topic):
        found = counts.get(name)
        if found is not None and found != slots:
            raise SlotsMismatch(
                f"topic {name} has {found} partitions but ROLLGUARD_SCALE_OUT_SLOTS is {slots}: "
                "the slot count is chosen once per app id (changing it re-keys the state); "
                "use the slot count it was made with, or a new ROLLGUARD_APP_ID"
            )
    found_inputs = {name: counts[name] for name in inputs if name in counts}
    if slots > 1 and len(set(found_inputs.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in sorted(found_inputs.items()))
        raise SlotsMismatch(
            "with ROLLGUARD_SCALE_OUT_SLOTS > 1 every input topic must have the same number "
            f"of partitions (a service's events must reach one slot); found {listed}"
        )
    return found_inputs
