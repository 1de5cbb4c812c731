"""Mailbox settings: validation, the password reference, and the reconnect backoff."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from connectors.email import MailboxSettings, PasswordUnavailable
from connectors.email.watch import BACKOFF_CAP_SECONDS, Backoff
from pipeline import ValidationError

GOOD = MailboxSettings(
    name="support",
    host="imap.example.com",
    port=993,
    security="tls",
    username="care@shop.example",
    password_env="SUPPORT_IMAP_PASSWORD",
    folders=("INBOX", "Support/Escalations"),
)


def test_valid_settings_pass() -> None:
    GOOD.validate()
    assert GOOD.password_source == "env:SUPPORT_IMAP_PASSWORD"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Support Box"}, "name"),
        ({"host": "imap example.com"}, "host"),
        ({"port": 0}, "port"),
        ({"security": "ssl"}, "security"),
        ({"username": ""}, "user"),
        ({"password_env": None}, "password"),
        ({"password_file": "/run/secrets/imap"}, "password"),
        ({"password_env": "BAD-NAME"}, "password_env"),
        ({"password_env": None, "password_file": "relative/path"}, "password_file"),
        ({"folders": ()}, "folder"),
        ({"folders": ("INBOX", "INBOX")}, "folder"),
        ({"folders": ("bad\r\nname",)}, "folder"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        replace(GOOD, **change).validate()  # type: ignore[arg-type]
    assert error.value.field == field


def test_password_from_environment_or_file_never_echoed(tmp_path: Path) -> None:
    assert GOOD.password({"SUPPORT_IMAP_PASSWORD": "s3cret"}) == "s3cret"
    with pytest.raises(PasswordUnavailable) as missing:
        GOOD.password({})
    assert "SUPPORT_IMAP_PASSWORD is not set" in str(missing.value)

    secret = tmp_path / "imap-password"
    secret.write_text("app password with spaces\n")
    from_file = replace(GOOD, password_env=None, password_file=str(secret))
    assert from_file.password({}) == "app password with spaces"
    assert from_file.password_source == f"file:{secret}"
    secret.write_text("\n")
    with pytest.raises(PasswordUnavailable, match="is empty"):
        from_file.password({})
    secret.unlink()
    with pytest.raises(PasswordUnavailable, match="cannot read the password file"):
        from_file.password({})


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(12)]
    for attempt, delay in enumerate(delays[:8]):
        assert 0.5 * 2**attempt <= delay <= 2**attempt
    assert all(BACKOFF_CAP_SECONDS / 2 <= d <= BACKOFF_CAP_SECONDS for d in delays[9:])
    backoff.reset()
    assert backoff.next_delay() <= 1.0
