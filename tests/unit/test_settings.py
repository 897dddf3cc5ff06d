"""Configuration: errors name the variable and the expected form; security settings reach both Kafka clients;
secrets never show up in reprs, redacted dumps or client-config logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from aml_screener.cli import main, settings_markdown
from aml_screener.screener.kafka_config import consumer_config, producer_config, redacted
from aml_screener.screener.settings import ConfigError, Settings, load_settings


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
    dumped = repr(settings) + str(settings.redacted()) + str(redacted(consumer)) + str(redacted(producer))
    for secret in ("s3cret-pw", "key-pw", "redis-pw"):
        assert secret not in dumped


def test_plaintext_config_carries_no_security_keys_and_pins_api_version_only_when_asked():
    settings = Settings(kafka_api_version="2.3")
    consumer = consumer_config(settings)
    assert consumer["api_version"] == (2, 3)
    assert "sasl_mechanism" not in consumer
    assert "api_version" not in consumer_config(Settings())
    assert "sasl.username" not in producer_config(settings)


def test_readme_settings_table_documents_every_setting():
    table = settings_markdown()
    for name in Settings.model_fields:
        assert f"`AML_{name.upper()}`" in table


def test_readme_configuration_table_is_the_generated_one():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- settings:start -->\n", 1)[1].split("\n<!-- settings:end -->", 1)[0]
    assert block.strip() == settings_markdown().strip(), "run `python scripts/update_readme_settings.py`"
