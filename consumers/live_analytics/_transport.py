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
queues right after cannot drop records read from those offsets (`_Consumer.perform_seek`),
commits what was acknowledged before faust forgets it at a rebalance
(`_Consumer.on_partitions_revoked`), and can hand the records of chosen topics to a
handler a fetch at a time instead of to faust's agents one record at a time
(`deliver_in_batches`, `_Consumer._drain_messages`).

Used through the broker URL scheme `SCHEME` (``sidestream-kafka://host:port``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ClassVar, cast

import aiokafka  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import (
    AIOKafkaConsumerThread,
    Consumer,
    credentials_to_aiokafka_auth,
    server_list,
)
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP, Message
from faust.types.transports import ConsumerT
from mode import Service

__all__ = [
    "SCHEME",
    "BatchDelivery",
    "Transport",
    "brokers",
    "deliver_in_batches",
    "exact_end_offsets",
    "register",
]

logger = logging.getLogger(__name__)

SCHEME = "sidestream-kafka"
#: Records handed over between two yields to the event loop (faust's value).
_YIELD_EVERY = 100
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


class BatchDelivery:
    """Where a consumer hands the records of `topics`: to `handle`, a list at a time.

    `handle` gets at most `batch_max` records, in fetch order, and must acknowledge each
    record it is done with (``consumer.ack``); faust commits acknowledged offsets only.
    Each list is tracked as faust tracks records given to agents, so a rebalance waits
    until it is acknowledged before it commits (``stream_wait_empty``), and it runs
    shielded from the fetcher's cancellation at a stop: `close` (call it before stopping
    the app) lets the list in hand finish and hands over no more.
    """

    def __init__(
        self,
        topics: frozenset[str],
        handle: Callable[[list[Message]], Awaitable[None]],
        *,
        batch_max: int,
    ) -> None:
        self.topics = topics
        self._handle = handle
        self._batch_max = batch_max
        self._in_hand: asyncio.Future[None] | None = None
        self._closed = False

    async def hand_over(self, consumer: Consumer, records: list[Message]) -> None:
        """Hand `records` (one fetch of `topics`) to the handler, `batch_max` at a time."""
        for start in range(0, len(records), self._batch_max):
            if self._closed or not consumer.flow_active:
                return  # not acknowledged: read again after the rebalance or the restart
            batch = records[start : start + self._batch_max]
            for record in batch:
                consumer.track_message(record)
            self._in_hand = asyncio.ensure_future(self._handle(batch))
            await asyncio.shield(self._in_hand)

    async def close(self) -> None:
        """Hand over nothing more; wait for the list in hand to be processed."""
        self._closed = True
        in_hand = self._in_hand
        if in_hand is not None and not in_hand.done():
            await asyncio.wait([in_hand])


_BATCHES: weakref.WeakKeyDictionary[Any, BatchDelivery] = weakref.WeakKeyDictionary()


def deliver_in_batches(app: Any, delivery: BatchDelivery) -> None:
    """Make `app`'s consumer (this transport's) hand `delivery.topics` to `delivery`.

    The topics must still be subscribed (e.g. by an agent); no record of them reaches it.
    """
    _BATCHES[app] = delivery


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

    async def _drain_messages(self, fetcher: Any) -> None:
        """faust's fetch loop, with the records of batch topics handed over a fetch at a time.

        Records of topics registered with `deliver_in_batches` skip faust's per-record path
        (the conductor, the agent's queue and stream, one ``wait_first`` — four tasks and an
        ``asyncio.wait`` — per record, the sensors per event): together most of the live
        analytics worker's time. The read-offset filter and the gap tracking are faust's,
        per record; records of other topics (the changelogs, while tables recover) go
        through faust's path unchanged.

        A fetch's batch records are handed to `BatchDelivery.hand_over` once the fetch is
        read, unless the flow was suspended (a rebalance) or the generation changed in the
        meantime: faust then seeks to the committed offsets and they are read again, as
        faust's clearing of the agents' queues does with records it dropped.
        """
        service = cast(Service, self)
        consumer_should_stop = service._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        batches = _BATCHES.get(self.app)
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                generation = self.app.consumer_generation_id
                records = self.getmany(timeout=1.0)
                # As faust: getmany may return at once in a loop; let the loop breathe.
                await self.sleep(0)
                if not self.should_stop:
                    taken = await self._read_fetch(records, batches)
                    if (
                        taken
                        and batches is not None
                        and self.flow_active
                        and generation == self.app.consumer_generation_id
                    ):
                        await batches.hand_over(self, taken)
                    commit_every = self._commit_every
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    async def _read_fetch(
        self, records: AsyncIterator[tuple[TP, Message]], batches: BatchDelivery | None
    ) -> list[Message]:
        """faust's loop body for one fetch; returns the records of batch topics, in order."""
        callback = self.callback
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        batch_topics = frozenset() if batches is None else batches.topics
        taken: list[Message] = []
        since_yield = 0
        async for tp, message in records:
            since_yield += 1
            if since_yield > _YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            read = read_offsets[tp]
            if read is not None and offset < read:
                continue  # read already (faust drops it the same way)
            if read and offset - read > 1 and acks_enabled_for(message.topic):
                # A hole in the offsets (compaction, transaction markers): acknowledged
                # as a range, so that commits can move past it.
                await self._add_gap(tp, read + 1, offset)
            if message.topic in batch_topics:
                taken.append(message)
            else:
                await cast(Service, self).wait_first(callback(message), self.suspend_flow.wait())
            read_offsets[tp] = offset
        return taken

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit what was acknowledged, then let faust handle the revocation.

        faust (0.15.3, `Consumer.on_partitions_revoked`; upstream faust-streaming issue
        #502) first forgets the acknowledged offsets of the revoked partitions, and only
        then waits for the streams and commits: records acknowledged since the last
        periodic commit were never committed, and the partition's next owner read them
        again — after their counts had reached the changelog it restores, so they were
        counted twice (seen in the rebalance test: ~15% too many in the windows open at
        the rebalance). Committing first makes a rebalance as exact as a graceful stop.
        """
        if revoked and not self.should_stop:
            # A commit in flight took its offsets before the latest acknowledgements:
            # let it finish, then commit again.
            await self.maybe_wait_for_commit_to_finish()
            await self.commit()
        await super().on_partitions_revoked(revoked)

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
