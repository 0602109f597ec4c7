"""The writer thread lets go of a batch once it is written."""

from __future__ import annotations

import weakref

from consumers.batch_writer import _Batch, _Writer, _Written


class _TrackedBatch(_Batch):
    """A batch that can be watched with a weak reference (``_Batch`` has slots only)."""


def test_a_written_batch_is_not_kept_alive_by_the_idle_writer() -> None:
    writer = _Writer(lambda batch: _Written(rows=len(batch.messages), dead_letters=0), name="w")
    try:
        batch = _TrackedBatch([], {}, {})
        watched = weakref.ref(batch)
        writer.submit(batch)
        del batch
        assert writer.outcome(timeout=10) == _Written(rows=0, dead_letters=0)
        # The writer now waits for its next batch; the last one's records and rows are free.
        assert watched() is None
    finally:
        writer.close(timeout=10)
