"""The shared file-import loop seen through both importers (``connectors.files``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml
from sqlalchemy import select

from connectors.pos import import_pos_file, load_mapping
from pipeline import Database
from pipeline.models import Event


def test_a_headerless_pos_export_loads_with_columns_in_its_mapping(
    sqlite_db: Database, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    mapping_path = tmp_path / "till.yaml"
    mapping_path.write_text(
        yaml.safe_dump(
            {
                "name": "till",
                "delimiter": ";",
                "columns": ["bon", "filiale", "zeit", "summe", "karte"],
                "timestamp_format": "%d.%m.%Y %H:%M",
                "timezone": "Europe/Berlin",
                "currency": "EUR",
                "decimal": ",",
                "fields": {
                    "transaction_id": "bon",
                    "store_id": "filiale",
                    "occurred_at": "zeit",
                    "totals.total": "summe",
                    "customer.loyalty_card": "karte",
                },
            }
        )
    )
    path = tmp_path / "export.txt"
    path.write_text(f"{tag}-1;F1;02.03.2026 09:00;12,50;LC-9\n{tag}-2;F1;kaputt;1,00;\n")
    summary = import_pos_file(
        sqlite_db,
        path,
        mapping=load_mapping(str(mapping_path)),
        workspace_id="default",
        default_region="DE",
        state_dir=tmp_path / "state",
        file_format_name="csv",
    )
    assert (summary.rows, summary.imported, summary.rejected) == (2, 1, 1)  # no header eaten
    assert summary.rejects_path is not None
    assert summary.rejects_path.read_text().splitlines()[1].startswith("2,occurred_at,")
    with sqlite_db.read() as session:
        event = session.scalars(select(Event).where(Event.message_id == f"pos:F1:{tag}-1")).one()
    assert event.properties["total"] == 12.5
    assert event.identifiers == {"loyalty_card": "LC-9"}
    assert event.occurred_at.isoformat() == "2026-03-02T08:00:00+00:00"
