"""Settings -> Kafka client configuration, for both clients, in one place (so TLS/SASL cannot be forgotten on one).

The input side is a kafka-python consumer (group membership, fetch, commit); the output side is a librdkafka
(confluent-kafka) idempotent producer, or, with AML_PROCESSING_GUARANTEE=exactly_once, kafka-python's transactional
producer (it must share the consumer's group metadata; docs/architecture.md). Each dialect names the same security
settings differently.
"""

from __future__ import annotations

from typing import Any

from aml_screener.infra.settings import ProcessingGuarantee, SecurityProtocol, Settings

# Fetch sizes: up to 8 MiB per partition and 64 MiB per fetch lets one poll return a full batch of small
# records; the memory bound is max_poll_records x max message size on top of these buffers.
_MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024
_FETCH_MAX_BYTES = 64 * 1024 * 1024
# librdkafka's local queue: a batch's outputs are flushed before the next batch, so this bound is never the
# limit in normal operation; it caps memory if the brokers stop acknowledging.
_PRODUCER_QUEUE_MAX_MESSAGES = 200_000
_HEARTBEAT_MAX_MS = 3_000
_PRODUCER_QUEUE_MAX_KBYTES = 128 * 1024
# kafka-python's request timeout (its default); shortened when AML_KAFKA_DELIVERY_TIMEOUT_MS is shorter, because
# a delivery timeout must cover one request plus the linger time.
_REQUEST_TIMEOUT_MS = 30_000
# kafka-python blocks send() at most this long for metadata of an output topic or for buffer space: a missing
# output topic then fails the transaction (aborted, retried with back-off) instead of stalling the loop for the
# client's default minute.
_MAX_BLOCK_MS = 10_000
# kafka-python's producer retries transactional requests after this long, sleeping in its sender thread. Adding the
# next transaction's partitions and offsets is refused (CONCURRENT_TRANSACTIONS) until the brokers finished writing the
# previous transaction's markers, measured at 20-150 ms on the 3-node test cluster: with the client's default 100 ms
# every transaction waited one to three such sleeps (send_offsets_to_transaction took 350 ms median; 72 ms with 10 ms).
_TRANSACTION_RETRY_BACKOFF_MS = 10
# kafka-python builds record batches in Python, per record; the cost per record falls with bigger batches (measured,
# 200-byte records, zstd: 40 us of CPU per record with the default 16 KiB, 17.8 us with 256 KiB). A batch's 2,000
# outputs spread over the output partitions fill a few hundred KiB.
_TRANSACTIONAL_BATCH_BYTES = 256 * 1024


