"""Shared fixtures: real backends with unique names, and ``ecrm`` processes over HTTP.

Every fixture creates its own database / virtual host / Redis database so runs never
collide, and removes it afterwards. Backends are the machine's real PostgreSQL, RabbitMQ
and Redis (see README: the CI script starts any that is down).
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from identity.config import IdentityConfig
from pipeline import Database, ingest, load_settings
from pipeline.outbox import relay
from pipeline.schema import upgrade
from workers.processing import process_batches

PG_ADMIN_URL = os.environ.get("ECRM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBIT_URL = os.environ.get("ECRM_TEST_RABBIT", "amqp://guest:guest@127.0.0.1:5672")
REDIS_URL = os.environ.get("ECRM_TEST_REDIS", "redis://127.0.0.1:6379")
WRITE_KEY = "wk_test_0123456789"
ADMIN_TOKEN = "adm_test_0123456789abcdef"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.sqlite'}"


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """The URL of a new PostgreSQL database, dropped afterwards."""
    name = unique("ecrm_test")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://")
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def rabbit_url() -> Iterator[str]:
    """A fresh RabbitMQ virtual host (via rabbitmqctl), deleted afterwards."""
    vhost = unique("ecrm_test")
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    yield f"{RABBIT_URL}/{vhost}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


LOCK = "ecrm:test:lock"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty Redis database number (1-15), flushed afterwards.

    A number is taken by setting its lock key; whatever else is in it then is left over
    (a hub's beat can publish to its queues after a test's teardown flushed them, since
    this fixture ends before ``hub_factory`` stops the hub), and is deleted.
    """
    client = redis.Redis.from_url(REDIS_URL)
    for number in range(15, 0, -1):
        probe = redis.Redis.from_url(f"{REDIS_URL}/{number}")
        if probe.set(LOCK, "1", nx=True, ex=3600):
            for key in probe.scan_iter():
                if key != LOCK.encode():
                    probe.delete(key)
            break
    else:
        pytest.fail("no free Redis database number")
    yield f"{REDIS_URL}/{number}"
    probe.flushdb()
    client.close()


def ingest_and_process(
    db: Database,
    *batches: list[dict[str, Any]],
    config: IdentityConfig | None = None,
    batch_size: int = 500,
    workspace_id: str = "default",
) -> list[list[int]]:
    """Ingest each list in one transaction (all accepted) and process it, as the hub's
    worker does, before the next; the queue messages (lists of event ids) processed."""
    messages: list[list[int]] = []
    for items in batches:
        with db.write() as session:
            results = ingest(session, items, workspace_id=workspace_id, default_region="US")
        assert {r.status for r in results} == {"accepted"}, [r.reason for r in results]
        published: list[list[int]] = []
        relay(db, published.append, batch_size=batch_size, lease_seconds=60)
        for message in published:
            process_batches(db, message, config)
        messages.extend(published)
    return messages


def migrated(url: str) -> Database:
    db = Database.connect(url)
    upgrade(db)
    return db


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    db = migrated(sqlite_url)
    yield db
    db.dispose()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[Database]:
    db = migrated(postgres_url)
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request: pytest.FixtureRequest) -> Database:
    """The same test on SQLite and on PostgreSQL."""
    name = "sqlite_db" if request.param == "sqlite" else "postgres_db"
    db: Database = request.getfixturevalue(name)
    return db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hub_processes(home: Path) -> dict[int, str]:
    """Live (non-zombie) processes whose environment names this ``ECRM_HOME``.

    Returns pid -> "ppid=<parent> <command line>" (the parent tells a forked grandchild
    from the process whose command line it shares).
    """
    marker = f"ECRM_HOME={home}".encode() + b"\0"
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes():
                continue
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours
            continue
        if state != "Z":
            found[int(entry.name)] = f"ppid={ppid} {cmdline.strip()}"
    return found


