"""Settings -> Kafka client configuration, for both clients, in one place (so TLS/SASL cannot be forgotten on one).

The input side is a kafka-python consumer (group membership, fetch, commit); the output side is a librdkafka
(confluent-kafka) idempotent producer. Each dialect names the same security settings differently.
"""

from __future__ import annotations

from typing import Any

from aml_screener.infra.settings import SecurityProtocol, Settings

# Fetch sizes: up to 8 MiB per partition and 64 MiB per fetch lets one poll return a full batch of small
# records; the memory bound is max_poll_records x max message size on top of these buffers.
_MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024
_FETCH_MAX_BYTES = 64 * 1024 * 1024
# librdkafka's local queue: a batch's outputs are flushed before the next batch, so this bound is never the
# limit in normal operation; it caps memory if the brokers stop acknowledging.
_PRODUCER_QUEUE_MAX_MESSAGES = 200_000
_HEARTBEAT_MAX_MS = 3_000
_PRODUCER_QUEUE_MAX_KBYTES = 128 * 1024


def consumer_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "client_id": settings.kafka_client_id,
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
