"""Settings come only from environment variables; a bad one names the variable and the fix."""

from __future__ import annotations

import pytest

from ackflow.errors import ConfigurationError
from ackflow.settings import Settings


def test_every_setting_is_read_from_its_variable() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:p@db:5432/app",
            "REDIS_URL": "redis://cache:6379/1",
            "TEMPORAL_ADDRESS": "temporal:7233",
            "TEMPORAL_NAMESPACE": "prod",
            "ACKFLOW_HANDLERS": "a.handlers, b.handlers ,",
            "ACKFLOW_PORT": "9000",
            "ACKFLOW_RELAY_POLL_SECONDS": "0.25",
        }
    )
    assert settings.database_url == "postgresql://u:p@db:5432/app"
    assert settings.redis_url == "redis://cache:6379/1"
    assert (settings.temporal_address, settings.temporal_namespace) == ("temporal:7233", "prod")
    assert settings.handler_modules == ("a.handlers", "b.handlers")
    assert settings.http_port == 9000 and settings.relay_poll_seconds == 0.25


def test_defaults_apply_when_variables_are_absent_or_blank() -> None:
    settings = Settings.from_env({"ACKFLOW_PORT": "  "})
    assert settings.http_port == 8000 and settings.temporal_namespace == "default"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ACKFLOW_PORT", "eighty", "ACKFLOW_PORT"),
        ("ACKFLOW_PORT", "-1", "greater than zero"),
        ("DATABASE_URL", "mysql://x", "postgresql://"),
        ("REDIS_URL", "http://x", "redis://"),
        ("ACKFLOW_RELAY_POLL_SECONDS", "soon", "ACKFLOW_RELAY_POLL_SECONDS"),
        ("ACKFLOW_LOG_FORMAT", "yaml", "expected one of json, text"),
        ("ACKFLOW_TEMPORAL_UI_URL", "temporal-ui:8080", "http://"),
    ],
)
def test_a_malformed_variable_is_named_in_the_error(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as raised:
        Settings.from_env({variable: value})
    assert variable in str(raised.value)


def test_log_format_and_temporal_ui_url_are_normalised() -> None:
    settings = Settings.from_env({"ACKFLOW_LOG_FORMAT": "JSON", "ACKFLOW_TEMPORAL_UI_URL": "https://ui.example/"})
    assert (settings.log_format, settings.temporal_ui_url) == ("json", "https://ui.example")
    assert Settings.from_env({}).log_format == ""  # each command's own default


def test_require_names_the_missing_variable_and_an_example() -> None:
    expected = r"DATABASE_URL is not set: export DATABASE_URL=\.\.\. \(a Postgres URL"
    with pytest.raises(ConfigurationError, match=expected):
        Settings.from_env({}).require("database_url")


def test_urls_with_passwords_stay_out_of_repr() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u:hunter2@db/app", "REDIS_URL": "redis://:pw2@r"})
    assert "hunter2" not in repr(settings) and "pw2" not in repr(settings)


@pytest.mark.parametrize("value", ["nan", "inf", "1e9", "0", "soon"])
def test_a_retention_that_is_not_a_sane_number_of_days_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="ACKFLOW_RETAIN_REQUESTS_DAYS"):
        Settings.from_env({"ACKFLOW_RETAIN_REQUESTS_DAYS": value})
    assert Settings.from_env({"ACKFLOW_RETAIN_REQUESTS_DAYS": "0.5"}).retain_requests_days == 0.5
