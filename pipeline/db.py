"""Database engine and sessions for SQLite (embedded default) and PostgreSQL.

Why the SQLite set-up looks like this: several processes (API, worker, scheduler) share one
file, so it runs in WAL mode (readers never block the writer) with a busy timeout, and
every *write* transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up front,
so a transaction that read a row can never be refused the lock later (SQLite's classic
``database is locked`` upgrade deadlock). Read-only sessions use a plain ``BEGIN``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Delete,
    Integer,
    String,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, CursorResult, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

#: Auto-increment big integer that stays SQLite's fast rowid alias.
BigId = BigInteger().with_variant(Integer, "sqlite")
#: JSON everywhere, JSONB on PostgreSQL.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


def sqlite_time(value: datetime) -> str:
    """An aware time as SQLite stores it: UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``.

    Exactly what SQLAlchemy's own formatter writes, so it sorts and compares as time; also
    used by ingest, which binds event rows without SQLAlchemy's per-value processors.
    A time read from SQLite is written back as the text it was read from (see
    :data:`_READ_TEXTS`).
    """
    known = _READ_TEXTS.get(value)
    if known is not None:
        return known
    if value.tzinfo is not UTC:  # the hub's own times are already UTC: no call
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
    # what value.isoformat(" ", "microseconds")[:26] gives, in half its time (measured)
    return _TIME_TEXT % (
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


_TIME_TEXT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"
_TIME_TEXT_LENGTH = len("2026-01-01 00:00:00.000000")

#: the text of times recently read from SQLite, by value. Why: the worker reads each
#: event's time and its profiles' times, then writes most of them back (the timeline, a
#: profile's first/last seen, the optimistic ``updated_at`` guard): four formattings per
#: event, 6% of the worker's CPU (py-spy), where a dictionary hit costs a tenth. Bounded.
_READ_TEXTS: dict[datetime, str] = {}
_READ_TEXTS_MOST = 20_000  # about 3 MB


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always returned aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    # PostgreSQL (timestamptz) goes through these two; SQLite through the processors below.

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    # On SQLite, the text is written and read here in C (``isoformat``/``fromisoformat``)
    # instead of by SQLAlchemy's generic formatter and regular expression: a fifth of the
    # worker's time went there. The stored text is byte for byte what SQLAlchemy writes
    # (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC), so it still sorts and compares as time.

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            return None if value is None else sqlite_time(value)

        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        texts, most = _READ_TEXTS, _READ_TEXTS_MOST

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            # parsing the offset is cheaper than replace(tzinfo=UTC) afterwards
            parsed = datetime.fromisoformat(value + "+00:00")
            # only text in the exact form sqlite_time writes is remembered, so a stored
            # time in another form ("... 09:00:00", "...T09:00") is never written back
            if len(value) == _TIME_TEXT_LENGTH and value[10] == " ":
                if len(texts) >= most:
                    texts.clear()
                texts[parsed] = value
            return parsed

        return process


class Base(DeclarativeBase):
    """Declarative base shared by every package's tables (one metadata, one migration)."""


def json_text(value: Any) -> str:
    """A JSON column's value as the text both engines are given (one ``orjson`` call)."""
    return orjson.dumps(value).decode()


