"""Configuration: errors name the variable and the expected form; security settings reach both Kafka clients;
secrets never show up in reprs, redacted dumps or client-config logs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from aml_screener.cli import main, settings_markdown
from aml_screener.infra.kafka import (
    consumer_config,
    producer_config,
    redacted,
    transactional_producer_config,
)
from aml_screener.infra.settings import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("AML_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AML_KAFKA_MAX_POLL_RECORDS", "lots", "integer"),
        ("AML_KAFKA_MAX_POLL_RECORDS", "0", "greater than or equal to 1"),
        ("AML_KAFKA_BOOTSTRAP_SERVERS", "kafka-without-port", "host:port"),
        ("AML_REDIS_URL", "http://redis:6379", "redis|rediss|unix"),
        ("AML_KAFKA_SECURITY_PROTOCOL", "TLS", "PLAINTEXT"),
        ("AML_KAFKA_API_VERSION", "two", "form"),
        ("AML_HTTP_PORT", "99999", "65535"),
        ("AML_PROCESSING_GUARANTEE", "exactly-once", "'at_least_once' or 'exactly_once'"),
        ("AML_KAFKA_TRANSACTION_TIMEOUT_MS", "100", "greater than or equal to 1000"),
    ],
)
def test_bad_value_names_the_variable_and_expected_form(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    assert expected in message


def test_cli_exits_2_with_the_message_on_bad_configuration(monkeypatch, capsys):
    monkeypatch.setenv("AML_KAFKA_POLL_TIMEOUT_MS", "soon")
    with pytest.raises(SystemExit) as caught:
        main(["run"])
    assert caught.value.code == 2
    assert "AML_KAFKA_POLL_TIMEOUT_MS" in capsys.readouterr().err


def test_metric_assets_accept_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("AML_METRIC_ASSETS", "btc, eth ,usdt")
    assert load_settings().metric_assets == ("BTC", "ETH", "USDT")


def test_sasl_ssl_settings_reach_both_clients_and_secrets_stay_hidden():
    settings = Settings(
        kafka_bootstrap_servers="k1:9093,k2:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="screener",
        kafka_sasl_password="s3cret-pw",
        kafka_ssl_cafile="/etc/kafka/ca.pem",
        kafka_ssl_certfile="/etc/kafka/client.pem",
        kafka_ssl_keyfile="/etc/kafka/client.key",
        kafka_ssl_key_password="key-pw",
        redis_password="redis-pw",
    )
    consumer = consumer_config(settings)
    assert consumer["security_protocol"] == "SASL_SSL"
    assert consumer["sasl_mechanism"] == "SCRAM-SHA-512"
    assert consumer["sasl_plain_username"] == "screener"
    assert consumer["sasl_plain_password"] == "s3cret-pw"
    assert consumer["ssl_cafile"] == "/etc/kafka/ca.pem"
    assert consumer["ssl_certfile"] == "/etc/kafka/client.pem"
    assert consumer["ssl_password"] == "key-pw"
    assert consumer["enable_auto_commit"] is False
    producer = producer_config(settings)
    assert producer["security.protocol"] == "SASL_SSL"
    assert producer["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert producer["sasl.username"] == "screener"
    assert producer["sasl.password"] == "s3cret-pw"
    assert producer["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert producer["ssl.key.password"] == "key-pw"
    assert producer["enable.idempotence"] is True
    assert producer["acks"] == "all"
    transactional = transactional_producer_config(settings)
    assert {key: value for key, value in consumer.items() if key.startswith(("ssl", "sasl", "security"))} == {
        key: value for key, value in transactional.items() if key.startswith(("ssl", "sasl", "security"))
    }, "exactly-once's kafka-python producer connects like the consumer"
    dumped = repr(settings) + str(settings.redacted()) + str(redacted(consumer)) + str(redacted(producer))
    dumped += str(redacted(transactional))
    for secret in ("s3cret-pw", "key-pw", "redis-pw"):
        assert secret not in dumped


def test_mutual_tls_without_sasl_reaches_both_clients_and_sends_no_sasl_keys():
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile="/etc/kafka/ca.pem",
        kafka_ssl_certfile="/etc/kafka/client.pem",
        kafka_ssl_keyfile="/etc/kafka/client.key",
        kafka_ssl_key_password="mtls-key-pw",
    )
    consumer = consumer_config(settings)
    assert consumer["security_protocol"] == "SSL"
    assert consumer["ssl_check_hostname"] is True, "broker certificates must be verified against their host name"
    assert (consumer["ssl_cafile"], consumer["ssl_certfile"], consumer["ssl_keyfile"]) == (
        "/etc/kafka/ca.pem",
        "/etc/kafka/client.pem",
        "/etc/kafka/client.key",
    )
    assert consumer["ssl_password"] == "mtls-key-pw"
    assert not any(key.startswith("sasl") for key in consumer)
    producer = producer_config(settings)
    assert producer["security.protocol"] == "SSL"
    assert producer["ssl.endpoint.identification.algorithm"] == "https"
    assert producer["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert producer["ssl.certificate.location"] == "/etc/kafka/client.pem"
    assert producer["ssl.key.location"] == "/etc/kafka/client.key"
    assert producer["ssl.key.password"] == "mtls-key-pw"
    assert not any(key.startswith("sasl") for key in producer)
    dumped = str(redacted(consumer)) + str(redacted(producer)) + str(settings.redacted())
    assert "mtls-key-pw" not in dumped


def test_sasl_plaintext_sends_credentials_without_tls_keys_and_defaults_to_plain():
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="screener",
        kafka_sasl_password="plain-pw",
        kafka_ssl_cafile="/etc/kafka/ca.pem",  # ignored: the protocol has no TLS
    )
    consumer = consumer_config(settings)
    assert consumer["security_protocol"] == "SASL_PLAINTEXT"
    assert consumer["sasl_mechanism"] == "PLAIN"
    assert (consumer["sasl_plain_username"], consumer["sasl_plain_password"]) == ("screener", "plain-pw")
    assert not any(key.startswith("ssl") for key in consumer)
    producer = producer_config(settings)
    assert producer["security.protocol"] == "SASL_PLAINTEXT"
    assert producer["sasl.mechanisms"] == "PLAIN"
    assert (producer["sasl.username"], producer["sasl.password"]) == ("screener", "plain-pw")
    assert not any(key.startswith("ssl") for key in producer)
    assert "plain-pw" not in str(redacted(consumer)) + str(redacted(producer))


def test_the_confluent_producer_accepts_every_security_configuration(tmp_path):
    """librdkafka validates its configuration when the client is created: a misspelt or unsupported key (or a
    protocol its build lacks) would fail here, not in production."""
    from confluent_kafka import KafkaException, Producer

    for protocol in ("SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        settings = Settings(
            kafka_bootstrap_servers="127.0.0.1:1",
            kafka_security_protocol=protocol,
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        )
        try:
            Producer(producer_config(settings)).flush(0)
        except KafkaException as exc:
            raise AssertionError(f"{protocol}: librdkafka refused the configuration: {exc}") from None


def test_bad_settings_never_echo_secrets_or_credentials(monkeypatch, capsys):
    secrets = ["redis-pw-Zq81", "sasl-pw-Kx55", "basic-auth-Wm42", "key-pw-Jr09", "url-pw-Hv33"]
    monkeypatch.setenv("AML_REDIS_PASSWORD", secrets[0])
    monkeypatch.setenv("AML_KAFKA_SASL_PASSWORD", secrets[1])
    monkeypatch.setenv("AML_SCHEMA_REGISTRY_BASIC_AUTH", f"user:{secrets[2]}")
    monkeypatch.setenv("AML_KAFKA_SSL_KEY_PASSWORD", secrets[3])
    # Bad values that carry credentials themselves: a wrong scheme with a password in the URL.
    monkeypatch.setenv("AML_REDIS_URL", f"http://admin:{secrets[4]}@redis:6379/0")
    monkeypatch.setenv("AML_SCHEMA_REGISTRY_URL", f"ftp://user:{secrets[4]}@registry")
    monkeypatch.setenv("AML_KAFKA_MAX_POLL_RECORDS", secrets[1])  # a secret pasted into the wrong variable
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    for variable in ("AML_REDIS_URL", "AML_SCHEMA_REGISTRY_URL", "AML_KAFKA_MAX_POLL_RECORDS"):
        assert variable in message
    with pytest.raises(SystemExit):
        main(["run"])
    printed = capsys.readouterr()
    for secret in secrets:
        assert secret not in message
        assert secret not in printed.err + printed.out


def test_config_command_masks_secrets_and_url_credentials(monkeypatch, capsys):
    monkeypatch.setenv("AML_REDIS_URL", "rediss://admin:url-pw-Hv33@redis:6380/0")
    monkeypatch.setenv("AML_REDIS_PASSWORD", "redis-pw-Zq81")
    monkeypatch.setenv("AML_SCHEMA_REGISTRY_URL", "https://user:reg-pw-Pp12@registry")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "url-pw-Hv33" not in out and "redis-pw-Zq81" not in out and "reg-pw-Pp12" not in out
    assert "rediss://***@redis:6380/0" in out


def test_plaintext_config_carries_no_security_keys_and_pins_api_version_only_when_asked():
    settings = Settings(kafka_api_version="2.3")
    consumer = consumer_config(settings)
    assert consumer["api_version"] == (2, 3)
    assert "sasl_mechanism" not in consumer
    assert "api_version" not in consumer_config(Settings())
    assert "sasl.username" not in producer_config(settings)


def test_exactly_once_reads_committed_input_and_uses_one_transactional_id_per_member():
    """kafka-python asks the coordinator for stable offsets (KIP-447) only with read_committed: without it, a new
    owner could start from an offset a zombie's pending transaction is about to move."""
    assert "isolation_level" not in consumer_config(Settings())
    settings = Settings(
        processing_guarantee="exactly_once",
        kafka_group_id="screeners",
        instance_id="pod-3",
        kafka_delivery_timeout_ms=5_000,
        kafka_compression="none",
    )
    assert consumer_config(settings)["isolation_level"] == "read_committed"
    producer = transactional_producer_config(settings)
    assert producer["transactional_id"] == "screeners.pod-3"
    assert producer["transaction_timeout_ms"] == 10_000 and producer["acks"] == "all"
    assert producer["compression_type"] is None
    assert producer["request_timeout_ms"] <= producer["delivery_timeout_ms"] - producer["linger_ms"], (
        "kafka-python needs a delivery timeout that covers one request and the linger time"
    )


