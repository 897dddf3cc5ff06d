"""The batch pipeline as tests build it: a stand-in for a consumed Kafka record and a BatchScreener on the bundled
schemas with an injected lookup (the seam between the domain and Redis)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aml_screener.screener.codec import DepositDecoder, RecordEncoder, WithdrawalDecoder
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import BatchScreener, DepositInput, Normalizer, Topics
from aml_screener.screener.schemas import (
    DEPOSIT_FLAGGED,
    SCREENING_DECISION,
    WITHDRAWAL_FLAGGED,
    LocalSchemaRepository,
    SchemaCatalog,
)
from aml_screener.screening.policy import DEFAULT_POLICY, Policy

CATALOG = SchemaCatalog()
REPOSITORY = LocalSchemaRepository(CATALOG)
TOPICS = Topics("decisions", "flagged", "dlq")
DEPOSIT_TOPIC = "deposits"


def deposit_input() -> DepositInput:
    """Deposits read from topic "deposits"; flagged to "deposits.flagged", dead letters to "deposits.dlq"."""
    flagged = CATALOG.current(DEPOSIT_FLAGGED)
    return DepositInput(
        topic=DEPOSIT_TOPIC,
        decoder=DepositDecoder(REPOSITORY, CATALOG, max_message_bytes=65_536),
        flagged_encoder=RecordEncoder(flagged.schema, flagged.schema_id),
        flagged="deposits.flagged",
        dead_letter="deposits.dlq",
        hold="deposits.held",
    )


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
    screener_version: str | None = "aml-screener test",
    policy: Callable[[], Policy] = lambda: DEFAULT_POLICY,
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
        deposits=deposit_input(),
        screener_version=screener_version,
        policy=policy,
    )