def create_db_engine(database_url: str, *, sqlite_synchronous: str = "NORMAL") -> Engine:
    """An engine configured for the hub's concurrency model (see the module docstring)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            json_serializer=json_text,
            json_deserializer=orjson.loads,
            connect_args={"timeout": 60, "isolation_level": None, "check_same_thread": False},
        )
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    return create_engine(
        url,
        json_serializer=json_text,
        json_deserializer=orjson.loads,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        # Plans made with the values: psycopg prepares a statement after five runs and
        # PostgreSQL then reuses a generic plan, which for ``id = ANY(:array)`` on a young
        # table (no statistics yet, the first minutes of an import) scans the workspace and
        # compares each row with each array element: 25-40 ms a batch query instead of 1.
        connect_args={"options": "-c plan_cache_mode=force_custom_plan"},
    )


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")  # validated in settings
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("ecrm_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@dataclass(frozen=True)
class Database:
    """One engine plus the two session factories every process uses."""

    engine: Engine
    _reader: sessionmaker[Session]
    _writer: sessionmaker[Session]
    #: SQLite only: this process's writers queue here, not in SQLite's busy handler
    _write_lock: threading.RLock | None = None

    @classmethod
    def connect(cls, database_url: str, *, sqlite_synchronous: str = "NORMAL") -> Database:
        engine = create_db_engine(database_url, sqlite_synchronous=sqlite_synchronous)
        writer_engine = engine.execution_options(ecrm_write=True)
        return cls(
            engine=engine,
            _reader=sessionmaker(engine, expire_on_commit=False),
            _writer=sessionmaker(writer_engine, expire_on_commit=False),
            _write_lock=threading.RLock() if engine.dialect.name == "sqlite" else None,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction: committed on success, rolled back on error.

        On SQLite, threads of one process (the API's request threads and its relay) take
        turns on a lock first. SQLite's own busy handler makes a waiting writer sleep and
        poll, with sleeps growing to 100 ms, so the write lock sat idle while requests
        slept: measured, a third of the API's time under 8 concurrent clients. Writers in
        other processes still meet SQLite's lock (``BEGIN IMMEDIATE``, busy timeout).
        """
        if self._write_lock is None:
            with self._writer() as session, session.begin():
                yield session
            return
        with self._write_lock, self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only (never takes SQLite's write lock)."""
        with self._reader() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def dialect_insert(session: Session) -> Any:
    """The dialect's ``insert`` (it has ``on_conflict_do_nothing``/``_do_update``)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def first_id_since(session: Session, table: Table, horizon: datetime) -> int:
    """The lowest id of a row created at or after ``horizon`` (past the newest if none).

    For tables whose ids grow with ``created_at`` (append-only logs): everything below the
    answer is older than ``horizon``, found by walking the primary key over only those rows.
    """
    young = session.scalar(
        select(table.c.id).where(table.c.created_at >= horizon).order_by(table.c.id).limit(1)
    )
    if young is not None:
        return int(young)
    return int(session.scalar(select(func.coalesce(func.max(table.c.id), 0))) or 0) + 1


def deleted(session: Session, statement: Delete) -> int:
    """Run a ``DELETE``; how many rows it removed."""
    result = cast(CursorResult[Any], session.execute(statement))
    return int(result.rowcount or 0)


def in_write_chunks(db: Database, step: Callable[[Session], int], chunk: int, most: int) -> int:
    """Run ``step`` in a write transaction of its own, again while it handles a full
    ``chunk`` of rows and fewer than ``most`` are done; the rows handled in all.

    Why: a clean-up of many rows as one transaction would hold SQLite's single write lock
    throughout, and a crash would lose all of it instead of the last chunk.
    """
    total = 0
    while total < most:
        with db.write() as session:
            done = step(session)
        total += done
        if done < chunk:
            break
    return total


def listed(session: Session, values: list[str]) -> Any:
    """The strings ``values`` as a table with one column, ``value``, bound as one value.

    Why: a query that must do something per value (a correlated subquery for each
    profile, say) selects from this, with the statement text the same for any length, as
    :func:`in_list` does: ``unnest`` of an array on PostgreSQL, ``json_each`` on SQLite.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        array = bindparam(None, values, type_=ARRAY(String))
        return func.unnest(array).table_valued("value").render_derived()
    document = bindparam(None, orjson.dumps(values).decode(), type_=String)
    return func.json_each(document).table_valued("value")


def in_list(session: Session, column: Any, values: list[Any]) -> Any:
    """``column IN values`` that stays cheap for long lists (values: strings or integers).

    Why not ``column.in_(values)``: SQLAlchemy expands it into one parameter per value at
    every execution (about a tenth of the worker's CPU, py-spy), and each list length is
    another statement text for the driver to prepare. Here the list is bound once, as one
    value: on PostgreSQL an array (``= ANY(:values)``), on SQLite a JSON array read with
    ``json_each`` (``IN (SELECT value FROM json_each(?))``, still an index search for
    each value, as ``EXPLAIN QUERY PLAN`` shows). The statement text is the same for any
    length.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    document = bindparam(None, orjson.dumps(values).decode(), type_=String)
    listed = func.json_each(document).table_valued("value")
    return column.in_(select(listed.c.value))
