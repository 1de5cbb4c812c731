"""The ``ecrm`` operator commands: init, config, demo, events failed / replay."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from conftest import ADMIN_TOKEN, WRITE_KEY, Hub
from sqlalchemy import select, update

from pipeline import Database, ingest, load_settings
from pipeline.events import list_events
from pipeline.models import Batch, Event
from pipeline.processing import mark_failed


def sqlite_hub(tmp_path: Path) -> Hub:
    settings = load_settings({"ECRM_HOME": str(tmp_path / "home")})
    return Hub(tmp_path / "home", settings.database_url, settings.broker_url)


def test_init_is_idempotent_and_config_masks_secrets(tmp_path: Path) -> None:
    hub = sqlite_hub(tmp_path)
    for _ in range(2):
        result = hub.cli("init")
        assert result.returncode == 0, result.stderr
    config = hub.cli("config")
    assert config.returncode == 0, config.stderr
    assert "ECRM_DATABASE_URL" in config.stdout and "ECRM_BROKER_URL" in config.stdout
    assert WRITE_KEY not in config.stdout and ADMIN_TOKEN not in config.stdout


SAMPLE_RULE_IDS = (
    "complaint-auto-reply",
    "welcome-new-customer",
    "points-per-order",
    "tier-upgrade-message",
    "win-back-sms",
)
RULE_COLUMNS = ("fired", "held back", "queued", "suppressed", "points")


def rules_table(stdout: str) -> dict[str, dict[str, int]]:
    """The demo's Rules table as {rule or "total": {column: number}} (rich box drawing)."""
    assert "Rules (all runs)" in stdout, stdout
    rows: dict[str, dict[str, int]] = {}
    for line in stdout.split("Rules (all runs)", 1)[1].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) != 1 + len(RULE_COLUMNS) or cells[0] in ("", "rule"):
            continue
        numbers = [int(cell.replace(",", "")) for cell in cells[1:]]
        rows[cells[0]] = dict(zip(RULE_COLUMNS, numbers, strict=True))
        if cells[0] == "total":
            break
    return rows


