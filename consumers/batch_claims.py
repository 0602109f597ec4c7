"""Claiming partitions in Postgres and checking their stored offsets against the log.

On assignment the runtime claims its partitions (retrying an outage for as long as it
takes) and checks each stored offset against the partition's log
(:mod:`consumers.log_range`): an offset outside it is refused (the partition is held,
paused, and the worker is not ready) or reset to the log's start or end, as
``BatchConfig.offset_out_of_range`` says. A running worker repeats the check between
batches and takes a refused partition back once its stored offset was moved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from consumers.batch_recovery import _Recovery, _StopRequestedError
from consumers.log_range import OffsetOutOfRange, OutOfRangePolicy
from consumers.offsets import Claim, Fenced, TopicPartitionKey
from runtime.retry import is_transient

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Refused:
    """A partition assigned to us that we do not consume: its offset is outside the log."""

    condition: OffsetOutOfRange
    claim: Claim


class _Claiming(_Recovery):
    """Claims, the offset-range check on assignment and between batches, refusals."""

    def _claim(
        self, keys: list[TopicPartitionKey]
    ) -> tuple[dict[TopicPartitionKey, Claim], dict[TopicPartitionKey, _Refused]]:
        """Claim ``keys`` in Postgres and check their offsets against the log.

        Runs inside the assignment callback, so it must not raise for an outage: it
        retries with backoff for as long as it takes (past the retry deadline the worker
        reports not ready), and gives up only when a stop is requested.
        """
        attempt, started = 0, self._clock()
        while True:
            try:
                return self._claim_once(keys)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._failing(exc, "claiming partitions", since=started)
                delay = self._config.backoff.delay(attempt)
                if attempt == 0:
                    logger.warning("claiming partitions failed (%s); retrying", exc)
                if self._stop_requested.wait(delay):
                    raise _StopRequestedError from exc
                attempt += 1

    def _claim_once(
        self, keys: list[TopicPartitionKey]
    ) -> tuple[dict[TopicPartitionKey, Claim], dict[TopicPartitionKey, _Refused]]:
        with self._connection() as conn, conn.transaction():
            claims = self._offsets.claim(conn, keys)
        self._database_answered()
        return self._check_log(self._with_kafka_offsets(claims))

    def _with_kafka_offsets(
        self, claims: dict[TopicPartitionKey, Claim]
    ) -> dict[TopicPartitionKey, Claim]:
        """Where Postgres has no offset yet, start from Kafka's committed one, if any (as
        the consumer would by itself), so that it is checked against the log too."""
        missing = [TopicPartition(t, p) for (t, p), c in claims.items() if c.next_offset is None]
        if not missing:
            return claims
        try:
            committed = self._consumer.committed(missing, timeout=10)
        except KafkaException as exc:
            raise ConnectionError(f"reading the group's Kafka offsets: {exc}") from exc
        claims = dict(claims)
        for tp in committed:
            key = (tp.topic, tp.partition)
            if tp.error is None and tp.offset >= 0:
                claims[key] = Claim(tp.offset, claims[key].generation)
        return claims

    def _check_log(
        self, claims: dict[TopicPartitionKey, Claim]
    ) -> tuple[dict[TopicPartitionKey, Claim], dict[TopicPartitionKey, _Refused]]:
        """Split freshly claimed partitions into those to consume and those refused,
        resetting out-of-range offsets first when the policy says so."""
        stored = {key: c.next_offset for key, c in claims.items() if c.next_offset is not None}
        conditions = self._log_bounds.out_of_range(stored) if stored else {}
        claims = dict(claims)
        refused: dict[TopicPartitionKey, _Refused] = {}
        for key, condition in conditions.items():
            if self._config.offset_out_of_range is OutOfRangePolicy.REFUSE:
                refused[key] = _Refused(condition, claims.pop(key))
                continue
            try:
                claims[key] = self._reset(condition, claims[key])
            except Fenced as exc:
                # Someone claimed it after us: a rebalance is on its way; leave it be.
                logger.warning("%s; not resetting %s[%d]", exc, *key)
                claims.pop(key)
        return claims, refused

    def _reset(self, condition: OffsetOutOfRange, claim: Claim) -> Claim:
        """Policy earliest/latest: move the stored offset to the log's start or end."""
        policy = self._config.offset_out_of_range
        target = condition.start if policy is OutOfRangePolicy.EARLIEST else condition.end
        with self._connection() as conn, conn.transaction():
            claim = self._offsets.reset(conn, condition.key, claim, target)
        self._metrics.offset_resets.labels(self._sink.name, policy.value).inc()
        logger.warning(
            "%s: reset to %d (SIDESTREAM_CONSUMER_OFFSET_OUT_OF_RANGE=%s)",
            condition.describe(self._group_id),
            target,
            policy.value,
        )
        return claim

    def _refuse(self, key: TopicPartitionKey, refusal: _Refused) -> None:
        condition = refusal.condition
        self._refused[key] = refusal
        self._metrics.offset_out_of_range.labels(self._sink.name, key[0], str(key[1])).set(1)
        if self._announced.get(key) == condition.stored:
            logger.debug("%s: still refused", condition.describe(self._group_id))
            return
        self._announced[key] = condition.stored
        logger.error(
            "%s: not consuming it (SIDESTREAM_CONSUMER_OFFSET_OUT_OF_RANGE=refuse), "
            "worker not ready; to re-read what the log holds run `%s` "
            "(or set the policy to earliest/latest)",
            condition.describe(self._group_id),
            condition.fix_command(self._group_id),
        )

    def _recheck_refused(self) -> None:
        """A refused partition comes back once its stored offset was moved (its generation
        changed, e.g. by ``sidestream replay --force``) to a position inside the log."""
        with self._connection() as conn:
            current = self._offsets.generations(conn, self._refused)
        moved = [k for k, r in self._refused.items() if current.get(k) != r.claim.generation]
        if not moved:
            return
        claims, refused = self._claim_once(moved)
        for key, refusal in refused.items():
            self._refuse(key, refusal)  # still outside (a new line only if it moved)
        for key, claim in claims.items():
            if not self._start_at(key, claim, self._refused[key].condition):
                continue
            self._refused.pop(key, None)
            self._announced.pop(key, None)
            self._metrics.offset_out_of_range.remove(self._sink.name, key[0], str(key[1]))
            logger.info("%s[%d]: stored offset moved to %s; consuming", *key, claim.next_offset)

    def _check_positions(self) -> None:
        """Each consumed partition's stored position against its log: a topic deleted and
        recreated under a running worker (or its broker's data lost) leaves it past the
        new end, where a fetch may answer nothing at all."""
        positions = {key: self._stored[key] for key in self._claims if key in self._stored}
        if not positions:
            return
        conditions = self._log_bounds.out_of_range(positions)
        for key, condition in conditions.items():
            claim = self._claims[key]
            # Whatever was fetched for it came from a log we no longer trust.
            self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) != key]
            if self._config.offset_out_of_range is OutOfRangePolicy.REFUSE:
                self._claims.pop(key)
                self._stored.pop(key, None)
                self._consumer.pause([TopicPartition(*key)])
                self._refuse(key, _Refused(condition, claim))
                continue
            try:
                self._start_at(key, self._reset(condition, claim), condition)
            except Fenced as exc:
                logger.warning("%s; not resetting %s[%d]", exc, *key)

    def _start_at(self, key: TopicPartitionKey, claim: Claim, condition: OffsetOutOfRange) -> bool:
        """Consume ``key`` from its claimed offset (from the log's start if none).

        If the consumer cannot move there yet, the partition is held (paused, among the
        refused, with a generation no row has) so the next round claims it and tries again.
        """
        offset = claim.next_offset if claim.next_offset is not None else OFFSET_BEGINNING
        partition = TopicPartition(key[0], key[1], offset)
        try:
            self._consumer.seek(partition)
        except KafkaException as exc:
            self._consumer.pause([partition])
            self._claims.pop(key, None)
            self._stored.pop(key, None)
            self._refused[key] = _Refused(condition, Claim(claim.next_offset, -1))
            logger.warning("%s[%d]: cannot move to offset %d yet (%s); retrying", *key, offset, exc)
            return False
        self._claims[key] = claim
        if claim.next_offset is not None:
            self._stored[key] = claim.next_offset
        self._consumer.resume([partition])
        return True
