"""Creating rollguard's topics (DESIGN §2): idempotent, with the configured partitions."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.settings import Settings

__all__ = ["all_topics", "create_topics", "internal_topics"]


def all_topics(settings: Settings) -> list[str]:
    """Every topic of DESIGN §2 (and rollback.results), with the prefix."""
    return [settings.topic(name) for name in type(settings.topics).model_fields]


def internal_topics(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """The worker's own topics, named after its app id: name → (partitions, configs).

    The state changelog has one partition (one writer: the leader) and is compacted, with
    small segments so that compaction keeps up with a checkpoint every second.
    """
    state_configs = {
        "cleanup.policy": "compact",
        "segment.bytes": str(64 * 1024 * 1024),
        "min.cleanable.dirty.ratio": "0.2",
        "max.message.bytes": str(16 * 1024 * 1024),
    }
    return {settings.state_topic: (1, state_configs), settings.leader_topic: (1, {})}


async def create_topics(settings: Settings) -> tuple[list[str], list[str]]:
    """Create the missing topics; return (created, already existing)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_client_options()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        public = {"max.message.bytes": str(max(1048576, settings.max_message_bytes * 4))}
        wanted = {name: (settings.partitions, public) for name in all_topics(settings)}
        wanted.update(internal_topics(settings))
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics(
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
        return missing, [name for name in wanted if name in existing]
    finally:
        await admin.close()
