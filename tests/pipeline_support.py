"""The batch pipeline as tests build it: a stand-in for a consumed Kafka record and a BatchScreener on the bundled
schemas with an injected lookup (the seam between the domain and Redis)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aml_screener.screener.codec import RecordEncoder, WithdrawalDecoder
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import BatchScreener, Normalizer, Topics
from aml_screener.screener.schemas import SCREENING_DECISION, WITHDRAWAL_FLAGGED, LocalSchemaRepository, SchemaCatalog

CATALOG = SchemaCatalog()
REPOSITORY = LocalSchemaRepository(CATALOG)
TOPICS = Topics("decisions", "flagged", "dlq")


@dataclass(frozen=True)
class Record:
    """What the pipeline reads of a consumed record (kafka-python's ConsumerRecord has the same fields)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None = None


def batch_screener(
    lookup: Callable[[Sequence[str]], LookupResult],
    *,
    topics: Topics = TOPICS,
    instance_id: str = "test",
    clock_us: Callable[[], int] = lambda: 1_700_000_000_000_000,  # decisions carry a fixed decided_at
) -> BatchScreener:
    decision, flagged = CATALOG.current(SCREENING_DECISION), CATALOG.current(WITHDRAWAL_FLAGGED)
    return BatchScreener(
        decoder=WithdrawalDecoder(REPOSITORY, CATALOG, max_message_bytes=65_536),
        decision_encoder=RecordEncoder(decision.schema, decision.schema_id),
        flagged_encoder=RecordEncoder(flagged.schema, flagged.schema_id),
        topics=topics,
        instance_id=instance_id,
        lookup=lookup,
        normalizer=Normalizer(),
        clock_us=clock_us,
    )
