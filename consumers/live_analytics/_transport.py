"""faust's Kafka transport with exact end offsets for table recovery, and a consumer that
loses no source record when it resumes after a table recovery.

faust restores a table by reading its changelog up to the end offsets it asks for before
it starts (``ListOffsets``), and stops there. The local broker (tansu 0.6) answers
``ListOffsets`` with the base offset of the last record *batch* plus one, not the offset
after the last record: a restore would stop short and silently drop the last batch of
changes (seen here: a changelog holding 500 records reported 499). A fetch response does
carry the true high watermark, so this transport fetches once from just before the
reported end and takes the larger of the two. Against any Kafka both agree and this costs
one fetch per changelog partition and restore.

Its consumer also stops delivering records while faust seeks the source partitions to
their committed offsets at the end of a recovery, so that faust's clearing of the agents'
queues right after cannot drop records read from those offsets (`_Consumer.perform_seek`).

Used through the broker URL scheme `SCHEME` (``sidestream-kafka://host:port``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import ClassVar, cast

import aiokafka  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
from faust.transport import drivers
from faust.transport.drivers.aiokafka import (
    AIOKafkaConsumerThread,
    Consumer,
    credentials_to_aiokafka_auth,
    server_list,
)
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP
from faust.types.transports import ConsumerT

__all__ = ["SCHEME", "Transport", "brokers", "exact_end_offsets", "register"]

logger = logging.getLogger(__name__)

SCHEME = "sidestream-kafka"
_PROBE_TIMEOUT_S = 10.0


async def exact_end_offsets(
    new_probe: Callable[[], aiokafka.AIOKafkaConsumer],
    reported: Mapping[TP, int | None],
    *,
    timeout_s: float = _PROBE_TIMEOUT_S,
) -> dict[TP, int | None]:
    """`reported` end offsets, raised to the high watermark of a fetch where it is higher.

    `new_probe` makes a fresh consumer without a group (only called when a partition is
    not empty); it is started and stopped here. A partition whose fetch does not answer
    within `timeout_s` keeps its reported offset.
    """
    exact: dict[TP, int | None] = dict(reported)
    todo = {
        TopicPartition(tp.topic, tp.partition): (tp, end)
        for tp, end in reported.items()
        if end is not None and end > 0
    }
    if not todo:
        return exact
    probe = new_probe()
    await probe.start()
    try:
        probe.assign(list(todo))
        for tp, (_, end) in todo.items():
            probe.seek(tp, end - 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = set(todo)
        while pending and loop.time() < deadline:
            await probe.getmany(*pending, timeout_ms=200, max_records=1)
            for tp in list(pending):
                highwater = probe.highwater(tp)
                if highwater is not None:
                    original, end = todo[tp]
                    exact[original] = max(end, highwater)
                    pending.discard(tp)
        if pending:
            logger.warning(
                "no fetch answered for %s within %.0f s: keeping the reported end offsets",
                sorted(pending),
                timeout_s,
            )
    finally:
        await probe.stop()
    corrected = {tp: (reported[tp], end) for tp, end in exact.items() if end != reported[tp]}
    if corrected:
        logger.info("end offsets corrected by a fetch (reported, exact): %s", corrected)
    return exact


class _ConsumerThread(AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return reported
        conf = self.app.conf
        transport = cast(AIOKafkaTransport, self.transport)

        def new_probe() -> aiokafka.AIOKafkaConsumer:
            return aiokafka.AIOKafkaConsumer(
                bootstrap_servers=server_list(transport.url, transport.default_port),
                client_id=f"{conf.broker_client_id}-end-offsets",
                enable_auto_commit=False,
                request_timeout_ms=int(conf.broker_request_timeout * 1000.0),
                **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
            )

        exact = await exact_end_offsets(new_probe, reported)
        return cast(Mapping[TP, int], exact)


class _Consumer(Consumer):
    async def perform_seek(self) -> None:
        """Seek the assigned partitions to their committed offsets, delivering nothing
        from here until faust resumes the flow.

        faust (0.15.3, `Recovery.on_recovery_completed` and `_resume_streams`; upstream
        faust-streaming issue #596) resumes the source partitions, calls this, then
        ``app.flow_control.resume()``, which *empties every agent's queue*, and only then
        ``resume_flow()``. Its fetcher keeps running meanwhile (it was started to read the
        changelogs), so records fetched from the committed offset on were put in the
        agent's queue and thrown away by that clear, while the consumer's position had
        already moved past them: never counted, never read again, and committed over
        once the records after them were acknowledged (seen in the restart test: the
        first record after the committed offset of a source partition, one per restart).
        With the flow stopped first nothing reaches a queue between the seek and the
        clear; ``resume_flow()`` then starts delivery at the committed offsets. Records
        delivered before the seek are either cleared (and read again after it) or
        already taken by the agent (then read again and left out by the processor's
        redelivery filter).
        """
        self.stop_flow()
        await super().perform_seek()

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(AIOKafkaTransport):
    """faust's aiokafka transport, with `exact_end_offsets` for table recovery and a
    consumer that loses no record when it resumes after one."""

    Consumer: ClassVar[type[ConsumerT]] = _Consumer


def register() -> None:
    """Make ``sidestream-kafka://`` broker URLs use this transport (idempotent)."""
    drivers.TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")


def brokers(bootstrap_servers: str) -> list[str]:
    """faust broker URLs for a ``host:port,host:port`` list."""
    return [f"{SCHEME}://{server.strip()}" for server in bootstrap_servers.split(",")]
