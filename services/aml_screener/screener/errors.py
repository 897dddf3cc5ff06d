"""One exception root for the screener, split by where an error happens, and the policy that maps each to an action.

- DecodeError (the input record is bad)            -> dead-letter it with its reason, go on.
- LookupUnavailable (Redis down, watchlist missing) -> fail closed: pause, retry, decide nothing meanwhile.
- EmitError (outputs not acknowledged by Kafka)     -> do not commit; re-send the batch's outputs.
- SchemaSourceUnavailable (registry unreachable)    -> not the record's fault: retry like a lookup outage.
"""

from __future__ import annotations

from enum import StrEnum


class ScreenerError(Exception):
    """Root of all errors raised by the screening pipeline."""


class DeadLetterReason(StrEnum):
    """Why an input record could not be screened. Stable values: they are metric labels and DLQ headers."""

    OVERSIZE = "oversize"
    BAD_MAGIC = "bad_magic"
    TRUNCATED = "truncated"
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    MISSING_REQUIRED_FIELD = "missing_required_field"
    WRONG_TYPE = "wrong_type"
    MALFORMED_AVRO = "malformed_avro"
    TRAILING_BYTES = "trailing_bytes"
    INVALID_FIELD = "invalid_field"
    FIELD_TOO_LONG = "field_too_long"
    NULL_VALUE = "null_value"


class DecodeError(ScreenerError):
    """The record's bytes cannot be turned into a WithdrawalRequested."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class SchemaSourceUnavailable(ScreenerError):
    """The schema registry could not be reached; the record may be fine, so it is retried, not dead-lettered."""


class LookupFailure(StrEnum):
    """Why the watchlist cannot be consulted. Stable values: metric labels, readiness reasons, hold headers."""

    REDIS_UNAVAILABLE = "redis_unavailable"  # down, slow beyond AML_REDIS_TIMEOUT_SECONDS, network
    REDIS_AUTH_FAILED = "redis_auth_failed"
    REDIS_PERMISSION_DENIED = "redis_permission_denied"  # the ACL user lacks a command or key
    NO_ACTIVE_VERSION = "no_active_version"
    MISSING_VERSION = "missing_version"
    UNSUPPORTED_LAYOUT = "unsupported_layout"
    EMPTY_WATCHLIST = "empty_watchlist"
    COUNT_MISMATCH = "count_mismatch"  # a table does not hold the key count its version recorded
    KEY_SCHEME_MISMATCH = "key_scheme_mismatch"  # a table built under another key scheme
    CORRUPT_ENTRY = "corrupt_entry"
    VERSION_CHURN = "version_churn"
    SCHEMA_REGISTRY_UNAVAILABLE = "schema_registry_unavailable"  # decoding needs it: handled like an outage


class LookupUnavailable(ScreenerError):
    """The watchlist cannot be consulted (Redis unreachable, no active version, version empty or missing)."""

    def __init__(self, reason: LookupFailure, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EmitError(ScreenerError):
    """Some outputs of a batch were not acknowledged by Kafka."""