def consumer_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "group_id": settings.kafka_group_id,
        "enable_auto_commit": False,  # offsets are committed only after a batch's outputs are acknowledged
        "auto_offset_reset": settings.kafka_auto_offset_reset,
        "max_poll_records": settings.kafka_max_poll_records,
        "max_poll_interval_ms": settings.kafka_max_poll_interval_ms,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        # Heartbeats at a third of the session timeout (the usual guidance: two can be lost), at most every 3 s
        # (Kafka's default): a member learns of a rebalance at its next heartbeat, so when another member leaves
        # the group, this bounds how long its partitions wait for a new owner.
        "heartbeat_interval_ms": max(1, min(settings.kafka_session_timeout_ms // 3, _HEARTBEAT_MAX_MS)),
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "max_partition_fetch_bytes": _MAX_PARTITION_FETCH_BYTES,
        "fetch_max_bytes": _FETCH_MAX_BYTES,
    }
    if settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
        # Input written by transactional producers counts only once committed; and kafka-python asks the group
        # coordinator for *stable* offsets only with read_committed (OffsetFetch require_stable, KIP-447): a new
        # owner of a partition then waits for the previous owner's pending transaction instead of starting from an
        # offset that transaction is about to move.
        config["isolation_level"] = "read_committed"
    return config | _kafka_python_connection(settings)


def transactional_producer_config(settings: Settings) -> dict[str, Any]:
    """kafka-python KafkaProducer settings of the exactly-once mode (screener/exactly_once.py)."""
    # An output still unacknowledged when the transaction timeout passes is moot: the brokers abort the transaction
    # then. Failing it by then lets the sink abort and re-read the batch at once.
    delivery_timeout_ms = min(settings.kafka_delivery_timeout_ms, settings.kafka_transaction_timeout_ms)
    config: dict[str, Any] = {
        # One transactional id per member: a restarted member with the same AML_INSTANCE_ID fences its predecessor
        # and aborts the transaction it left open (init_transactions); zombies of an older group generation are
        # fenced by the group metadata sent with the offsets (KIP-447).
        "transactional_id": transactional_id(settings),
        "transaction_timeout_ms": settings.kafka_transaction_timeout_ms,
        "acks": "all",
        "linger_ms": settings.kafka_producer_linger_ms,
        "compression_type": None if settings.kafka_compression == "none" else settings.kafka_compression,
        "delivery_timeout_ms": delivery_timeout_ms,
        "request_timeout_ms": min(_REQUEST_TIMEOUT_MS, max(1, delivery_timeout_ms - settings.kafka_producer_linger_ms)),
        "max_block_ms": _MAX_BLOCK_MS,
        "retry_backoff_ms": _TRANSACTION_RETRY_BACKOFF_MS,
        "batch_size": _TRANSACTIONAL_BATCH_BYTES,
        "allow_auto_create_topics": False,
    }
    return config | _kafka_python_connection(settings)


def transactional_id(settings: Settings) -> str:
    return f"{settings.kafka_group_id}.{settings.instance_id}"


def _kafka_python_connection(settings: Settings) -> dict[str, Any]:
    """Addresses, protocol pin and security, the same for kafka-python's consumer and producer."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol.value,
    }
    if settings.api_version_tuple is not None:
        config["api_version"] = settings.api_version_tuple
    if settings.kafka_security_protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism.value if settings.kafka_sasl_mechanism else "PLAIN"
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    if settings.kafka_security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        config["ssl_check_hostname"] = True
        if settings.kafka_ssl_cafile:
            config["ssl_cafile"] = settings.kafka_ssl_cafile
        if settings.kafka_ssl_certfile:
            config["ssl_certfile"] = settings.kafka_ssl_certfile
        if settings.kafka_ssl_keyfile:
            config["ssl_keyfile"] = settings.kafka_ssl_keyfile
        if settings.kafka_ssl_key_password:
            config["ssl_password"] = settings.kafka_ssl_key_password.get_secret_value()
    return config


def _librdkafka_connection(settings: Settings) -> dict[str, Any]:
    """Brokers, client id and security in librdkafka's dialect: what every confluent-kafka client needs."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": settings.kafka_client_id,
        "security.protocol": settings.kafka_security_protocol.value,
    }
    if settings.kafka_security_protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL):
        config["sasl.mechanisms"] = settings.kafka_sasl_mechanism.value if settings.kafka_sasl_mechanism else "PLAIN"
        if settings.kafka_sasl_username is not None:
            config["sasl.username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        config["ssl.endpoint.identification.algorithm"] = "https"
        if settings.kafka_ssl_cafile:
            config["ssl.ca.location"] = settings.kafka_ssl_cafile
        if settings.kafka_ssl_certfile:
            config["ssl.certificate.location"] = settings.kafka_ssl_certfile
        if settings.kafka_ssl_keyfile:
            config["ssl.key.location"] = settings.kafka_ssl_keyfile
        if settings.kafka_ssl_key_password:
            config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    return config


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **_librdkafka_connection(settings),
        # Idempotent producer: broker-side de-duplication of retries, acks=all, ordering per partition.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.kafka_producer_linger_ms,
        "compression.type": settings.kafka_compression,
        "message.timeout.ms": settings.kafka_delivery_timeout_ms,
        "queue.buffering.max.messages": _PRODUCER_QUEUE_MAX_MESSAGES,
        "queue.buffering.max.kbytes": _PRODUCER_QUEUE_MAX_KBYTES,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    """confluent-kafka AdminClient (topic checks and creation)."""
    return _librdkafka_connection(settings)


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    """A client configuration safe to log."""
    secret_keys = {"sasl_plain_password", "ssl_password", "sasl.password", "ssl.key.password"}
    return {key: ("**********" if key in secret_keys and value else value) for key, value in config.items()}


def refresh_consumer_lag(consumer: Any, gauge: Any, previous: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Set `gauge{topic,partition}` to the lag of every assigned partition the consumer knows the high-water mark and
    position of (without waiting for either), remove the series of partitions no longer reported, and return the
    label pairs now set. Shared by the screener's loop and the history indexer."""
    from kafka.errors import KafkaError  # noqa: PLC0415 - infra's settings side stays importable without kafka

    labels: set[tuple[str, str]] = set()
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        try:
            position = consumer.position(tp, timeout_ms=0)
        except KafkaError:
            continue
        if position is None:
            continue
        key = (tp.topic, str(tp.partition))
        labels.add(key)
        gauge.labels(*key).set(max(0, highwater - position))
    for stale in previous - labels:
        gauge.remove(*stale)
    return labels
