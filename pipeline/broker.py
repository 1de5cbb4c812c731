"""The durable embedded broker: kombu's SQLAlchemy transport on SQLite, tuned.

Why this one (numbers from ``benchmarks/broker_transports.py`` on this 2-core machine,
published/consumed messages per second, 2026-12-03): this tuned transport 6,771/7,117,
stock ``sqla+sqlite`` 269/304, stock ``filesystem`` 5,278/974, Redis 1,366/541, RabbitMQ
9,759/6,631. A queue message carries a batch of up to ``ECRM_BATCH_SIZE`` events, so the
broker is not the limit. Durability decides: SQLite commits each message (WAL), while the
filesystem transport neither flushes its files nor writes them atomically (a reader can
take a half-written file), and orders them by a clock that restarts at boot.

What we change in kombu's transport, and why:

* the database file runs in WAL mode with a busy timeout, so API, worker and scheduler
  processes share it without ``database is locked`` failures;
* a message is *deleted* when taken (stock kombu only hides it, and the table grows
  forever); like stock kombu, a message in flight when a worker is ``kill -9``-ed is not
  redelivered by the broker: the hub's sweep re-enqueues its batch from the event log;
* the idle polling interval drops from 1 s to 0.1 s, for latency, and messages are sent
  and received with plain ``sqlite3`` statements (see :class:`SQLiteChannel`);
* a queue row is created with ``INSERT OR IGNORE``: stock kombu guards creation with a
  thread lock only, so two processes declaring the same queue at start-up (``ecrm run``
  starts four) raced into a UNIQUE failure that left the channel's session unusable
  for good (beat then failed every schedule). :func:`prepare` also creates the tables
  and queues once, before the children start.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from json import dumps, loads
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.connection import Connection
from kombu.transport import sqlalchemy as kombu_sqla
from kombu.utils.encoding import bytes_to_str
from sqlalchemy import create_engine, event, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import make_url

EMBEDDED_PREFIX = "sqla+sqlite://"
TRANSPORT_PATH = "pipeline.broker:SQLiteTransport"


class SQLiteChannel(kombu_sqla.Channel):  # type: ignore[misc]
    """kombu's SQLAlchemy channel with WAL, busy timeout, delete-on-receive and plain SQL.

    Why plain ``sqlite3`` for sending and receiving: kombu's ORM path cost about 0.5 ms of
    CPU for every poll (a queue lookup, ``BEGIN IMMEDIATE``, an ORM query, a commit), and a
    worker polls each of its queues after every message and ten times a second when idle:
    measured with py-spy, a sixth of the embedded worker's CPU went to polling. Here a poll
    is one indexed read, and only a message found takes the write lock (to delete it).
    Declaring, sizing and purging queues stay on kombu's code.
    """

    _raw: sqlite3.Connection | None = None
    _raw_pid = 0

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        #: queue name -> row id, looked up once (kombu never deletes queue rows)
        self._queue_ids: dict[str, int] = {}
        super().__init__(connection, **kwargs)

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

    def _queue_id(self, queue: str) -> int:
        found = self._queue_ids.get(queue)
        if found is None:
            found = self._queue_ids[queue] = int(self._get_or_create(queue).id)
        return found

    def _connection(self) -> sqlite3.Connection:
        """This process's own autocommit connection (a forked child opens its own).

        Called after a queue lookup, so kombu has created its tables by then.
        """
        if self._raw is None or self._raw_pid != os.getpid():
            path = make_url(self.connection.client.hostname).database or ""
            raw = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            raw.execute("PRAGMA busy_timeout=60000")
            raw.execute("PRAGMA synchronous=NORMAL")
            raw.execute(_QUEUE_INDEX)  # polls read a queue's messages in id order
            self._raw, self._raw_pid = raw, os.getpid()
        return self._raw

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        queue_id = self._queue_id(queue)
        self._connection().execute(_PUT, (dumps(payload), queue_id))

    def _get(self, queue: str, timeout: Any = None) -> Any:
        queue_id = self._queue_id(queue)
        raw = self._connection()
        while True:
            row = raw.execute(_OLDEST, (queue_id,)).fetchone()
            if row is None:
                raise Empty()
            # autocommit: the delete is its own transaction; 0 rows means another
            # consumer took this message between the read and the delete
            if raw.execute(_TAKE, (row[0],)).rowcount == 1:
                return loads(bytes_to_str(row[1]))

    def close(self) -> None:
        if self._raw is not None and self._raw_pid == os.getpid():
            self._raw.close()
        self._raw = None
        super().close()


#: the poll's read: a queue's oldest message, through :data:`_QUEUE_INDEX`
_OLDEST = "SELECT id, payload FROM kombu_message WHERE queue_id = ? ORDER BY id LIMIT 1"
_TAKE = "DELETE FROM kombu_message WHERE id = ?"
_PUT = "INSERT INTO kombu_message (visible, payload, version, queue_id) VALUES (1, ?, 1, ?)"
_QUEUE_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_kombu_message_queue_id ON kombu_message (queue_id, id)"
)


class SQLiteTransport(kombu_sqla.Transport):  # type: ignore[misc]
    """Transport class named by :data:`TRANSPORT_PATH` for the embedded default."""

    Channel = SQLiteChannel
    polling_interval = 0.1
    connection_errors = (  # type: ignore[assignment]
        *kombu_sqla.Transport.connection_errors,
        sqlite3.OperationalError,
    )


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
