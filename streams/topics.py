"""Creating rollguard's topics (DESIGN §2): idempotent, with the configured partitions."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.settings import Settings

__all__ = ["all_topics", "create_topics"]


def all_topics(settings: Settings) -> list[str]:
    """Every topic of DESIGN §2 (and rollback.results), with the prefix."""
    return [settings.topic(name) for name in type(settings.topics).model_fields]


async def create_topics(settings: Settings) -> tuple[list[str], list[str]]:
    """Create the missing topics; return (created, already existing)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_client_options()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = all_topics(settings)
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        name=name,
                        num_partitions=settings.partitions,
                        replication_factor=settings.replication_factor,
                        topic_configs={
                            "max.message.bytes": str(max(1048576, settings.max_message_bytes * 4))
                        },
                    )
                    for name in missing
                ]
            )
        return missing, [name for name in wanted if name in existing]
    finally:
        await admin.close()
