"""Screener configuration: one frozen, validated settings object read from AML_* environment variables.

Every setting is documented in the README table (generated from this class by `aml-screener config --markdown`).
A bad value stops start-up with a message that names the variable and the expected form; secrets are
`SecretStr` so they never appear in reprs, logs or error messages.
"""

from __future__ import annotations

import socket
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "AML_"


class ConfigError(Exception):
    """Start-up configuration is invalid. The message names each bad variable and the expected form."""


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class FailureMode(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class ProcessingGuarantee(StrEnum):
    """What a downstream consumer sees (docs/architecture.md, "Delivery guarantees")."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


def _default_instance_id() -> str:
    return socket.gethostname()


class Settings(BaseSettings):
    """All screener settings. Field descriptions are the documentation shown in the README."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    # --- Kafka -------------------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "localhost:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    kafka_api_version: str | None = Field(
        None,
        description=(
            "Pin the Kafka API version kafka-python uses, as 'MAJOR.MINOR[.PATCH]' (e.g. '2.3'). Leave unset "
            "for real Kafka (negotiated). Needed for the embedded librdkafka mock broker."
        ),
        pattern=r"^\d+\.\d+(\.\d+)?$",
    )
    kafka_input_topic: str = Field("withdrawals.requested", description="Topic of WithdrawalRequested events.")
    kafka_decisions_topic: str = Field("screening.decisions", description="Topic for ScreeningDecision records.")
    kafka_flagged_topic: str = Field("withdrawals.flagged", description="Topic for WithdrawalFlagged records.")
    kafka_dead_letter_topic: str = Field(
        "withdrawals.requested.dlq", description="Topic for input records that cannot be decoded."
    )
    kafka_hold_topic: str = Field(
        "withdrawals.held",
        description=(
            "Topic for events passed on unscreened in fail-open mode (a copy of the input record, with the "
            "reason in its headers); never used in the default fail-closed mode."
        ),
    )
    kafka_deposit_topic: str = Field(
        "deposits.received",
        description=(
            "Topic of DepositReceived events (inbound transfers; every source address is screened). Empty: "
            "screen withdrawals only."
        ),
    )
    kafka_deposit_flagged_topic: str = Field("deposits.flagged", description="Topic for DepositFlagged records.")
    kafka_deposit_dead_letter_topic: str = Field(
        "deposits.received.dlq", description="Topic for deposit records that cannot be decoded."
    )
    kafka_deposit_hold_topic: str = Field(
        "deposits.held", description="Like AML_KAFKA_HOLD_TOPIC, for deposits (fail-open mode only)."
    )
    kafka_group_id: str = Field("aml-screener", description="Consumer group id; scale out by adding members.")
    kafka_client_id: str = Field("aml-screener", description="Client id sent to the brokers.")
    kafka_max_poll_records: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="Upper bound on records screened per batch (one Redis round trip).",
    )
    kafka_poll_timeout_ms: int = Field(
        10,
        ge=1,
        le=60_000,
        description=(
            "How long one poll waits for records when the topic is idle. Short on purpose: kafka-python 3.0's poll "
            "sometimes sits out its whole timeout after a fetch completed (measured: 100 ms polls returning records "
            "at 101 ms), which adds that much latency; 10 ms costs about 100 idle polls/s."
        ),
    )
    kafka_max_poll_interval_ms: int = Field(
        300_000,
        ge=1_000,
        description="Max time between polls before the group evicts this member (also bounds a fail-closed wait).",
    )
    kafka_fetch_max_wait_ms: int = Field(
        500,
        ge=0,
        le=30_000,
        description="Longest time the broker may hold a fetch when no data is waiting (Kafka's fetch.max.wait.ms).",
    )
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1_000, description="Group session timeout; a crashed member's partitions move after it."
    )
    kafka_auto_offset_reset: str = Field(
        "earliest",
        pattern=r"^(earliest|latest)$",
        description=("Where a new group starts: 'earliest' (screen the backlog; the safe default) or 'latest'."),
    )
    kafka_max_message_bytes: int = Field(
        65_536,
        ge=64,
        le=10_485_760,
        description="Input records larger than this are dead-lettered as 'oversize' before decoding.",
    )
    kafka_producer_linger_ms: int = Field(
        2, ge=0, le=1_000, description="Producer batching delay for outputs (latency vs throughput)."
    )
    kafka_compression: str = Field(
        "zstd",
        pattern=r"^(none|gzip|snappy|lz4|zstd)$",
        description=(
            "Compression of output records: none, gzip, snappy, lz4 or zstd. zstd by default: measured 2.2x smaller "
            "than uncompressed decisions (lz4 1.45x) at the same producer CPU; consumers need zstd support "
            "(Kafka >= 2.1 clients; docs/architecture.md, 'Compression')."
        ),
    )
    kafka_delivery_timeout_ms: int = Field(
        30_000,
        ge=1_000,
        description="How long the producer retries an output before reporting failure; the batch is then re-sent.",
    )
    max_inflight_batches: int = Field(
        4,
        ge=1,
        le=64,
        description=(
            "Batches whose outputs may await Kafka's acknowledgement while the next ones are screened (1 = none); "
            "bounds memory: at most this many x AML_KAFKA_MAX_POLL_RECORDS outputs are in flight."
        ),
    )
    processing_guarantee: ProcessingGuarantee = Field(
        ProcessingGuarantee.AT_LEAST_ONCE,
        description=(
            "'at_least_once' (default: outputs acknowledged, then offsets committed; a crash or rebalance may repeat "
            "decisions, with the same decision_id) or 'exactly_once' (each batch's outputs and input offsets in one "
            "Kafka transaction; readers with isolation.level=read_committed see every decision once). Exactly-once "
            "needs AML_INSTANCE_ID unique per member (the transactional id is <group id>.<instance id>)."
        ),
    )
    kafka_transaction_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        le=900_000,
        description=(
            "exactly_once only: how long the brokers let a transaction stay open before aborting it. Bounds how long "
            "a crashed member's open transaction holds back read_committed readers and the next owner of its "
            "partitions (Kafka Streams' exactly-once default); at most the brokers' transaction.max.timeout.ms."
        ),
    )
    kafka_security_protocol: SecurityProtocol = Field(
        SecurityProtocol.PLAINTEXT, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* security protocol)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL username.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    kafka_ssl_cafile: str | None = Field(None, description="PEM file of CA certificates to verify brokers.")
    kafka_ssl_certfile: str | None = Field(None, description="PEM client certificate (mutual TLS).")
    kafka_ssl_keyfile: str | None = Field(None, description="PEM client private key (mutual TLS).")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of the client key (secret).")

    # --- Schemas -----------------------------------------------------------------------------------------
    schema_registry_url: str | None = Field(
        None,
        description=(
            "Confluent-compatible Schema Registry base URL, or several comma-separated (tried in turn), each "
            "optionally with credentials in it (https://user:password@host). Unset: writer schemas come from the "
            "local id-to-file mapping in schemas/registry.json."
        ),
        pattern=r"^https?://[^,\s]+(,\s*https?://[^,\s]+)*$",
    )
    schema_registry_basic_auth: SecretStr | None = Field(
        None, description="'user:password' for the Schema Registry (secret); credentials in a URL take precedence."
    )
    schema_registry_auto_register: bool = Field(
        True,
        description=(
            "Register an output schema that is not registered yet. The ids are always looked up first, so "
            "read-only registry credentials work once the schemas are registered; 'false' never writes."
        ),
    )
    schema_registry_decisions_schema_id: int | None = Field(
        None, ge=0, description="Pre-registered schema id of ScreeningDecision records (skips the registry lookup)."
    )
    schema_registry_flagged_schema_id: int | None = Field(
        None, ge=0, description="Pre-registered schema id of WithdrawalFlagged records (skips the registry lookup)."
    )
    schema_registry_deposit_flagged_schema_id: int | None = Field(
        None, ge=0, description="Pre-registered schema id of DepositFlagged records (skips the registry lookup)."
    )
    schema_dir: str | None = Field(None, description="Directory with registry.json and .avsc files (default: bundled).")

    # --- Redis / watchlist -------------------------------------------------------------------------------
    redis_url: str = Field(
        "redis://localhost:6379/0",
        pattern=r"^(redis|rediss|unix)://",
        description="Redis URL (rediss:// for TLS). Put credentials in the variables below, not in the URL.",
    )
    redis_username: str | None = Field(None, description="Redis ACL user.")
    redis_password: SecretStr | None = Field(None, description="Redis password (secret).")
    redis_ssl_ca_certs: str | None = Field(None, description="CA bundle to verify a rediss:// server.")
    redis_ssl_certfile: str | None = Field(None, description="Client certificate for Redis mutual TLS.")
    redis_ssl_keyfile: str | None = Field(None, description="Client key for Redis mutual TLS.")
    redis_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Socket timeout of one Redis round trip; beyond it the lookup fails closed.",
    )
    watchlist_key_prefix: str = Field(
        "aml:{wl}",
        description="Prefix of every watchlist key in Redis (the {hash tag} keeps keys in one Redis Cluster slot).",
    )
    watchlist_failure_mode: FailureMode = Field(
        FailureMode.CLOSED,
        description=(
            "While the watchlist cannot be consulted: 'closed' (default: pause consumption, no decisions) or "
            "'open' (an explicit operator choice: route events unscreened to AML_KAFKA_HOLD_TOPIC, counted, never "
            "marked clear)."
        ),
    )
    lookup_retry_max_seconds: float = Field(
        5.0, gt=0, le=300, description="Longest back-off between lookup retries while failing closed."
    )

    # --- Screening history and lookback (history/) ---------------------------------------------------------
    history_database_url: str | None = Field(
        None,
        pattern=r"^postgres(ql)?://",
        description=(
            "PostgreSQL URI of the screening history (libpq form, e.g. postgresql://aml@db:5432/aml?sslmode=verify-full"
            "); the password goes in AML_HISTORY_DATABASE_PASSWORD. Needed by `aml-screener history` only."
        ),
    )
    history_database_password: SecretStr | None = Field(
        None, description="Password of the history database user (secret)."
    )
    history_group_id: str = Field(
        "aml-history-indexer",
        description="Consumer group of the history indexer on the decision (and input) topics; scale out by adding "
        "members.",
    )
    history_index_inputs: bool = Field(
        True,
        description=(
            "The indexer also reads the input topics (withdrawals, deposits) to keep each event's account, amount and "
            "USD value beside its decision (decisions do not carry them); 'false': decisions only."
        ),
    )
    history_lookback_days: int = Field(
        365,
        ge=1,
        le=3_660,
        description=(
            "Lookback window: a newly listed address is looked up among the events of this many days before the "
            "watchlist version that listed it (event time: requested_at / observed_at)."
        ),
    )
    history_retention_days: int = Field(
        1_827,
        ge=30,
        description="`history retention` drops history partitions older than this (default 5 years).",
    )
    history_retroactive_topic: str = Field(
        "screening.retroactive", description="Topic for RetroactiveMatch records (past events touching new listings)."
    )
    history_delisted_topic: str = Field(
        "screening.delisted", description="Topic for Delisted records (removed listings and the decisions they affect)."
    )
    history_dead_letter_topic: str = Field(
        "screening.history.dlq", description="Topic for records the history indexer cannot decode (original bytes)."
    )
    lookback_poll_seconds: float = Field(
        10.0,
        gt=0,
        le=3_600,
        description=(
            "The lookback wakes on every watchlist change notification and, in case one was missed (Redis pub/sub "
            "is not durable), checks the active version this often."
        ),
    )

    # --- Action policy -----------------------------------------------------------------------------------
    policy_file: str | None = Field(
        None,
        min_length=1,
        description=(
            "TOML file of the action policy (docs/policy.md): read at start-up (invalid or unreadable: the screener "
            "does not start), then checked every AML_POLICY_RELOAD_SECONDS and used from the next batch when it "
            "changed and is valid (an invalid change is refused; the previous policy stays). Unset: the built-in "
            "default policy."
        ),
    )
    policy_reload_seconds: float = Field(
        5.0,
        gt=0,
        le=3_600,
        description=(
            "How often the policy file is checked for changes (it is read and hashed: a few KB). A change takes "
            "effect within this time plus one batch."
        ),
    )

    # --- Service -----------------------------------------------------------------------------------------
    http_host: str = Field("0.0.0.0", description="Bind address of /metrics, /healthz and /readyz.")  # noqa: S104
    http_port: int = Field(9400, ge=0, le=65_535, description="Port of /metrics, /healthz, /readyz (0 = off).")
    instance_id: str = Field(
        default_factory=_default_instance_id, description="Recorded in every decision (default: host name)."
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="DEBUG, INFO, WARNING, ERROR.")
    log_format: LogFormat = Field(LogFormat.JSON, description="'json' (one object per line) or 'text'.")
    health_stall_seconds: float = Field(
        60.0,
        gt=0,
        le=3_600,
        description=(
            "/healthz turns 503 when the consumer loop has not come round, has been failing, or an input partition "
            "has been unreadable for longer than this (a fail-closed wait is healthy)."
        ),
    )
    shutdown_timeout_seconds: float = Field(
        20.0, gt=0, le=3_600, description="Bound on draining the current batch after SIGTERM."
    )
    metric_assets: Annotated[tuple[str, ...], NoDecode] = Field(
        (
            "BTC",
            "ETH",
            "USDT",
            "USDC",
            "TRX",
            "BNB",
            "LTC",
            "BCH",
            "DOGE",
            "XRP",
            "SOL",
            "DAI",
            "MATIC",
            "POL",
            "ARB",
            "OP",
            "AVAX",
            "DASH",
            "ZEC",
            "XMR",
            "ETC",
            "BSV",
            "BTG",
        ),
        description=(
            "Asset tickers used as metric label values (comma-separated); any other asset is reported as "
            "'other' so a hostile producer cannot explode label cardinality."
        ),
    )

    # --- OFAC reporting (`aml-screener report`) ------------------------------------------------------------
    kafka_obligations_topic: str = Field(
        "compliance.obligations",
        description=(
            "Compacted topic holding every OFAC reporting obligation (key: obligation id; value: the obligation and "
            "its status as JSON): the state of `aml-screener report`, rebuilt from it at start."
        ),
    )
    reporting_group_id: str = Field(
        "aml-screener-reporting",
        description="Consumer group of `aml-screener report serve` on the flagged topics (not the screener's).",
    )
    reporting_manage_topic: bool = Field(
        True,
        description=(
            "`report serve` creates AML_KAFKA_OBLIGATIONS_TOPIC (compacted) when it is missing and refuses to start "
            "on one that is not compacted (obligations would expire). 'false' where the Kafka admin API is not "
            "available (the embedded mock broker): the topic must then exist."
        ),
    )
    reporting_warn_business_days: int = Field(
        2,
        ge=1,
        le=9,
        description=(
            "An open obligation is due soon (aml_screener_reporting_due_soon_obligations, alert "
            "AmlOfacReportDueSoon) when this many US business days or fewer are left, its due date included."
        ),
    )
    reporting_institution_name: str | None = Field(
        None, description="Reporting institution's legal name, printed in every report draft."
    )
    reporting_institution_address: str | None = Field(
        None, description="Reporting institution's address, printed in every report draft."
    )
    reporting_contact_name: str | None = Field(
        None, description="Contact person for OFAC's compliance questions, printed in every report draft."
    )
    reporting_contact_phone: str | None = Field(None, description="The contact person's telephone number.")
    reporting_contact_email: str | None = Field(None, description="The contact person's e-mail address.")

    # --- Pre-screen API (`aml-screener api`) -------------------------------------------------------------------
    api_host: str = Field("0.0.0.0", description="Bind address of the pre-screen API (`aml-screener api`).")  # noqa: S104
    api_port: int = Field(8080, ge=1, le=65_535, description="Port of the pre-screen API.")
    api_keys_file: str | None = Field(
        None,
        min_length=1,
        description=(
            "JSON file of the API keys the pre-screen API accepts, stored as SHA-256 hashes (`aml-screener api keys "
            "create` adds one; docs/api.md). Required by `aml-screener api`; re-read every "
            "AML_API_KEYS_RELOAD_SECONDS, so a revoked key stops working without a restart."
        ),
    )
    api_keys_reload_seconds: float = Field(
        5.0, gt=0, le=3_600, description="How often the API keys file is checked for changes."
    )
    api_max_body_bytes: int = Field(
        262_144,
        ge=1_024,
        le=16_777_216,
        description=(
            "Largest request body the pre-screen API reads (413 beyond it). 256 KiB holds a batch of 1,000 long "
            "addresses."
        ),
    )
    api_max_batch: int = Field(
        1_000,
        ge=1,
        le=10_000,
        description="Most {network, address} pairs one address-screening request may carry (one Redis round trip).",
    )
    api_record_decisions: bool = Field(
        False,
        description=(
            "Record every withdrawal the API screens on the decisions topic (and a flagged one on the flagged topic), "
            "exactly as the stream would (same decision id), before answering; the answer is 503 when Kafka does not "
            "acknowledge them in AML_API_RECORD_TIMEOUT_SECONDS."
        ),
    )
    api_record_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Longest wait for Kafka to acknowledge a recorded decision before the API answers 503.",
    )

    @field_validator("metric_assets", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip().upper() for part in value.split(",") if part.strip())
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("expected comma-separated host:port pairs, e.g. 'kafka-1:9092,kafka-2:9092'")
        return value

    @model_validator(mode="after")
    def _check_topics(self) -> Settings:
        """Every output topic differs from every input topic: a screener that reads its own outputs would loop."""
        inputs = {"AML_KAFKA_INPUT_TOPIC": self.kafka_input_topic}
        if self.kafka_deposit_topic:
            inputs["AML_KAFKA_DEPOSIT_TOPIC"] = self.kafka_deposit_topic
        outputs = {
            "AML_KAFKA_DECISIONS_TOPIC": self.kafka_decisions_topic,
            "AML_KAFKA_FLAGGED_TOPIC": self.kafka_flagged_topic,
            "AML_KAFKA_DEAD_LETTER_TOPIC": self.kafka_dead_letter_topic,
            "AML_KAFKA_HOLD_TOPIC": self.kafka_hold_topic,
        }
        if self.kafka_deposit_topic:
            outputs |= {
                "AML_KAFKA_DEPOSIT_FLAGGED_TOPIC": self.kafka_deposit_flagged_topic,
                "AML_KAFKA_DEPOSIT_DEAD_LETTER_TOPIC": self.kafka_deposit_dead_letter_topic,
                "AML_KAFKA_DEPOSIT_HOLD_TOPIC": self.kafka_deposit_hold_topic,
            }
        if self.kafka_deposit_topic == self.kafka_input_topic:
            raise ValueError(
                "AML_KAFKA_DEPOSIT_TOPIC must differ from AML_KAFKA_INPUT_TOPIC (the topic tells how a record is "
                f"decoded); both are {self.kafka_input_topic!r}"
            )
        for out_name, out_topic in outputs.items():
            for in_name, in_topic in inputs.items():
                if out_topic == in_topic:
                    raise ValueError(
                        f"{out_name} must differ from {in_name}: the screener would read its own outputs "
                        f"(both are {in_topic!r})"
                    )
        return self

    @model_validator(mode="after")
    def _check_obligations_topic(self) -> Settings:
        """The reporter's state topic is no topic the screener reads or writes: records of another kind there would
        be read back as obligations (and compaction would delete screening records)."""
        others = {
            "AML_KAFKA_INPUT_TOPIC": self.kafka_input_topic,
            "AML_KAFKA_DECISIONS_TOPIC": self.kafka_decisions_topic,
            "AML_KAFKA_FLAGGED_TOPIC": self.kafka_flagged_topic,
            "AML_KAFKA_DEAD_LETTER_TOPIC": self.kafka_dead_letter_topic,
            "AML_KAFKA_HOLD_TOPIC": self.kafka_hold_topic,
            "AML_KAFKA_DEPOSIT_TOPIC": self.kafka_deposit_topic,
            "AML_KAFKA_DEPOSIT_FLAGGED_TOPIC": self.kafka_deposit_flagged_topic,
            "AML_KAFKA_DEPOSIT_DEAD_LETTER_TOPIC": self.kafka_deposit_dead_letter_topic,
            "AML_KAFKA_DEPOSIT_HOLD_TOPIC": self.kafka_deposit_hold_topic,
        }
        for name, topic in others.items():
            if topic == self.kafka_obligations_topic:
                raise ValueError(
                    f"AML_KAFKA_OBLIGATIONS_TOPIC must differ from {name} (both are {topic!r}): it holds only "
                    "reporting obligations, compacted"
                )
        return self

    @property
    def flagged_topics(self) -> tuple[str, ...]:
        """The topics the reporter reads: flagged withdrawals, and flagged deposits unless deposits are off."""
        if self.kafka_deposit_topic:
            return (self.kafka_flagged_topic, self.kafka_deposit_flagged_topic)
        return (self.kafka_flagged_topic,)

    @property
    def input_topics(self) -> tuple[str, ...]:
        """The topics the screener consumes: withdrawals, and deposits unless AML_KAFKA_DEPOSIT_TOPIC is empty."""
        if self.kafka_deposit_topic:
            return (self.kafka_input_topic, self.kafka_deposit_topic)
        return (self.kafka_input_topic,)

    @property
    def api_version_tuple(self) -> tuple[int, ...] | None:
        if self.kafka_api_version is None:
            return None
        return tuple(int(part) for part in self.kafka_api_version.split("."))

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict safe to log: secrets masked, credentials in URLs removed."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = "**********" if value.get_secret_value() else ""
            elif name in {"redis_url", "schema_registry_url", "history_database_url"} and isinstance(value, str):
                out[name] = _strip_url_credentials(value)
            else:
                out[name] = value
        return out


