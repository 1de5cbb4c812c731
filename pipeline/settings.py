"""Settings: every ``ECRM_*`` environment variable, read once into one frozen object.

Why one object: each process (API, worker, scheduler) must agree on the database, the
broker and the secrets, so all of them call :func:`load_settings` at start-up and pass the
result down. Nothing reads the environment later and nothing connects at import time.
A missing or malformed value raises :class:`SettingsError` with one line naming the
variable, which the CLI prints without a traceback.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import phonenumbers
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pipeline.caps import Cap, parse_cap
from pipeline.errors import SettingsError

DEFAULT_WORKSPACE = "default"
_WORKSPACE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss", "sqla+sqlite", "memory")
#: the message channels ``ECRM_CHANNEL_CAPS`` may cap
CAPPED_CHANNELS = ("email", "sms")
_SECRET_NAMES = {"admin_token", "twilio_auth_token", "smtp_password", "erasure_key"}
#: seconds before each webhook delivery attempt: immediately, then about three days of backoff
#: (the Standard Webhooks example schedule); ten attempts in all
DEFAULT_WEBHOOK_SCHEDULE: tuple[float, ...] = (
    0,
    5,
    300,
    1800,
    7200,
    18000,
    36000,
    50400,
    72000,
    86400,
)
_MAX_SCHEDULE_STEPS = 50
_MAX_SCHEDULE_DELAY = 7 * 86400.0
#: a webhook receiver gets this long at most to answer (seconds): slow ones hold a worker
_MAX_WEBHOOK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one hub process."""

    home: Path
    database_url: str
    broker_url: str
    write_keys: Mapping[str, str] = field(repr=False)  # write key -> workspace id
    admin_token: str | None = field(repr=False)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    default_region: str = "US"
    batch_size: int = 500
    batch_lease_seconds: float = 120.0
    relay_interval_seconds: float = 2.0
    worker_concurrency: int = 1
    sqlite_synchronous: str = "NORMAL"
    max_request_bytes: int = 512 * 1024
    max_event_bytes: int = 32 * 1024
    #: ``validate``: a batch is mapped, validated, normalized and appended to the event log
    #: before the answer; ``spool``: checked for shape and stored raw, expanded by a worker
    ingest_mode: str = "validate"
    #: the first wait before an email or SMS refused for now is tried again (doubling)
    action_retry_seconds: float = 30.0
    #: requests a second per write key in each API process (0: no limit), and the burst
    rate_limit: float = 0.0
    rate_burst: int = 100
    #: how long an API process trusts its copy of the database's write keys (a revoked
    #: key stops working within this time in every process)
    key_refresh_seconds: float = 5.0
    #: browser origins allowed to call the tracking API (``*`` for any); empty: no CORS
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_json: bool = False
    #: the base URL the outside world (Twilio) calls the hub at, e.g. behind a proxy
    public_url: str | None = None
    # Twilio (call centre and SMS): inbound webhooks and outbound SMS
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    #: the sender of outbound SMS: an E.164 number or a Messaging Service SID (MG…)
    twilio_from: str | None = None
    #: Twilio's REST API base URL (another region/edge, or a local stand-in in tests)
    twilio_api_url: str = "https://api.twilio.com"
    twilio_greeting: str = "Thank you for calling. Please hold while we connect you."
    #: agent number incoming calls are forwarded to (E.164); none: greet and hang up
    twilio_forward_to: str | None = None
    #: record forwarded calls (both legs, from answer); mind the law on announcing it
    twilio_record_calls: bool = False
    # SMTP (outbound email)
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_timeout_seconds: float = 30.0
    #: CA bundle (PEM) that SMTP server certificates are verified against (default: system's)
    smtp_ca_file: Path | None = None
    #: the From of outbound email (``Shop <care@shop.example>``)
    email_from: str | None = None
    # IMAP mailboxes (configured with ``ecrm mailboxes add``)
    mail_poll_seconds: float = 60.0
    mail_max_bytes: int = 25 * 1024 * 1024
    #: a poller's claim on a folder lasts this long unrenewed (another takes over after a crash)
    mail_lease_seconds: float = 90.0
    #: identity resolution's priorities, limits and blocked values (YAML; default built in)
    identity_config: Path | None = None
    #: the loyalty programme: expiry, tiers, rewards (YAML; default built in)
    loyalty_config: Path | None = None
    # GDPR erasure (identity.erasure): the key of erased identifiers' tombstones (default:
    # derived from the admin token), and whether events matching a tombstone are suppressed
    erasure_key: str | None = field(default=None, repr=False)
    erasure_suppress: bool = False
    #: at most N messages per period per profile on a channel, across all rules
    #: (``email=3/7d,sms=1/1d``); a channel not named is not capped
    channel_caps: Mapping[str, Cap] = field(default_factory=dict)
    # outbound webhooks (connectors.webhooks)
    #: seconds before each delivery attempt, the first included (``0``: at once)
    webhook_retry_schedule: tuple[float, ...] = DEFAULT_WEBHOOK_SCHEDULE
    #: seconds to connect, and again to wait for the answer, on each delivery attempt
    webhook_timeout: float = 5.0
    #: allow http and private/loopback/link-local receivers (tests, closed networks only)
    webhook_allow_private: bool = False
    #: parallel POSTs per endpoint (to different profiles; one profile's stay in order)
    webhook_concurrency: int = 4
    #: a profile's created/updated delivery waits this long; updates meanwhile fold into it
    webhook_coalesce_seconds: float = 2.0
    #: threads of the webhook worker (``ecrm worker --webhooks``): endpoints served at once
    webhook_workers: int = 8
    #: days finished deliveries, their attempts and the passed change feed are kept (0: ever)
    webhook_retention_days: float = 30.0

    @property
    def is_sqlite(self) -> bool:
        """True on the embedded default (SQLite database)."""
        return self.database_url.startswith("sqlite")

    @property
    def is_embedded_broker(self) -> bool:
        """True when the broker is the durable SQLite file in ``ECRM_HOME``."""
        return self.broker_url.startswith("sqla+sqlite")

    def masked(self) -> dict[str, str]:
        """The settings as strings with secrets and passwords hidden, for ``ecrm config``."""
        out: dict[str, str] = {}
        for name in self.__dataclass_fields__:
            value: Any = getattr(self, name)
            if name == "write_keys":
                text = ", ".join(f"{_mask(k)} -> {ws}" for k, ws in value.items()) or "(none)"
            elif name in _SECRET_NAMES:
                text = _mask(value) if value else "(none)"
            elif name in ("database_url", "broker_url"):
                text = _hide_password(value)
            elif name == "channel_caps":
                text = ",".join(f"{ch}={cap.text}" for ch, cap in value.items()) or "(none)"
            elif name == "webhook_retry_schedule":
                text = schedule_text(value)
            else:
                text = str(value)
            out[f"ECRM_{name.upper()}"] = text
        return out