def test_demo_runs_the_pipeline_over_the_sample(tmp_path: Path) -> None:
    hub = sqlite_hub(tmp_path)
    result = hub.cli("demo", "--customers", "25", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Unified profiles" in result.stdout
    sample = hub.home / "sample" / "touchpoints.jsonl"
    sent = sum(1 for _ in sample.open())
    with sqlite3.connect(f"file:{hub.home / 'hub.sqlite'}?mode=ro", uri=True) as db:
        statuses = dict(db.execute("SELECT status, sum(event_count) FROM batches GROUP BY 1"))
        quarantined = db.execute("SELECT count(*) FROM event_failures").fetchone()[0]
        counted = db.execute("SELECT sum(event_count) FROM profiles").fetchone()[0]
        fired = db.execute(
            "SELECT count(*) FROM rule_firings WHERE matched AND held IS NULL"
        ).fetchone()[0]
        earned = db.execute(
            "SELECT sum(points) FROM loyalty_entries WHERE kind = 'earn' AND source LIKE 'rule:%'"
        ).fetchone()[0]
        outbox = dict(
            db.execute("SELECT status, count(*) FROM actions WHERE origin LIKE 'rule:%' GROUP BY 1")
        )
    assert statuses == {"done": sent} and quarantined == 0
    assert counted == sent
    # the sample rules were applied before ingesting and fired in the worker
    assert "rules: personalization/rules/samples/demo.yaml: 5 created" in result.stdout
    table = rules_table(result.stdout)
    assert set(table) == {*SAMPLE_RULE_IDS, "total"}  # every enabled rule, fired or not
    for rule_id in ("points-per-order", "welcome-new-customer", "complaint-auto-reply"):
        assert table[rule_id]["fired"] > 0, table
    total = table["total"]
    assert total["queued"] > 0 and total["points"] > 0, table
    for column in RULE_COLUMNS:
        assert total[column] == sum(table[r][column] for r in SAMPLE_RULE_IDS)
    # the table says what the database holds, and the demo delivered nothing
    assert total["fired"] == fired
    assert total["points"] == earned == table["points-per-order"]["points"]
    assert outbox == {"suppressed": total["queued"]}  # never to be delivered: made-up people
    assert "GET /v1/rules/{id}/firings" in result.stdout and "ecrm rules test" in result.stdout

    again = hub.cli("demo", "--customers", "25", timeout=240)  # same sample: all duplicates
    assert again.returncode == 0, again.stdout + again.stderr
    with sqlite3.connect(f"file:{hub.home / 'hub.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT sum(event_count) FROM profiles").fetchone()[0] == sent
        versions = db.execute("SELECT count(*) FROM rule_versions").fetchone()[0]
    assert "0 created, 0 updated, 0 disabled, 5 unchanged" in again.stdout
    assert versions == len(SAMPLE_RULE_IDS)  # the same file again: no new version
    assert rules_table(again.stdout) == table  # nothing fired twice


def test_demo_rules_option(tmp_path: Path) -> None:
    hub = sqlite_hub(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: no-trigger\n    name: Missing its trigger\n")
    refused = hub.cli("demo", "--customers", "5", "--rules", str(bad))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"{bad}:2:" in refused.stderr and "nothing applied" in refused.stderr
    assert not (hub.home / "sample").exists()  # stopped before generating or ingesting
    skipped = hub.cli("demo", "--customers", "5", "--rules", "none", timeout=240)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "rules: none applied" in skipped.stdout
    assert "Rules: none stored" in skipped.stdout and "Rules (all runs)" not in skipped.stdout


def test_failed_events_are_listed_and_replayed(tmp_path: Path) -> None:
    hub = sqlite_hub(tmp_path)
    assert hub.cli("init").returncode == 0
    db = Database.connect(hub.database_url)
    events: list[dict[str, Any]] = [
        {
            "message_id": f"m-{n}",
            "channel": "pos",
            "type": "order.completed",
            "occurred_at": "2026-11-01T10:00:00+00:00",
            "identifiers": {"loyalty_card": "LC-1"},
        }
        for n in range(3)
    ]
    with db.write() as session:
        ingest(session, events, workspace_id="default", default_region="US")
    with db.write() as session:  # as the worker leaves them: m-0 and m-1 quarantined
        session.execute(update(Batch).values(status="done"))
        mark_failed(
            session,
            "default",
            {
                event_id: "boom: bad data"
                for event_id in session.scalars(select(Event.id).where(Event.message_id != "m-2"))
            },
        )
    listed = hub.cli("events", "failed")
    assert listed.returncode == 0, listed.stderr
    assert "m-0" in listed.stdout and "boom: bad data" in listed.stdout
    assert "2 failed event(s)" in listed.stdout
    usage = hub.cli("events", "replay")
    assert usage.returncode == 2 and "--all-failed" in usage.stderr
    bad_time = hub.cli("events", "replay", "--since", "yesterday")
    assert bad_time.returncode == 2
    replayed = hub.cli("events", "replay", "--all-failed")
    assert replayed.returncode == 0, replayed.stderr
    assert "requeued 2" in replayed.stdout
    again = hub.cli("events", "replay", "m-0", "m-2")
    assert "requeued 0" in again.stdout, again.stdout
    assert "1 already processed, 1 still pending" in again.stdout
    with db.read() as session:
        rows = {r.event.message_id: r.status for r in list_events(session, "default")}
        retry_batches = session.scalars(select(Batch).where(Batch.replay.is_(True))).all()
    assert rows == {"m-0": "pending", "m-1": "pending", "m-2": "processed"}
    assert [(b.status, b.event_count) for b in retry_batches] == [("queued", 2)]
    db.dispose()


def test_an_unreachable_database_is_one_line_exit_2(tmp_path: Path) -> None:
    hub = sqlite_hub(tmp_path)
    hub.extra_env["ECRM_DATABASE_URL"] = "postgresql://u:s3cr3t-pw@127.0.0.1:1/nope"
    result = hub.cli("init")
    assert result.returncode == 2
    assert result.stderr.startswith("ecrm: cannot use the database")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "s3cr3t-pw" not in result.stderr
