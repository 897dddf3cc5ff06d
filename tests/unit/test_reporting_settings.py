"""The reporter's settings: validated at start-up like the screener's, errors naming the variable."""

from __future__ import annotations

import pytest

from aml_screener.cli import main
from aml_screener.infra.settings import ConfigError, load_settings


def test_the_reporter_reads_both_flagged_topics_unless_deposits_are_off() -> None:
    settings = load_settings()
    assert settings.flagged_topics == ("withdrawals.flagged", "deposits.flagged")
    assert settings.kafka_obligations_topic == "compliance.obligations"
    assert load_settings(kafka_deposit_topic="").flagged_topics == ("withdrawals.flagged",)


@pytest.mark.parametrize(
    "variable", ["AML_KAFKA_FLAGGED_TOPIC", "AML_KAFKA_DEPOSIT_FLAGGED_TOPIC", "AML_KAFKA_DECISIONS_TOPIC"]
)
def test_the_obligations_topic_is_no_screening_topic(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "shared.topic")
    monkeypatch.setenv("AML_KAFKA_OBLIGATIONS_TOPIC", "shared.topic")
    with pytest.raises(ConfigError, match=f"AML_KAFKA_OBLIGATIONS_TOPIC must differ from {variable}"):
        load_settings()


def test_a_bad_reporting_setting_stops_a_report_command_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AML_REPORTING_WARN_BUSINESS_DAYS", "12")
    with pytest.raises(SystemExit) as stopped:
        main(["report", "list"])
    assert stopped.value.code == 2
    assert "AML_REPORTING_WARN_BUSINESS_DAYS: Input should be less than or equal to 9" in capsys.readouterr().err
