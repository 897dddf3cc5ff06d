"""The pre-screen API's requests and answers: pydantic models, the one source of the OpenAPI document's schemas.

Requests are validated strictly (no coercion of a number into a string or back, no unknown fields), with the limits
of the stream's decoder (codec.FIELD_MAX_CHARS and friends), so a withdrawal the API accepts is one the stream would
decode, and a problem is reported with the path of the field (``addresses[3].network``). The decision in an answer
is the stream's ScreeningDecision record itself (records.Decision), described by the same TypedDicts.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from aml_screener.screener.codec import (
    FIELD_MAX_CHARS,
    METADATA_KEY_MAX_CHARS,
    METADATA_MAX_ENTRIES,
    METADATA_VALUE_MAX_CHARS,
)
from aml_screener.screening.records import CheckedKey, Decision, Match, ShadowResult

# Decimal forms of WithdrawalRequested's amount (decimal(38, 18): up to 20 integer digits) and usd_value
# (decimal(20, 2)), as JSON strings so no precision is lost to a float. ASCII digits only ([0-9], not \d, which
# matches other scripts' digits in Python and Rust regular expressions).
AMOUNT_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,18})?$"
USD_PATTERN = r"^[0-9]{1,18}(\.[0-9]{1,2})?$"
# The most pairs any deployment may allow in one request (AML_API_MAX_BATCH is at most this; default 1,000).
MAX_BATCH_LIMIT = 10_000


def _text(field: str, description: str) -> Any:
    return Field(min_length=1, max_length=FIELD_MAX_CHARS[field], description=description)


Network = Annotated[
    str,
    StringConstraints(min_length=1, max_length=FIELD_MAX_CHARS["network"]),
    Field(
        description="The network (chain) the address is on, e.g. ethereum, tron, bitcoin, solana (docs/watchlist.md)."
    ),
]
Address = Annotated[
    str,
    StringConstraints(min_length=1, max_length=FIELD_MAX_CHARS["destination_address"]),
    Field(description="The address as the customer typed it; every spelling of one destination is one key."),
]
Asset = Annotated[
    str,
    StringConstraints(min_length=1, max_length=FIELD_MAX_CHARS["asset"]),
    Field(description="Asset ticker, e.g. USDT (the policy's asset rules use it)."),
]
UsdValue = Annotated[
    str,
    StringConstraints(pattern=USD_PATTERN),
    Field(description='USD value as a decimal string with at most 2 decimals, e.g. "1250.00".'),
]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class AddressQuery(_Request):
    """One address to screen. ``asset`` and ``usd_value`` only matter to policy rules that look at them."""

    network: Network
    address: Address
    asset: Asset | None = None
    usd_value: UsdValue | None = None


class AddressesRequest(_Request):
    addresses: list[AddressQuery] = Field(
        min_length=1,
        max_length=MAX_BATCH_LIMIT,
        description="The pairs to screen, answered in this order (at most AML_API_MAX_BATCH, default 1,000).",
    )


class WithdrawalRequest(_Request):
    """A withdrawal request: the fields of the WithdrawalRequested event the exchange will put on the input topic."""

    event_id: str = _text("event_id", "The withdrawal's id (the stream's decision for it has the same decision id).")
    exchange_id: str = _text("exchange_id", "The exchange (tenant).")
    account_id: str = _text("account_id", "The customer account (recorded, never logged).")
    asset: Asset
    network: Network
    destination_address: Address
    destination_tag: str | None = Field(
        None, max_length=FIELD_MAX_CHARS["destination_tag"], description="Memo or tag (XRP, XLM, EOS...)."
    )
    amount: str = Field(
        pattern=AMOUNT_PATTERN, description='Amount in the asset as a decimal string, at most 18 decimals: "0.25".'
    )
    usd_value: UsdValue | None = None
    requested_at: AwareDatetime = Field(description="When the customer asked, RFC 3339 with an offset.")
    metadata: (
        dict[
            Annotated[str, StringConstraints(max_length=METADATA_KEY_MAX_CHARS)],
            Annotated[str, StringConstraints(max_length=METADATA_VALUE_MAX_CHARS)],
        ]
        | None
    ) = Field(None, max_length=METADATA_MAX_ENTRIES, description="Free-form strings carried to a flag.")

    def amount_decimal(self) -> Decimal:
        return Decimal(self.amount)

    def requested_at_ms(self) -> int:
        return _epoch_ms(self.requested_at)


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class AddressResult(BaseModel):
    """The screening of one pair: the same normalization, lookup and verdict as the stream's, and the action the
    policy would take on a withdrawal to it."""

    network: str
    address: str = Field(description="As sent.")
    key: str | None = Field(description="The normalized lookup key (e.g. evm:0x...); null when unscreenable.")
    listed: bool = Field(description="True when a watchlist entry counts against the address (outcome FLAGGED).")
    outcome: Literal["CLEAR", "FLAGGED", "UNSCREENABLE"]
    reason: str | None = Field(description="Why an address is UNSCREENABLE (invalid_address:..., unsupported_network).")
    severity: str | None
    action: str = Field(description="The policy's action for a withdrawal to it: reject, hold or allow.")
    policy_rule: str
    matches: list[Match] = Field(description="Every entry that counts, with its list, provenance and match_type.")
    allowlisted: list[Match]
    overridden: list[Match] = Field(description="Matches the exchange's allowlist downgraded.")
    checked_keys: list[CheckedKey] = Field(description="Keys of related listings looked up too (TRON twin, ...).")
    shadow: list[ShadowResult]


class AddressesAnswer(BaseModel):
    watchlist_version: str
    watchlist_digest: str | None
    policy_version: str
    results: list[AddressResult]


class WithdrawalAnswer(BaseModel):
    decision: Decision = Field(
        description=(
            "The ScreeningDecision the stream makes for this withdrawal, same decision id (event id + watchlist "
            "version); only `source` (topic aml-screener-api, partition and offset -1), `timings` and `screener` "
            "say where it was made."
        )
    )
    recorded: bool = Field(description="True when the decision (and a flag) was acknowledged on the decisions topic.")


class FieldProblem(BaseModel):
    field: str = Field(description="Path of the field, e.g. addresses[3].network; empty for the body as a whole.")
    message: str


class ErrorAnswer(BaseModel):
    error: str = Field(description="A stable code: invalid_request, unauthorized, payload_too_large, ...")
    detail: str
    reason: str | None = Field(None, description="With watchlist_unavailable: why (e.g. no_active_version).")
    errors: list[FieldProblem] = Field(default_factory=list)
