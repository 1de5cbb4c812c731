"""The durable embedded broker: kombu's SQLAlchemy transport on SQLite, tuned.

Why this one (numbers from ``benchmarks/broker_transports.py`` on this 2-core machine,
published/consumed messages per second): stock ``sqla+sqlite`` 311/370, stock
``filesystem`` 2,740/971, Redis 2,520/1,033, RabbitMQ 10,124/7,069. A queue message carries
a batch of up to ``ECRM_BATCH_SIZE`` events, so even 300 messages/s moves 150,000
events/s: the broker is not the limit. Durability decides: SQLite commits each message
(WAL), while the filesystem transport neither flushes its files nor writes them
atomically (a reader can take a half-written file), and orders them by a clock that
restarts at boot.

What we change in kombu's transport, and why:

* the database file runs in WAL mode with a busy timeout, so API, worker and scheduler
  processes share it without ``database is locked`` failures;
* a message is *deleted* when taken (stock kombu only hides it, and the table grows
  forever); like stock kombu, a message in flight when a worker is ``kill -9``-ed is not
  redelivered by the broker: the hub's sweep re-enqueues its batch from the event log;
* the idle polling interval drops from 1 s to 0.1 s, for latency;
* a queue row is created with ``INSERT OR IGNORE``: stock kombu guards creation with a
  thread lock only, so two processes declaring the same queue at start-up (``ecrm run``
  starts four) raced into a UNIQUE failure that left the channel's session unusable
  for good (beat then failed every schedule). :func:`prepare` also creates the tables
  and queues once, before the children start.
"""

from __future__ import annotations

from collections.abc import Iterable
from json import loads
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.connection import Connection
from kombu.transport import sqlalchemy as kombu_sqla
from kombu.utils.encoding import bytes_to_str
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.dialects.sqlite import insert

EMBEDDED_PREFIX = "sqla+sqlite://"
TRANSPORT_PATH = "pipeline.broker:SQLiteTransport"


class SQLiteChannel(kombu_sqla.Channel):  # type: ignore[misc]
    """kombu's SQLAlchemy channel with WAL, busy timeout and delete-on-receive."""

    def _engine_from_config(self) -> Any:
        url = self.connection.client.hostname
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine

    def _get_or_create(self, queue: str) -> Any:
        """The queue's row, created if missing, safely across processes."""
        find = select(self.queue_cls).where(self.queue_cls.name == queue)
        obj = self.session.scalars(find).first()
        if obj is None:
            table = self.queue_cls.__table__
            self.session.execute(insert(table).values(name=queue).on_conflict_do_nothing())
            self.session.commit()
            obj = self.session.scalars(find).one()
        return obj

    def _get(self, queue: str, timeout: Any = None) -> Any:
        obj = self._get_or_create(queue)
        self.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            msg = (
                self.session.query(self.message_cls)
                .filter(self.message_cls.queue_id == obj.id)
                .order_by(self.message_cls.id)
                .limit(1)
                .first()
            )
            if msg is None:
                raise Empty()
            payload = msg.payload
            self.session.delete(msg)
            return loads(bytes_to_str(payload))
        finally:
            self.session.commit()


class SQLiteTransport(kombu_sqla.Transport):  # type: ignore[misc]
    """Transport class named by :data:`TRANSPORT_PATH` for the embedded default."""

    Channel = SQLiteChannel
    polling_interval = 0.1


def prepare(broker_url: str, queues: Iterable[str]) -> None:
    """Create the embedded broker's tables and ``queues`` before processes share it."""
    url, transport = embedded_connection_args(broker_url)
    if transport is None:
        return
    with Connection(url, transport=transport) as connection:
        channel = connection.default_channel
        for queue in queues:
            channel.queue_declare(queue)


def embedded_connection_args(broker_url: str) -> tuple[str, str | None]:
    """(URL, transport) for kombu/Celery: our transport for ``sqla+sqlite://`` URLs."""
    if broker_url.startswith(EMBEDDED_PREFIX):
        database_url = broker_url.removeprefix("sqla+")
        path = database_url.removeprefix("sqlite:///")
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return database_url, TRANSPORT_PATH
    return broker_url, None