def listening_sockets(port: int) -> set[str]:
    """Inodes (as ``socket:[N]``) of the TCP sockets listening on ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


@dataclass
class Hub:
    """One hub configuration (home, database, broker) and the processes started for it."""

    home: Path
    database_url: str
    broker_url: str
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
        env.update(
            ECRM_HOME=str(self.home),
            ECRM_DATABASE_URL=self.database_url,
            ECRM_BROKER_URL=self.broker_url,
            ECRM_WRITE_KEYS=WRITE_KEY,
            ECRM_ADMIN_TOKEN=ADMIN_TOKEN,
            ECRM_HTTP_PORT=str(self.port),
            ECRM_RELAY_INTERVAL_SECONDS="0.5",
            ECRM_LOG_LEVEL="WARNING",
            # one solo worker unless a test asks for more: hubs start faster, 2 cores shared
            ECRM_WORKER_CONCURRENCY="1",
        )
        env.update(self.extra_env)
        return env

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``ecrm ARGS`` with this hub's settings; output goes to ``home/<cmd>.log``."""
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / f"{args[0]}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.base_url}/healthz", timeout=2)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"hub not healthy after {timeout}s: {last}\n{self.logs()}")

    def serves_its_port(self) -> bool:
        """True when the socket listening on the port belongs to one of this hub's processes."""
        inodes = listening_sockets(self.port)
        for pid in hub_processes(self.home):
            try:
                if any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()):
                    return True
            except OSError:
                continue
        return False

    def assert_alive(self) -> None:
        """Every process of the hub is still running (else: exit codes and logs)."""
        codes = {" ".join(map(str, p.args[3:])): p.poll() for p in self.processes}
        assert all(code is None for code in codes.values()), f"exited: {codes}\n{self.logs()}"

    def launch(self, *commands: tuple[str, ...], attempts: int = 3) -> None:
        """Start ``ecrm`` processes and wait until *this* hub answers on its port.

        ``free_port()`` releases the port before ``ecrm serve`` binds it, so with other
        hubs starting on the machine another server can take it first and ``/healthz``
        would answer from the wrong hub: check who owns the socket, else retry elsewhere.
        """
        for _ in range(attempts):
            for command in commands:
                self.start(*command)
            self.wait_healthy()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(process.poll() is not None for process in self.processes):
                    break
                if self.serves_its_port():
                    time.sleep(1)  # a process failing at start-up is gone by now
                    self.assert_alive()
                    return
                time.sleep(0.2)
            if not self.serves_its_port() and listening_sockets(self.port):
                self.stop()  # another hub took our port first: try again on a new one
                self.port = free_port()
                continue
            self.assert_alive()
        raise AssertionError(f"hub never served its own port in {attempts} tries\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.home.glob("*.log"))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, auth=(WRITE_KEY, ""))

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            timeout=30,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def basic_auth(key: str = WRITE_KEY) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


BACKENDS = ["sqlite", "postgres+rabbitmq", "postgres+redis"]


@pytest.fixture
def hub_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``hub_factory(backend)`` -> a :class:`Hub` (processes stopped at teardown)."""
    hubs: list[Hub] = []

    def make(backend: str, **extra_env: str) -> Hub:
        home = tmp_path / f"home-{len(hubs)}"
        if backend == "sqlite":
            settings = load_settings({"ECRM_HOME": str(home)})
            hub = Hub(home, settings.database_url, settings.broker_url, extra_env=extra_env)
        else:
            db_url = request.getfixturevalue("postgres_url")
            broker = "rabbit_url" if backend.endswith("rabbitmq") else "redis_url"
            hub = Hub(home, db_url, request.getfixturevalue(broker), extra_env=extra_env)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.stop()


@contextlib.contextmanager
def sqlite_hub(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    extra_env: dict[str, str],
    *commands: tuple[str, ...],
) -> Iterator[Hub]:
    """A hub on the embedded default running ``commands``, for a module-scoped fixture."""
    home = tmp_path_factory.mktemp(name) / "home"
    found = load_settings({"ECRM_HOME": str(home)})
    hub = Hub(home, found.database_url, found.broker_url, extra_env=extra_env)
    try:
        hub.launch(*commands)
        yield hub
    finally:
        hub.stop()