def _strip_url_credentials(url: str) -> str:
    """Credentials removed from a URL, or from each of a comma-separated list of URLs."""
    if "," in url:
        return ",".join(_strip_url_credentials(part.strip()) for part in url.split(","))
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


_EXPECTED_BY_TYPE = {
    "int_parsing": "an integer",
    "float_parsing": "a number",
    "bool_parsing": "true or false",
    "enum": "one of the listed values",
    "string_pattern_mismatch": "a value matching the documented form",
}


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (plus explicit overrides); raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors(include_input=False, include_url=False):
        if not error["loc"]:  # a rule over several settings: its message names them
            lines.append(f"  {str(error['msg']).removeprefix('Value error, ')}")
            continue
        field = str(error["loc"][0])
        variable = f"{ENV_PREFIX}{field.upper()}"
        info = Settings.model_fields.get(field)
        description = info.description if info is not None else ""
        message = str(error["msg"])
        expected = _EXPECTED_BY_TYPE.get(str(error["type"]))
        ctx = error.get("ctx") or {}
        if "pattern" in ctx:
            message, expected = f"expected a value of the form /{ctx['pattern']}/", None
        hint = f" (expected {expected})" if expected and expected not in message else ""
        lines.append(f"  {variable}: {message}{hint}. {description}".rstrip())
    return "\n".join(lines)
