"""The peer of the ``peer`` bench section: quixstreams' ``PostgreSQLSink`` draining a topic.

Run by the section as a script with the Python of its own virtualenv (``.venv-peer/``, from
``devtools/bench/peer-requirements.lock``), never imported by Sidestream: quixstreams pins
confluent-kafka and pydantic versions of its own. It therefore imports nothing of this
project.

It consumes ``--topic`` (JSON values, one flat object per audit event whose keys are the
table's columns) with a quixstreams ``Application`` and writes every record into
``--schema``.``--table`` through ``PostgreSQLSink`` (psycopg2 ``execute_values``), adding
the record's Kafka partition and offset as the ``kafka_partition`` / ``kafka_offset``
columns, as the audit sink does. It stops once ``--rows`` rows were written and prints one
JSON line: rows written, rows of the first flush, the CLOCK_MONOTONIC moments at which the
first and the last flush ended, and the number of flushes. Timing starts at the end of the
first flush, so the consumer-group join and the first checkpoint are excluded, as they are
for the audit sink.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from quixstreams import Application
from quixstreams.sinks.community.postgresql import PostgreSQLSink


class _TimedSink(PostgreSQLSink):  # type: ignore[misc]
    """``PostgreSQLSink`` as shipped, plus counters and the Kafka coordinates in each row."""

    def __init__(self, *, rows: int, on_done: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._target = rows
        self._on_done = on_done
        self.written = 0
        self.first_rows = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.flushes = 0

    def add(
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: Any,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        # The audit table keeps where each row came from; the sink is handed both.
        value["kafka_partition"] = partition
        value["kafka_offset"] = offset
        super().add(value, key, timestamp, headers, topic, partition, offset)

    def flush(self) -> None:
        pending = sum(batch.size for batch in self._batches.values())
        super().flush()  # one committed transaction per partition's batch
        now = time.monotonic()
        self.flushes += 1
        self.written += pending
        if self.first_at is None:
            self.first_at, self.first_rows = now, pending
        self.last_at = now
        if self.written >= self._target:
            self._on_done()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="peer_quix_child.py")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--primary-key", required=True, help="comma-separated columns")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--commit-every", type=int, required=True)
    parser.add_argument("--schema-auto-update", choices=("on", "off"), default="on")
    parser.add_argument("--consumer-config", default="{}", help="librdkafka keys, JSON")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--idle-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_every=args.commit_every,
        consumer_extra_config=json.loads(args.consumer_config),
        state_dir=args.state_dir,
    )
    sink = _TimedSink(
        rows=args.rows,
        on_done=app.stop,
        host=args.host,
        port=args.port,
        dbname=args.dbname,
        user=args.user,
        # From the environment: a password never shows in the process list.
        password=os.environ.get("BENCH_PEER_PGPASSWORD", ""),
        table_name=args.table,
        schema_name=args.schema,
        schema_auto_update=args.schema_auto_update == "on",
        primary_key_columns=args.primary_key.split(","),
        # The rows are the audit sink's: no extra __key / timestamp columns.
        include_metadata=False,
    )
    app.dataframe(app.topic(args.topic, value_deserializer="json")).sink(sink)
    # Bounded: stops once every row is written, or after idle_timeout s without a message.
    app.run(timeout=args.idle_timeout, collect=False)
    print(
        json.dumps(
            {
                "rows": sink.written,
                "first_rows": sink.first_rows,
                "first_at": sink.first_at,
                "last_at": sink.last_at,
                "flushes": sink.flushes,
            }
        ),
        flush=True,
    )
    return 0 if sink.written >= args.rows else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
