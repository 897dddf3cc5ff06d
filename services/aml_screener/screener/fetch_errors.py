"""What to do when kafka-python's poll() fails on a record batch it cannot parse.

A record batch the client cannot read (compressed with a codec whose Python library is not installed, a batch
that fails its CRC check, a decompressor error) makes kafka-python 3.0.12 raise from `poll()` once, e.g.
`UnsupportedCodecError: Libraries for lz4 compression codec not found`. The failed batch's record iterator (a
generator that has just raised) stays the fetcher's "next in line". Every later `poll()` then spins for ever in
`Fetcher.fetched_records`: `take()` on the finished generator returns no records, `_append` returns 0 without
draining it, and `while records_remaining > 0` never ends. The loop thread burns a core inside `poll()`, never
comes back to look at the stop flag (SIGTERM is "ignored"), and nothing is decided or dead-lettered any more.

`discard_failed_batch` drops that stale iterator right after `poll()` raised. Nothing is lost: the partition's
position is still the offset of the unreadable batch (positions only advance over records handed out), so the
next fetch reads the batch again and `poll()` raises again: a repeating error that the consumer loop reports
(log line, /readyz not ready, /healthz unhealthy after the stall bound) and that SIGTERM can interrupt.

This touches two private attributes of kafka-python's consumer (`_fetcher`, `_next_partition_records`), checked
with getattr so that a kafka-python that renames them degrades to the old behaviour instead of failing.
"""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition
from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError


def discard_failed_batch(consumer: Any) -> TopicPartition | None:
    """Drop the fetcher's pending partition records after `poll()` raised; return their partition (or None).

    Safe for any poll error: records the fetcher held but had not handed out are fetched again from the
    partition's position."""
    fetcher = getattr(consumer, "_fetcher", None)
    pending = getattr(fetcher, "_next_partition_records", None)
    if pending is None:
        return None
    partition: TopicPartition = pending.topic_partition
    pending.drain()
    fetcher._next_partition_records = None  # type: ignore[union-attr]  # checked above via getattr
    return partition


def is_record_read_error(exc: BaseException) -> bool:
    """Errors that mean "the client cannot turn this batch into records" (as opposed to group or network errors,
    which the client recovers from by itself). Any non-Kafka exception out of poll() is a decompressor or parser
    failure."""
    return isinstance(exc, UnsupportedCodecError | CorruptRecordError) or not isinstance(exc, KafkaError)
