"""Estimating m/u from a hub's own records, on real SQLite and PostgreSQL, and
``ecrm identity estimate`` as an operator runs it; a configured model changes decisions
made on the real path."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity.config import IdentityConfig
from identity.estimate import estimate, read_records
from identity.matching import MatchModel
from identity.views import event_views
from pipeline import Database, ingest
from pipeline.events import get_event
from pipeline.outbox import relay
from workers.processing import process_batches

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
WS = "default"
GIVEN = ("amelia", "oliver", "charlotte", "jack", "isla", "noah", "ava", "william", "mia")
SURNAMES = ("smith", "jones", "williams", "brown", "wilson", "taylor", "nguyen", "kelly")
STREETS = ("wattle grove", "banksia road", "kurrajong avenue", "acacia street")


def people(count: int, seed: int) -> list[dict[str, str]]:
    """Enrolment forms of ``count`` people, some sent twice with a typo or a gap."""
    rng = random.Random(seed)
    forms = []
    for _ in range(count):
        person = {
            "given_name": rng.choice(GIVEN).title(),
            "surname": rng.choice(SURNAMES).title(),
            "date_of_birth": f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02}-"
            f"{rng.randint(1, 28):02}",
            "soc_sec_id": str(rng.randint(1_000_000, 9_999_999)),
            "street_number": str(rng.randint(1, 200)),
            "address_1": rng.choice(STREETS),
            "postcode": str(rng.randint(2000, 2999)),
        }
        forms.append(person)
        for _ in range(rng.choice((0, 1, 2))):
            copy = dict(person)
            field = rng.choice(sorted(copy))
            value = copy[field]
            copy[field] = value[1:] + value[0] if rng.random() < 0.5 else value + "e"
            forms.append(copy)
    return forms


def record(traits: dict[str, str], minute: int = 0, **ids: str) -> dict[str, Any]:
    token = uuid.uuid4().hex
    return {
        "message_id": f"estimate-{token}",
        "channel": "pos",
        "type": "customer.enrolled",
        "occurred_at": T0 + timedelta(minutes=minute),
        "identifiers": ids or {"anonymous_id": f"anon-{token}"},
        "traits": traits,
    }


def run(db: Database, items: list[dict[str, Any]], config: IdentityConfig | None = None) -> None:
    """Ingest ``items`` as one batch and process it."""
    with db.write() as session:
        results = ingest(session, items, workspace_id=WS, default_region="US")
    assert {r.status for r in results} == {"accepted"}
    published: list[list[int]] = []
    relay(db, published.append, batch_size=5000, lease_seconds=60)
    for message in published:
        process_batches(db, message, config)


def profile_of(db: Database, item: dict[str, Any]) -> str:
    with db.read() as session:
        found = get_event(session, WS, item["message_id"])
        assert found is not None and found.status == "processed", found
        profile = event_views(session, WS, [found])[0]["profile_id"]
    assert profile
    return str(profile)


def fill(db: Database, forms: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each form as an event; then one person orders five times (the same traits)."""
    items = [record(form, minute) for minute, form in enumerate(forms)]
    card = {"loyalty_card": f"LC-{uuid.uuid4().hex[:8]}"}
    repeats = [record(forms[0], 10_000 + k, **card) for k in range(5)]
    run(db, items)
    run(db, repeats)
    return items + repeats


def test_records_are_read_in_chunks_once_per_profile_and_value(any_db: Database) -> None:
    forms = people(120, seed=4)
    items = fill(any_db, forms)
    model = MatchModel()
    # one record per profile and distinct values: repeated orders, and a copy whose typo
    # normalization undoes (a letter after a date's digits), count once
    distinct = {
        (profile_of(any_db, item), tuple(sorted(model.normalize(item["traits"]).items())))
        for item in items
    }
    assert len(distinct) < len(forms)
    with any_db.read() as session:
        records = read_records(session, WS, model, chunk=37)
        limited = read_records(session, WS, model, limit=50, chunk=7)
        profiles = read_records(session, WS, model, source="profiles", chunk=11)
        elsewhere = read_records(session, "nobody", model)
    assert len(records) == len(distinct)
    assert {tuple(sorted(r.items())) for r in records} == {values for _, values in distinct}
    assert limited == records[:50]
    # the matcher merged most copies: fewer live profiles than forms
    assert len(forms) // 2 < len(profiles) < len(forms)
    assert elsewhere == []
    found = estimate(records, model, sample=20_000, seed=1)
    assert found.prior_probability > 0.1 and found.converged


