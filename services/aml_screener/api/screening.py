"""What the pre-screen API answers, computed with the stream's own code: no screening logic lives here.

- Addresses: the pipeline's Normalizer (key and related keys), one watchlist round trip (WatchlistLookup, the same
  fail-closed checks), the pipeline's verdict_of, and the policy's action for a withdrawal.
- A withdrawal: encoded as the WithdrawalRequested record the exchange would produce and put through the stream's
  BatchScreener (prepare + complete: decode, normalize, look up, decide, apply the policy, encode the outputs) as a
  batch of one, from a synthetic source position (topic ``aml-screener-api``, partition and offset -1). So the
  decision is the one the stream makes, with the same decision id (event id + watchlist version); optionally its
  outputs are sent to the decisions (and flagged) topics, exactly as the stream would send them.

A watchlist that cannot be consulted raises LookupUnavailable (the HTTP layer answers 503 with the reason): nothing
is ever answered "not listed" without a watchlist version in hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aml_screener.api.models import AddressQuery, WithdrawalRequest
from aml_screener.screener.codec import EventEncoder
from aml_screener.screener.errors import DecodeError
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import (
    BatchScreener,
    Normalizer,
    OutputRecord,
    lookup_keys,
    verdict_of,
)
from aml_screener.screening.policy import Policy, apply_policy
from aml_screener.screening.records import Decision, Direction

# The source position of a decision made by the API (no Kafka record behind it): this topic name, partition and
# offset -1. A reader of the decisions topic tells the pre-screen from the stream's decision by it.
API_SOURCE_TOPIC = "aml-screener-api"


@dataclass(frozen=True, slots=True)
class _ApiRecord:
    """A withdrawal handed to the stream's pipeline by the API (the pipeline's InputRecord protocol)."""

    value: bytes
    timestamp: int
    topic: str = API_SOURCE_TOPIC
    partition: int = -1
    offset: int = -1
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] | None = None


class InvalidWithdrawal(Exception):
    """The stream's decoder refused the withdrawal (a limit the request models do not express)."""

    def __init__(self, error: DecodeError) -> None:
        super().__init__(error.detail)
        self.reason = error.reason.value
        self.detail = error.detail


@dataclass(frozen=True, slots=True)
class ScreenedWithdrawal:
    decision: Decision
    outputs: list[OutputRecord]  # what the stream would send: the decision, and a flag when flagged


class PreScreener:
    """Answers the API's two questions. Thread-compatible: the lookup's Redis client is, the rest holds no state
    that requests share beyond the normalizer's caches (dict operations)."""

    def __init__(
        self,
        *,
        lookup: Callable[[Sequence[str]], LookupResult],
        batch: BatchScreener,
        event_encoder: EventEncoder,
        policy: Callable[[], Policy],
    ) -> None:
        self.lookup = lookup
        self.batch = batch
        self.normalize: Normalizer = batch.normalize  # one cache for both endpoints
        self.event_encoder = event_encoder
        self.policy = policy

    def addresses(self, queries: Sequence[AddressQuery]) -> dict[str, Any]:
        """The answer to POST /v1/screen/addresses (a JSON-ready dict). Raises LookupUnavailable."""
        screened = [self.normalize.screen(query.network, query.address) for query in queries]
        result = self.lookup(lookup_keys(screened))
        policy = self.policy()
        results = []
        for query, address in zip(queries, screened, strict=True):
            verdict = verdict_of(address, result.matches, result.overridable)
            applied = apply_policy(
                policy,
                direction=Direction.WITHDRAWAL,
                outcome=verdict.outcome,
                matches=verdict.matches,
                asset=query.asset or "",
                usd_value=Decimal(query.usd_value) if query.usd_value is not None else None,
            )
            results.append(
                {
                    "network": query.network,
                    "address": query.address,
                    "key": address.key,
                    "listed": bool(verdict.matches),
                    "outcome": verdict.outcome.value,
                    "reason": verdict.reason,
                    "severity": applied.severity,
                    "action": applied.action.value,
                    "policy_rule": applied.rule,
                    "matches": list(verdict.matches),
                    "allowlisted": list(verdict.allowlisted),
                    "overridden": list(verdict.overridden),
                    "checked_keys": [{"key": key, "relation": relation} for key, relation in address.related],
                    "shadow": [shadow.as_record() for shadow in applied.shadow],
                }
            )
        return {
            "watchlist_version": result.version,
            "watchlist_digest": result.digest,
            "policy_version": policy.version,
            "results": results,
        }

    def withdrawal(self, request: WithdrawalRequest, received_ms: int | None = None) -> ScreenedWithdrawal:
        """The stream's decision for this withdrawal. Raises LookupUnavailable, or InvalidWithdrawal."""
        event = {
            "event_id": request.event_id,
            "exchange_id": request.exchange_id,
            "account_id": request.account_id,
            "asset": request.asset,
            "network": request.network,
            "destination_address": request.destination_address,
            "destination_tag": request.destination_tag,
            "amount": request.amount_decimal(),
            "usd_value": Decimal(request.usd_value) if request.usd_value is not None else None,
            "requested_at": request.requested_at_ms(),
            "metadata": request.metadata,
        }
        record = _ApiRecord(
            self.event_encoder.encode(event),
            received_ms if received_ms is not None else time.time_ns() // 1_000_000,
        )
        prepared = self.batch.prepare([record])
        if prepared.dead_letters:
            raise InvalidWithdrawal(prepared.dead_letters[0][1])
        completed = self.batch.complete(prepared)
        (decided,) = completed.decided
        assert decided.decision is not None, "the API's BatchScreener keeps its decisions (keep_decisions=True)"
        return ScreenedWithdrawal(decided.decision, completed.outputs)
