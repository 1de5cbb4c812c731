"""The embedded broker: kombu over our tuned SQLite transport, across processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from kombu import Connection

from pipeline.broker import TRANSPORT_PATH, embedded_connection_args, prepare

CONSUMER = """
import sys
from kombu import Connection
from pipeline.broker import embedded_connection_args
url, transport = embedded_connection_args(sys.argv[1])
with Connection(url, transport=transport) as conn:
    q = conn.SimpleQueue("ingest")
    got = []
    for _ in range(int(sys.argv[2])):
        msg = q.get(timeout=10)
        got.append(msg.payload["batch_id"])
        msg.ack()
    print(",".join(map(str, got)))
"""


def test_messages_cross_processes_in_order_and_are_deleted(tmp_path: Path) -> None:
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    url, transport = embedded_connection_args(broker_url)
    assert transport == TRANSPORT_PATH
    with Connection(url, transport=transport) as conn:
        queue = conn.SimpleQueue("ingest")
        for batch_id in range(50):
            queue.put({"batch_id": batch_id})
        queue.close()
    result = subprocess.run(
        [sys.executable, "-c", CONSUMER, broker_url, "50"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == ",".join(str(i) for i in range(50))
    with sqlite3.connect(tmp_path / "broker.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 0


DECLARER = """
import sys, time
from kombu import Connection
from pipeline.broker import embedded_connection_args
url, transport = embedded_connection_args(sys.argv[1])
with Connection(url, transport=transport) as conn:
    channel = conn.default_channel
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    for number in range(40):
        channel.queue_declare(f"queue-{number}")
    conn.SimpleQueue("queue-0").put({"from": sys.argv[3]})
"""


def test_processes_declaring_the_same_queues_at_once_all_succeed(tmp_path: Path) -> None:
    """``ecrm run`` starts four processes that declare the same queues at the same moment."""
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    prepare(broker_url, ["ingest"])  # tables exist, as ``ecrm run`` leaves them
    start = time.time() + 1.5
    declarers = [
        subprocess.Popen(
            [sys.executable, "-c", DECLARER, broker_url, str(start), str(number)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(6)
    ]
    errors = [process.communicate(timeout=60)[1] for process in declarers]
    assert [process.returncode for process in declarers] == [0] * 6, "\n".join(errors)
    with sqlite3.connect(tmp_path / "broker.sqlite") as db:
        names = [row[0] for row in db.execute("SELECT name FROM kombu_queue")]
        assert sorted(names) == sorted(["ingest", *(f"queue-{n}" for n in range(40))])
        assert db.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 6


DRAINER = """
import sys, time
from queue import Empty
from kombu import Connection
from pipeline.broker import embedded_connection_args
url, transport = embedded_connection_args(sys.argv[1])
with Connection(url, transport=transport) as conn:
    q = conn.SimpleQueue("ingest")
    got = []
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    while True:
        try:
            msg = q.get(timeout=3)
        except Empty:
            break
        got.append(msg.payload["n"])
        msg.ack()
        time.sleep(0.001)  # a worker's work, so that the others get their turn
    print(",".join(map(str, got)))
"""


def test_competing_consumers_take_each_message_once(tmp_path: Path) -> None:
    """A poll reads the oldest message, then deletes it: only one consumer wins each."""
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    url, transport = embedded_connection_args(broker_url)
    with Connection(url, transport=transport) as conn:
        queue = conn.SimpleQueue("ingest")
        for n in range(600):
            queue.put({"n": n})
        queue.close()
    start = str(time.time() + 1.5)
    drainers = [
        subprocess.Popen(
            [sys.executable, "-c", DRAINER, broker_url, start], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120)[0].strip() for process in drainers]
    taken = [int(n) for output in outputs if output for n in output.split(",")]
    assert sorted(taken) == list(range(600))
    assert all(outputs), "the consumers did not compete"