def test_readme_settings_table_documents_every_setting():
    table = settings_markdown()
    for name in Settings.model_fields:
        assert f"`AML_{name.upper()}`" in table


def test_readme_configuration_table_is_the_generated_one():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- settings:start -->\n", 1)[1].split("\n<!-- settings:end -->", 1)[0]
    assert block.strip() == settings_markdown().strip(), "run `python scripts/update_readme_settings.py`"


def test_several_registry_urls_with_credentials_are_accepted_and_never_shown():
    settings = load_settings(schema_registry_url="https://u:s3cret@reg-1:8081,https://reg-2:8081/apis/ccompat/v7")
    assert settings.redacted()["schema_registry_url"] == "https://***@reg-1:8081,https://reg-2:8081/apis/ccompat/v7"
    with pytest.raises(ConfigError, match="AML_SCHEMA_REGISTRY_URL"):
        load_settings(schema_registry_url="https://reg-1:8081,ftp://reg-2")


def test_registry_urls_carry_their_own_credentials_else_the_basic_auth_setting():
    from aml_screener.screener.schemas import registry_endpoints

    first, second = registry_endpoints("https://us%40er:p%3Aw@reg-1:8081/ccompat/,http://reg-2", "svc:pw")
    assert first.url == "https://reg-1:8081/ccompat" and second.url == "http://reg-2"
    assert first.authorization == "Basic " + base64.b64encode(b"us@er:p:w").decode()
    assert second.authorization == "Basic " + base64.b64encode(b"svc:pw").decode()