def ecrm(home: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    environment.update(
        ECRM_HOME=str(home),
        ECRM_DATABASE_URL=url,
        ECRM_LOG_LEVEL="WARNING",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "identity", "estimate", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_prints_the_levels_and_writes_a_block_the_hub_loads(
    sqlite_db: Database, sqlite_url: str, tmp_path: Path
) -> None:
    fill(sqlite_db, people(150, seed=7))
    out = tmp_path / "matching.yaml"
    done = ecrm(
        tmp_path / "home", sqlite_url, "--seed", "3", "--sample", "20000", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Estimated from ") and "'now' is the built-in defaults" in lines[0]
    assert lines[1].startswith(
        "prior (probability that a blocked pair is one person): now 0.001996"
    )
    assert any(line.split()[:2] == ["soc_sec_id", "exact"] for line in lines)
    assert any(line.split()[:1] == ["two_edits"] for line in lines)
    assert "(m and u kept: too few comparisons of suburb, 0 random pairs had it)" in done.stdout
    assert lines[-1].startswith(f"wrote the matching: block to {out}")
    block = yaml.safe_load(out.read_text())
    assert set(block) == {"matching"} and "suburb" not in block["matching"]["fields"]
    config = IdentityConfig.load(out)
    assert config.matching is not None and config.matching.prior_probability > 0.05
    assert config.matching.upper == 0.99  # the thresholds in force are kept

    again = ecrm(tmp_path / "home", sqlite_url, "--seed", "3", "--sample", "20000")
    assert again.returncode == 0, again.stderr
    assert again.stdout == out.read_text()  # the same seed: the same block, on stdout
    assert "soc_sec_id" in again.stderr  # and the table beside it

    # the block in ECRM_IDENTITY_CONFIG is the model 'now' of the next estimate
    configured = ecrm(
        tmp_path / "home",
        sqlite_url,
        "--seed",
        "3",
        "--sample",
        "20000",
        ECRM_IDENTITY_CONFIG=str(out),
    )
    assert configured.returncode == 0, configured.stderr
    assert "'now' is ECRM_IDENTITY_CONFIG" in configured.stderr
    assert f"now {block['matching']['prior']:.6g}" in configured.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--sample", "10"], "ecrm: --sample must be between 1,000 and 50,000,000, got 10"),
        (["--workspace", "nobody"], "ecrm: workspace 'nobody': 0 records with a name and 3"),
        (["--out", "/nonexistent/dir/m.yaml"], "ecrm: /nonexistent/dir/m.yaml: cannot write"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    sqlite_db: Database, sqlite_url: str, tmp_path: Path, args: list[str], reason: str
) -> None:
    fill(sqlite_db, people(80, seed=2))
    done = ecrm(tmp_path / "home", sqlite_url, "--sample", "5000", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(reason) and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_too_few_records_is_a_clear_error(
    sqlite_db: Database, sqlite_url: str, tmp_path: Path
) -> None:
    fill(sqlite_db, people(20, seed=3))
    done = ecrm(tmp_path / "home", sqlite_url)
    assert done.returncode == 2
    assert "estimating needs at least 100" in done.stderr and done.stderr.count("\n") == 1


def test_a_configured_prior_keeps_apart_records_that_merge_by_default(any_db: Database) -> None:
    def pair(given: str, surname: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The same name and postcode, another birth date: one person, by default."""
        form = {"given_name": given, "surname": surname, "date_of_birth": "1984-03-17"}
        form["postcode"] = str(uuid.uuid4().int % 9000 + 1000)
        return record(form), record({**form, "date_of_birth": "1991-07-02"}, 1)

    a, b = pair("Margaret", "Whitfield")
    run(any_db, [a])
    run(any_db, [b])
    assert profile_of(any_db, a) == profile_of(any_db, b)

    cautious = IdentityConfig.from_mapping({"matching": {"prior": 1e-6}})
    c, d = pair("Beatrice", "Okonkwo")
    run(any_db, [c], cautious)
    run(any_db, [d], cautious)
    assert profile_of(any_db, c) != profile_of(any_db, d)
