"""Settings: defaults, validation with one-line errors, masking, generated credentials."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pipeline import SettingsError, load_settings
from pipeline.caps import Cap
from pipeline.settings import with_local_credentials


def test_defaults_live_in_ecrm_home(tmp_path: Path) -> None:
    settings = load_settings({"ECRM_HOME": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'hub.sqlite'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8000)
    assert settings.is_sqlite and settings.is_embedded_broker


def test_ingest_mode_and_action_retry() -> None:
    defaults = load_settings({})
    assert (defaults.ingest_mode, defaults.action_retry_seconds) == ("validate", 30.0)
    chosen = load_settings({"ECRM_INGEST_MODE": "Spool", "ECRM_ACTION_RETRY_SECONDS": "2.5"})
    assert (chosen.ingest_mode, chosen.action_retry_seconds) == ("spool", 2.5)


def test_postgres_url_gets_psycopg3_driver() -> None:
    settings = load_settings({"ECRM_DATABASE_URL": "postgresql://u:secret@db/hub"})
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert "secret" not in settings.masked()["ECRM_DATABASE_URL"]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ECRM_HTTP_PORT": "abc"}, "ECRM_HTTP_PORT"),
        ({"ECRM_HTTP_PORT": "70000"}, "ECRM_HTTP_PORT"),
        ({"ECRM_DATABASE_URL": "not a url"}, "ECRM_DATABASE_URL"),
        ({"ECRM_DATABASE_URL": "mysql://x/y"}, "ECRM_DATABASE_URL"),
        ({"ECRM_BROKER_URL": "kafka://x"}, "ECRM_BROKER_URL"),
        ({"ECRM_WRITE_KEYS": "short"}, "ECRM_WRITE_KEYS"),
        ({"ECRM_DEFAULT_REGION": "XX"}, "ECRM_DEFAULT_REGION"),
        ({"ECRM_BATCH_SIZE": "0"}, "ECRM_BATCH_SIZE"),
        ({"ECRM_CORS_ORIGINS": "shop.example.com"}, "ECRM_CORS_ORIGINS"),
        ({"ECRM_CORS_ORIGINS": "https://a.example/path"}, "ECRM_CORS_ORIGINS"),
        ({"ECRM_MAX_EVENT_BYTES": "10"}, "ECRM_MAX_EVENT_BYTES"),
        ({"ECRM_CHANNEL_CAPS": "email"}, "ECRM_CHANNEL_CAPS"),
        ({"ECRM_CHANNEL_CAPS": "email=3"}, "ECRM_CHANNEL_CAPS"),
        ({"ECRM_CHANNEL_CAPS": "email=3/7"}, "ECRM_CHANNEL_CAPS"),
        ({"ECRM_CHANNEL_CAPS": "email=0/7d"}, "ECRM_CHANNEL_CAPS"),
        ({"ECRM_CHANNEL_CAPS": "email=3/400d"}, "ECRM_CHANNEL_CAPS"),
        ({"ECRM_CHANNEL_CAPS": "fax=1/1d"}, "ECRM_CHANNEL_CAPS"),
        ({"ECRM_CHANNEL_CAPS": "sms=1/1d,sms=2/1d"}, "ECRM_CHANNEL_CAPS"),
        ({"ECRM_WEBHOOK_RETRY_SCHEDULE": "0,5,soon"}, "ECRM_WEBHOOK_RETRY_SCHEDULE"),
        ({"ECRM_WEBHOOK_RETRY_SCHEDULE": "0,-1"}, "ECRM_WEBHOOK_RETRY_SCHEDULE"),
        ({"ECRM_WEBHOOK_RETRY_SCHEDULE": ","}, "ECRM_WEBHOOK_RETRY_SCHEDULE"),
        ({"ECRM_WEBHOOK_TIMEOUT": "fast"}, "ECRM_WEBHOOK_TIMEOUT"),
        ({"ECRM_WEBHOOK_TIMEOUT": "0"}, "ECRM_WEBHOOK_TIMEOUT"),
        ({"ECRM_WEBHOOK_TIMEOUT": "600"}, "ECRM_WEBHOOK_TIMEOUT"),
        ({"ECRM_WEBHOOK_ALLOW_PRIVATE": "maybe"}, "ECRM_WEBHOOK_ALLOW_PRIVATE"),
        ({"ECRM_INGEST_MODE": "fast"}, "ECRM_INGEST_MODE"),
        ({"ECRM_ACTION_RETRY_SECONDS": "0"}, "ECRM_ACTION_RETRY_SECONDS"),
        ({"ECRM_ACTION_RETRY_SECONDS": "soon"}, "ECRM_ACTION_RETRY_SECONDS"),
    ],
)
def test_malformed_values_are_one_clear_line(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert needle in message and "\n" not in message


def test_cors_origins_are_parsed() -> None:
    settings = load_settings(
        {"ECRM_CORS_ORIGINS": "https://shop.example.com/, http://localhost:3000"}
    )
    assert settings.cors_origins == ("https://shop.example.com", "http://localhost:3000")
    assert load_settings({"ECRM_CORS_ORIGINS": "*"}).cors_origins == ("*",)
    assert load_settings({}).cors_origins == ()


def test_channel_caps_are_parsed_and_printed() -> None:
    settings = load_settings({"ECRM_CHANNEL_CAPS": " email=3/7d, sms = 1/1d ,"})
    assert dict(settings.channel_caps) == {
        "email": Cap(3, timedelta(days=7)),
        "sms": Cap(1, timedelta(days=1)),
    }
    assert settings.masked()["ECRM_CHANNEL_CAPS"] == "email=3/7d,sms=1/1d"
    assert load_settings({}).channel_caps == {}
    assert load_settings({}).masked()["ECRM_CHANNEL_CAPS"] == "(none)"
    with pytest.raises(SettingsError) as caught:
        load_settings({"ECRM_CHANNEL_CAPS": "fax=1/1d"})
    assert str(caught.value) == "ECRM_CHANNEL_CAPS: unknown channel 'fax'; expected email or sms"
    with pytest.raises(SettingsError) as caught:
        load_settings({"ECRM_CHANNEL_CAPS": "email=3/7y"})
    assert str(caught.value) == (
        "ECRM_CHANNEL_CAPS: email: period '7y': expected a number and m (minutes), h, d or w, "
        "e.g. 7d"
    )


def test_write_keys_map_to_workspaces() -> None:
    settings = load_settings({"ECRM_WRITE_KEYS": "key-one-123, shop2:key-two-456"})
    assert dict(settings.write_keys) == {"key-one-123": "default", "key-two-456": "shop2"}


def test_masked_hides_secrets() -> None:
    settings = load_settings(
        {"ECRM_WRITE_KEYS": "supersecretkey", "ECRM_ADMIN_TOKEN": "admintoken-very-secret"}
    )
    text = " ".join(settings.masked().values())
    assert "supersecretkey" not in text and "admintoken-very-secret" not in text
    assert "supersecretkey" not in repr(settings)


def test_generated_credentials_are_stable_and_private(tmp_path: Path) -> None:
    first = with_local_credentials(load_settings({"ECRM_HOME": str(tmp_path)}))
    second = with_local_credentials(load_settings({"ECRM_HOME": str(tmp_path)}))
    assert first.admin_token and first.admin_token == second.admin_token
    assert first.write_keys == second.write_keys
    assert (tmp_path / "credentials").stat().st_mode & 0o777 == 0o600
    env_wins = with_local_credentials(
        load_settings({"ECRM_HOME": str(tmp_path), "ECRM_ADMIN_TOKEN": "from-env-token"})
    )
    assert env_wins.admin_token == "from-env-token"


def test_webhook_settings_defaults_parsing_and_printing() -> None:
    defaults = load_settings({})
    assert defaults.webhook_retry_schedule == (
        0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400
    )  # fmt: skip
    assert defaults.webhook_timeout == 5.0 and defaults.webhook_allow_private is False
    printed = defaults.masked()
    assert (
        printed["ECRM_WEBHOOK_RETRY_SCHEDULE"] == "0,5,300,1800,7200,18000,36000,50400,72000,86400"
    )
    assert printed["ECRM_WEBHOOK_TIMEOUT"] == "5.0"
    assert printed["ECRM_WEBHOOK_ALLOW_PRIVATE"] == "False"
    custom = load_settings(
        {
            "ECRM_WEBHOOK_RETRY_SCHEDULE": " 0, 1.5 ,60",
            "ECRM_WEBHOOK_TIMEOUT": "2.5",
            "ECRM_WEBHOOK_ALLOW_PRIVATE": "1",
        }
    )
    assert custom.webhook_retry_schedule == (0.0, 1.5, 60.0)
    assert custom.masked()["ECRM_WEBHOOK_RETRY_SCHEDULE"] == "0,1.5,60"
    assert custom.webhook_timeout == 2.5 and custom.webhook_allow_private is True
    with pytest.raises(SettingsError) as caught:
        load_settings({"ECRM_WEBHOOK_RETRY_SCHEDULE": "0,5,soon"})
    assert str(caught.value) == (
        "ECRM_WEBHOOK_RETRY_SCHEDULE: entry 3 ('soon') is not a number of seconds"
    )


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "soon"])
def test_numbers_must_be_finite_and_in_range(raw: str) -> None:
    """A NaN refresh time would compare false forever: a revoked key would never stop."""
    with pytest.raises(SettingsError) as caught:
        load_settings({"ECRM_KEY_REFRESH_SECONDS": raw})
    assert str(caught.value).startswith("ECRM_KEY_REFRESH_SECONDS must be")
    assert load_settings({"ECRM_KEY_REFRESH_SECONDS": "0.5"}).key_refresh_seconds == 0.5