def _mask(secret: str) -> str:
    return secret[:3] + "…" + f"({len(secret)} chars)" if len(secret) > 6 else "***"


def _hide_password(url: str) -> str:
    prefix = "sqla+" if url.startswith("sqla+") else ""
    try:
        return prefix + make_url(url.removeprefix(prefix)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_BASE_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^?#\s]*)?$")


def _base_url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    """An ``http(s)://host[:port][/path]`` URL without a trailing slash."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not _BASE_URL_RE.match(raw):
        raise SettingsError(f"{name} must be a URL like https://hub.example.com, got {raw!r}")
    return raw.rstrip("/")


def _phone(env: Mapping[str, str], name: str, region: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise SettingsError(f"{name} must be a phone number (E.164), got {raw!r}") from None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def default_concurrency() -> int:
    """Worker processes when ``ECRM_WORKER_CONCURRENCY`` is not set: one per core, up to 4.

    Why not 1: a worker waits on the database about as long as it computes, so on 2 cores
    two workers moved ``ecrm bench ingest`` from 6,648 to 8,849 events/s on SQLite and from
    3,812 to 5,093 on PostgreSQL + RabbitMQ. Why at most 4: beyond that, on one machine,
    they queue on the database (SQLite has one write lock) rather than add throughput.
    """
    return max(1, min(os.cpu_count() or 1, 4))


def _float(env: Mapping[str, str], name: str, default: float, low: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if value < low:
        raise SettingsError(f"{name} must be at least {low}, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw not in ("", "0", "1", "false", "true", "no", "yes", "off", "on"):
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw in ("1", "true", "yes", "on")


def _readable_file(env: Mapping[str, str], name: str) -> Path | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise SettingsError(f"{name}: {raw!r} is not a readable file")
    return path


def parse_write_keys(raw: str) -> dict[str, str]:
    """``KEY`` or ``WORKSPACE:KEY`` entries, comma-separated -> {key: workspace}."""
    keys: dict[str, str] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        workspace, sep, key = entry.rpartition(":")
        workspace = workspace if sep else DEFAULT_WORKSPACE
        if not _WORKSPACE_RE.match(workspace):
            raise SettingsError(f"ECRM_WRITE_KEYS: bad workspace name {workspace!r}")
        if len(key) < 8:
            raise SettingsError("ECRM_WRITE_KEYS: each write key needs at least 8 characters")
        keys[key] = workspace
    return keys


def parse_origins(raw: str) -> tuple[str, ...]:
    """``*`` or comma-separated ``scheme://host[:port]`` origins, as browsers send them."""
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    for origin in origins:
        if origin != "*" and not _ORIGIN_RE.match(origin):
            raise SettingsError(
                f"ECRM_CORS_ORIGINS: {origin!r} is not an origin like https://shop.example.com"
            )
    return origins


def parse_channel_caps(raw: str) -> dict[str, Cap]:
    """``email=3/7d,sms=1/1d`` -> {channel: Cap}; each channel once, email or sms."""
    caps: dict[str, Cap] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        channel, sep, text = (part.strip() for part in entry.partition("="))
        if not sep:
            raise SettingsError(
                f"ECRM_CHANNEL_CAPS: {entry!r} is not CHANNEL=MAX/PERIOD, e.g. email=3/7d"
            )
        if channel not in CAPPED_CHANNELS:
            raise SettingsError(
                f"ECRM_CHANNEL_CAPS: unknown channel {channel!r}; expected "
                f"{' or '.join(CAPPED_CHANNELS)}"
            )
        if channel in caps:
            raise SettingsError(f"ECRM_CHANNEL_CAPS: {channel} is given twice")
        try:
            caps[channel] = parse_cap(text)
        except ValueError as exc:
            raise SettingsError(f"ECRM_CHANNEL_CAPS: {channel}: {exc}") from None
    return caps


def parse_schedule(text: str) -> tuple[float, ...]:
    """``0,5,300`` -> seconds before each attempt; :class:`ValueError` says what was wrong.

    Why it lives here: ``ECRM_WEBHOOK_RETRY_SCHEDULE`` is read with the other settings, and
    the pipeline must not import connectors; :mod:`connectors.webhooks.schedule` re-exports it.
    """
    entries = [part.strip() for part in text.split(",")]
    if not any(entries):
        raise ValueError("expected comma-separated seconds, e.g. 0,5,300,1800")
    if len(entries) > _MAX_SCHEDULE_STEPS:
        raise ValueError(f"at most {_MAX_SCHEDULE_STEPS} attempts, got {len(entries)}")
    delays: list[float] = []
    for position, entry in enumerate(entries, start=1):
        try:
            delay = float(entry)
        except ValueError:
            raise ValueError(f"entry {position} ({entry!r}) is not a number of seconds") from None
        if not 0 <= delay <= _MAX_SCHEDULE_DELAY:  # also refuses nan and inf
            raise ValueError(
                f"entry {position} ({entry!r}) must be between 0 and "
                f"{_MAX_SCHEDULE_DELAY:g} seconds"
            )
        delays.append(delay)
    return tuple(delays)


def schedule_text(schedule: tuple[float, ...]) -> str:
    """A schedule as ``ECRM_WEBHOOK_RETRY_SCHEDULE`` writes it: ``0,5,300``."""
    return ",".join(f"{delay:g}" for delay in schedule)


def _schedule(env: Mapping[str, str], name: str) -> tuple[float, ...]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return DEFAULT_WEBHOOK_SCHEDULE
    try:
        return parse_schedule(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _webhook_timeout(env: Mapping[str, str]) -> float:
    value = _float(env, "ECRM_WEBHOOK_TIMEOUT", 5.0, 0.1)
    if value > _MAX_WEBHOOK_TIMEOUT:
        raise SettingsError(
            f"ECRM_WEBHOOK_TIMEOUT must be at most {_MAX_WEBHOOK_TIMEOUT:g} seconds, got {value:g}"
        )
    return value


def normalize_database_url(url: str) -> str:
    """Validate a database URL and pick the psycopg 3 driver for plain ``postgresql://``."""
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018  (a non-numeric port raises here, not later)
    except (ArgumentError, ValueError):
        raise SettingsError(
            f"ECRM_DATABASE_URL is not a database URL: {_hide_password(url)!r}"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise SettingsError("ECRM_DATABASE_URL must be sqlite:///FILE or postgresql://…")
    return parsed.render_as_string(hide_password=False)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``ECRM_*`` variables (from ``environ`` or the process environment)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("ECRM_HOME") or ".ecrm").expanduser().absolute()
    database_url = normalize_database_url(
        env.get("ECRM_DATABASE_URL") or f"sqlite:///{home / 'hub.sqlite'}"
    )
    broker_url = env.get("ECRM_BROKER_URL") or f"sqla+sqlite:///{home / 'broker.sqlite'}"
    if not broker_url.startswith(tuple(s + "://" for s in _BROKER_SCHEMES)):
        raise SettingsError(
            f"ECRM_BROKER_URL must start with one of {', '.join(_BROKER_SCHEMES)}://, "
            f"got {_hide_password(broker_url)!r}"
        )
    region = (env.get("ECRM_DEFAULT_REGION") or "US").upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise SettingsError(f"ECRM_DEFAULT_REGION must be an ISO country code, got {region!r}")
    sync = (env.get("ECRM_SQLITE_SYNCHRONOUS") or "NORMAL").upper()
    if sync not in ("NORMAL", "FULL"):
        raise SettingsError("ECRM_SQLITE_SYNCHRONOUS must be NORMAL or FULL")
    ingest_mode = (env.get("ECRM_INGEST_MODE") or "validate").lower()
    if ingest_mode not in ("validate", "spool"):
        raise SettingsError(f"ECRM_INGEST_MODE must be validate or spool, got {ingest_mode!r}")
    security = (env.get("ECRM_SMTP_SECURITY") or "starttls").lower()
    if security not in ("starttls", "tls", "none"):
        raise SettingsError("ECRM_SMTP_SECURITY must be starttls, tls or none")
    twilio_from = (env.get("ECRM_TWILIO_FROM") or "").strip() or None
    if twilio_from and not twilio_from.startswith("MG"):
        twilio_from = _phone(env, "ECRM_TWILIO_FROM", region)
    return Settings(
        home=home,
        database_url=database_url,
        broker_url=broker_url,
        write_keys=parse_write_keys(env.get("ECRM_WRITE_KEYS", "")),
        admin_token=env.get("ECRM_ADMIN_TOKEN") or None,
        http_host=env.get("ECRM_HTTP_HOST") or "127.0.0.1",
        http_port=_int(env, "ECRM_HTTP_PORT", 8000, 1, 65535),
        default_region=region,
        batch_size=_int(env, "ECRM_BATCH_SIZE", 500, 1, 10_000),
        batch_lease_seconds=_float(env, "ECRM_BATCH_LEASE_SECONDS", 120.0, 1.0),
        relay_interval_seconds=_float(env, "ECRM_RELAY_INTERVAL_SECONDS", 2.0, 0.1),
        worker_concurrency=_int(env, "ECRM_WORKER_CONCURRENCY", default_concurrency(), 1, 256),
        sqlite_synchronous=sync,
        max_request_bytes=_int(env, "ECRM_MAX_REQUEST_BYTES", 512 * 1024, 1024, 64 * 1024**2),
        max_event_bytes=_int(env, "ECRM_MAX_EVENT_BYTES", 32 * 1024, 256, 16 * 1024**2),
        ingest_mode=ingest_mode,
        action_retry_seconds=_float(env, "ECRM_ACTION_RETRY_SECONDS", 30.0, 0.1),
        rate_limit=_float(env, "ECRM_RATE_LIMIT", 0.0, 0.0),
        rate_burst=_int(env, "ECRM_RATE_BURST", 100, 1, 1_000_000),
        key_refresh_seconds=_float(env, "ECRM_KEY_REFRESH_SECONDS", 5.0, 0.0),
        cors_origins=parse_origins(env.get("ECRM_CORS_ORIGINS", "")),
        log_level=(env.get("ECRM_LOG_LEVEL") or "INFO").upper(),
        log_json=(env.get("ECRM_LOG_FORMAT") or "console").lower() == "json",
        public_url=_base_url(env, "ECRM_PUBLIC_URL", None),
        twilio_account_sid=(env.get("ECRM_TWILIO_ACCOUNT_SID") or "").strip() or None,
        twilio_auth_token=env.get("ECRM_TWILIO_AUTH_TOKEN") or None,
        twilio_from=twilio_from,
        twilio_api_url=_base_url(env, "ECRM_TWILIO_API_URL", "https://api.twilio.com")
        or "https://api.twilio.com",
        twilio_greeting=(env.get("ECRM_TWILIO_GREETING") or "").strip() or Settings.twilio_greeting,
        twilio_forward_to=_phone(env, "ECRM_TWILIO_FORWARD_TO", region),
        twilio_record_calls=_flag(env, "ECRM_TWILIO_RECORD_CALLS"),
        smtp_host=(env.get("ECRM_SMTP_HOST") or "").strip() or None,
        smtp_port=_int(env, "ECRM_SMTP_PORT", 465 if security == "tls" else 587, 1, 65535),
        smtp_security=security,
        smtp_user=env.get("ECRM_SMTP_USER") or None,
        smtp_password=env.get("ECRM_SMTP_PASSWORD") or None,
        smtp_timeout_seconds=_float(env, "ECRM_SMTP_TIMEOUT_SECONDS", 30.0, 1.0),
        smtp_ca_file=_readable_file(env, "ECRM_SMTP_CA_FILE"),
        email_from=(env.get("ECRM_EMAIL_FROM") or "").strip() or None,
        mail_poll_seconds=_float(env, "ECRM_MAIL_POLL_SECONDS", 60.0, 1.0),
        mail_max_bytes=_int(env, "ECRM_MAIL_MAX_BYTES", 25 * 1024**2, 1024, 1024**3),
        mail_lease_seconds=_float(env, "ECRM_MAIL_LEASE_SECONDS", 90.0, 2.0),
        identity_config=_readable_file(env, "ECRM_IDENTITY_CONFIG"),
        loyalty_config=_readable_file(env, "ECRM_LOYALTY_CONFIG"),
        erasure_key=_erasure_key(env),
        erasure_suppress=_flag(env, "ECRM_ERASURE_SUPPRESS"),
        channel_caps=parse_channel_caps(env.get("ECRM_CHANNEL_CAPS", "")),
        webhook_retry_schedule=_schedule(env, "ECRM_WEBHOOK_RETRY_SCHEDULE"),
        webhook_timeout=_webhook_timeout(env),
        webhook_allow_private=_flag(env, "ECRM_WEBHOOK_ALLOW_PRIVATE"),
        webhook_concurrency=_int(env, "ECRM_WEBHOOK_CONCURRENCY", 4, 1, 64),
        webhook_coalesce_seconds=_float(env, "ECRM_WEBHOOK_COALESCE_SECONDS", 2.0, 0.0),
        webhook_workers=_int(env, "ECRM_WEBHOOK_WORKERS", 8, 1, 256),
        webhook_retention_days=_float(env, "ECRM_WEBHOOK_RETENTION_DAYS", 30.0, 0.0),
    )


def _erasure_key(env: Mapping[str, str]) -> str | None:
    raw = env.get("ECRM_ERASURE_KEY") or None
    if raw is not None and len(raw) < 16:
        raise SettingsError("ECRM_ERASURE_KEY needs at least 16 characters")
    return raw


def with_local_credentials(settings: Settings) -> Settings:
    """Fill in a write key and admin token the embedded default generates for itself.

    A first-time user should not have to invent secrets, yet the API must never run open.
    Missing values are generated once into ``ECRM_HOME/credentials`` (mode 0600) and reused;
    values from the environment always win.
    """
    if settings.write_keys and settings.admin_token:
        return settings
    path = settings.home / "credentials"
    stored: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, value = line.partition("=")
            stored[name.strip()] = value.strip()
    if "ECRM_WRITE_KEYS" not in stored or "ECRM_ADMIN_TOKEN" not in stored:
        stored.setdefault("ECRM_WRITE_KEYS", "wk_" + secrets.token_urlsafe(18))
        stored.setdefault("ECRM_ADMIN_TOKEN", "adm_" + secrets.token_urlsafe(24))
        settings.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(f"{k}={v}\n" for k, v in stored.items()))
    return replace(
        settings,
        write_keys=settings.write_keys or parse_write_keys(stored["ECRM_WRITE_KEYS"]),
        admin_token=settings.admin_token or stored["ECRM_ADMIN_TOKEN"],
    )
