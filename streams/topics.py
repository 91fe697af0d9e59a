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
    "TopicReport",
    "all_topics",
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

    The state changelog has one partition (one writer: the leader) and is compacted, with
    small segments so that compaction keeps up with a checkpoint every second. The fleet
    topic carries the fleet reports of partition-parallel workers (docs/worker.md).
    """
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
        settings.state_topic: (1, state_configs),
        settings.leader_topic: (1, {}),
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
