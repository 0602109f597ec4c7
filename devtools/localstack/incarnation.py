"""Offsets left in Postgres by a local broker that is gone.

The local broker keeps its log in memory: after a restart every topic is empty, while
Postgres still holds the consumer groups' positions into the old log. Followed, those
positions would skip the first records of the new log (the workers refuse them instead,
see ``consumers.log_range``; this keeps the demo and tests from inheriting them).

A broker started by the local stack is marked with a topic, :data:`MARKER_TOPIC`. When
``up`` finds a broker without the marker, the broker is a new incarnation: every stored
offset in the local Postgres points into a log that no longer exists, so it is forgotten
(each forgotten group logged), then the marker is created.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    NewTopic,
)
from psycopg import sql

from runtime.clients import postgres_connect
from runtime.settings import Settings

logger = logging.getLogger(__name__)

#: Exists on a broker the local stack has seen (and reconciled Postgres with).
MARKER_TOPIC = "_sidestream.local-broker-incarnation"
#: The table where consumer groups keep their positions (``consumers`` migration 0001).
OFFSETS_TABLE = "consumer_offsets"


def forget_offsets_of_previous_broker(settings: Settings, admin: AdminClient) -> list[str]:
    """On a broker without the marker, delete every ``consumer_offsets`` row of the local
    Postgres (every schema), then mark the broker. Returns one line per forgotten group.

    Raises:
        ConnectionError: the broker or the database did not answer.
    """
    try:
        topics = admin.list_topics(timeout=10).topics  # never by name: that auto-creates
    except KafkaException as exc:
        raise ConnectionError(f"local broker at {settings.kafka_bootstrap_servers}: {exc}") from exc
    if MARKER_TOPIC in topics:
        return []
    forgotten = _forget_offsets(settings)
    futures = admin.create_topics([NewTopic(MARKER_TOPIC, num_partitions=1)])
    try:
        futures[MARKER_TOPIC].result(timeout=10)
    except KafkaException as exc:
        raise ConnectionError(f"marking the local broker: {exc}") from exc
    for line in forgotten:
        logger.warning("%s", line)
    return forgotten


def _forget_offsets(settings: Settings) -> list[str]:
    with postgres_connect(settings, autocommit=True, connect_timeout=10) as conn:
        schemas = [
            row[0]
            for row in conn.execute(
                "SELECT table_schema FROM information_schema.tables"
                " WHERE table_name = %s ORDER BY 1",
                (OFFSETS_TABLE,),
            ).fetchall()
        ]
        lines = []
        for schema in schemas:
            rows = conn.execute(
                sql.SQL("DELETE FROM {} RETURNING group_id, topic, partition, next_offset").format(
                    sql.Identifier(schema, OFFSETS_TABLE)
                )
            ).fetchall()
            groups: dict[str, list[str]] = defaultdict(list)
            for group, topic, partition, offset in sorted(rows):
                groups[group].append(f"{topic}[{partition}]@{offset}")
            lines += [
                f"fresh local broker: forgot the offsets of group {group} in schema {schema}"
                f" into the previous broker's log ({', '.join(where)})"
                for group, where in groups.items()
            ]
    return lines