def test_deposits_are_consumed_from_their_own_topic_unless_switched_off(monkeypatch):
    assert load_settings().input_topics == ("withdrawals.requested", "deposits.received")
    monkeypatch.setenv("AML_KAFKA_DEPOSIT_TOPIC", "")
    assert load_settings().input_topics == ("withdrawals.requested",)


@pytest.mark.parametrize(
    ("variables", "names"),
    [
        ({"AML_KAFKA_DEPOSIT_TOPIC": "withdrawals.requested"}, ("AML_KAFKA_DEPOSIT_TOPIC", "AML_KAFKA_INPUT_TOPIC")),
        ({"AML_KAFKA_DECISIONS_TOPIC": "deposits.received"}, ("AML_KAFKA_DECISIONS_TOPIC", "AML_KAFKA_DEPOSIT_TOPIC")),
        (
            {"AML_KAFKA_DEPOSIT_FLAGGED_TOPIC": "in", "AML_KAFKA_INPUT_TOPIC": "in"},
            ("AML_KAFKA_DEPOSIT_FLAGGED_TOPIC",),
        ),
        ({"AML_KAFKA_DEAD_LETTER_TOPIC": "withdrawals.requested"}, ("AML_KAFKA_DEAD_LETTER_TOPIC",)),
    ],
)
def test_an_output_topic_that_is_an_input_topic_is_refused_naming_both_variables(monkeypatch, capsys, variables, names):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    for name in names:
        assert name in str(caught.value)
    with pytest.raises(SystemExit) as exited:
        main(["config"])
    assert exited.value.code == 2, "the CLI exits with the configuration error"
    assert names[0] in capsys.readouterr().err
