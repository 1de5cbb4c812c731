"""Four worker processes resolve overlapping events at once on PostgreSQL: the same graph.

Events of 120 people arrive in random order over concurrent HTTP requests, each carrying
one to three of its person's identifiers, so profiles are founded apart and merged as the
links arrive, often in two workers at once. Nobody has more identifiers of a kind than
the limits allow, so the serial answer does not depend on order: the connected components
of "shares an identifier". The hub must end with exactly those clusters, every event
counted once, and each identifier owned by one live profile.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Hub, basic_auth
from sqlalchemy import bindparam, create_engine, text

PEOPLE = 120
EVENTS = 1500
PER_REQUEST = 10


def person_ids(tag: str, n: int) -> dict[str, list[str]]:
    return {
        "userId": [f"u{n}-{tag}"],
        "email": [f"p{n}-{tag}@example.com", f"p{n}.work-{tag}@example.org"],
        "phone": [f"+14152{(tag_number(tag) + n) % 1_000_000:06d}"],
        "anonymousId": [f"a{n}-{i}-{tag}" for i in range(3)],
    }


def tag_number(tag: str) -> int:
    return int(tag, 16) % 10_000_000


def build(
    tag: str, seed: int
) -> tuple[list[dict[str, Any]], list[list[tuple[str, str]]], list[int]]:
    """Segment messages, the identifiers each carries (normalized), and whose they are."""
    rng = random.Random(seed)
    people = [person_ids(tag, n) for n in range(PEOPLE)]
    messages, carried, owners = [], [], []
    for i in range(EVENTS):
        who = rng.randrange(PEOPLE)
        ids = people[who]
        # Segment needs a userId or an anonymousId; traits may add an email or a phone
        first = rng.choice(["userId", "anonymousId", "anonymousId"])
        others = [slot for slot in ("userId", "email", "phone", "anonymousId") if slot != first]
        slots = [first, *rng.sample(others, rng.choice([0, 0, 1, 1, 2]))]
        message: dict[str, Any] = {"type": "identify", "messageId": f"c{i}-{tag}", "traits": {}}
        keys: list[tuple[str, str]] = []
        for slot in slots:
            value = rng.choice(ids[slot])
            if slot == "userId":
                message["userId"] = value
                keys.append(("user_id", value))
            elif slot == "anonymousId":
                message["anonymousId"] = value
                keys.append(("anonymous_id", value))
            else:
                message["traits"][slot] = value
                keys.append((slot, value))
        messages.append(message)
        carried.append(keys)
        owners.append(who)
    return messages, carried, owners


def components(carried: list[list[tuple[str, str]]]) -> set[frozenset[int]]:
    """The serial answer: events joined whenever they share an identifier."""
    parent = list(range(len(carried)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, keys in enumerate(carried):
        for key in keys:
            if key in first:
                parent[find(i)] = find(first[key])
            else:
                first[key] = i
    groups: dict[int, set[int]] = {}
    for i in range(len(carried)):
        groups.setdefault(find(i), set()).add(i)
    return {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("backend", ["postgres+rabbitmq", "postgres+redis"])
def test_four_workers_build_the_serial_graph(hub_factory: Callable[..., Hub], backend: str) -> None:
    hub = hub_factory(
        backend,
        ECRM_WORKER_CONCURRENCY="4",
        ECRM_BATCH_SIZE="20",
        ECRM_BATCH_LEASE_SECONDS="10",
    )
    hub.launch(("serve",), ("worker",), ("scheduler",))
    tag = uuid.uuid4().hex[:8]
    messages, carried, owners = build(tag, seed=int(tag, 16))
    client = hub.client()

    def send(start: int) -> None:
        body = {"batch": messages[start : start + PER_REQUEST]}
        answer = client.post("/v1/batch", json=body, headers={"Authorization": basic_auth()})
        assert answer.status_code == 200, answer.text
        assert not answer.json().get("rejected"), answer.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(0, EVENTS, PER_REQUEST)))

    engine = create_engine(hub.database_url.replace("postgresql://", "postgresql+psycopg://"))
    ids = [m["messageId"] for m in messages]
    try:
        deadline = time.monotonic() + 120
        while True:
            with engine.connect() as conn:
                done = conn.execute(
                    text(
                        "SELECT count(*) FROM profile_events pe JOIN events e ON e.id = pe.event_id"
                        " WHERE e.message_id LIKE :tag"
                    ),
                    {"tag": f"%-{tag}"},
                ).scalar_one()
            if done >= EVENTS:
                break
            assert time.monotonic() < deadline, f"{done}/{EVENTS} processed\n{hub.logs()}"
            time.sleep(0.5)
        with engine.connect() as conn:
            placed = dict(
                conn.execute(
                    text(
                        "SELECT e.message_id, pe.profile_id FROM profile_events pe"
                        " JOIN events e ON e.id = pe.event_id WHERE e.message_id LIKE :tag"
                    ),
                    {"tag": f"%-{tag}"},
                ).all()
            )
            profiles = conn.execute(
                text(
                    "SELECT id, event_count, merged_into FROM profiles WHERE id IN"
                    " (SELECT DISTINCT profile_id FROM profile_events pe JOIN events e"
                    "  ON e.id = pe.event_id WHERE e.message_id LIKE :tag)"
                ),
                {"tag": f"%-{tag}"},
            ).all()
            owned = conn.execute(
                text(
                    "SELECT i.value, i.profile_id, p.merged_into FROM profile_identifiers i"
                    " JOIN profiles p ON p.id = i.profile_id WHERE i.value IN :values"
                ).bindparams(bindparam("values", expanding=True)),
                {"values": sorted({value for keys in carried for _, value in keys})},
            ).all()
            merges = conn.execute(
                text("SELECT count(*) FROM profile_merges WHERE survivor_id IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": sorted(set(placed.values()))},
            ).scalar_one()
            failed = conn.execute(
                text(
                    "SELECT count(*) FROM event_failures f JOIN events e ON e.id = f.event_id"
                    " WHERE e.message_id LIKE :tag"
                ),
                {"tag": f"%-{tag}"},
            ).scalar_one()
    finally:
        engine.dispose()

    assert failed == 0
    assert merges > 50  # profiles were founded apart and merged as links arrived
    assert len(placed) == EVENTS  # each event counted in exactly one profile
    clusters: dict[str, set[int]] = {}
    for index, message_id in enumerate(ids):
        clusters.setdefault(placed[message_id], set()).add(index)
    assert {frozenset(c) for c in clusters.values()} == components(carried)
    assert all(len({owners[i] for i in c}) == 1 for c in clusters.values())  # never glued
    assert all(merged is None for _, _, merged in profiles)  # events sit in survivors
    assert {pid: n for pid, n, _ in profiles} == {pid: len(c) for pid, c in clusters.items()}
    assert all(merged is None for _, _, merged in owned)  # identifiers moved with merges
    carried_values = {value for keys in carried for _, value in keys}
    assert sorted(value for value, _, _ in owned) == sorted(carried_values)  # one owner each
    holder = {value: pid for value, pid, _ in owned}
    for cluster_id, members in clusters.items():
        for i in members:
            for _, value in carried[i]:
                assert holder[value] == cluster_id
