"""Write keys kept in the database: stored as hashes, listed without secrets, revocable."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from pipeline import Database, ValidationError, utcnow
from pipeline.models import WriteKey
from pipeline.write_keys import ManagedKeys, create_key, list_keys, revoke_key


def test_a_key_is_stored_as_its_hash_and_shown_once(any_db: Database) -> None:
    with any_db.write() as session:
        created = create_key(session, "default", "pos-store-12", utcnow())
    assert created.key.startswith("wk_") and len(created.key) >= 35
    with any_db.read() as session:
        row = session.scalars(select(WriteKey).where(WriteKey.id == created.view["id"])).one()
        stored = [str(getattr(row, c.key)) for c in WriteKey.__table__.columns]
        views = list_keys(session, "default")
    assert not any(created.key in value for value in stored)  # the secret is nowhere
    assert created.key.startswith(row.prefix) and len(row.prefix) < 12
    [view] = [v for v in views if v["id"] == created.view["id"]]
    assert view["name"] == "pos-store-12" and view["active"] and "key" not in view


def test_revoked_keys_stop_working_when_the_copy_is_refreshed(any_db: Database) -> None:
    with any_db.write() as session:
        kept = create_key(session, "default", "web", utcnow())
        leaked = create_key(session, "default", "pos-7", utcnow())
    fresh = ManagedKeys(any_db, refresh_seconds=0)  # reads at every lookup
    slow = ManagedKeys(any_db, refresh_seconds=3600)  # another process, read a while ago
    assert fresh.workspace_of(leaked.key) == slow.workspace_of(leaked.key) == "default"
    with any_db.write() as session:
        view = revoke_key(session, "default", leaked.view["id"], utcnow())
        again = revoke_key(session, "default", leaked.view["id"], utcnow())
    assert view["revoked_at"] is not None and not view["active"]
    assert again["revoked_at"] == view["revoked_at"]  # revoking twice changes nothing
    assert fresh.workspace_of(leaked.key) is None
    assert slow.workspace_of(leaked.key) == "default"  # until its copy is older than allowed
    slow.reload()
    assert slow.workspace_of(leaked.key) is None
    assert fresh.workspace_of(kept.key) == slow.workspace_of(kept.key) == "default"
    assert fresh.workspace_of(leaked.key[:-1] + "x") is None
    assert fresh.workspace_of("") is None


def test_bad_names_and_unknown_ids_are_refused(any_db: Database) -> None:
    with any_db.write() as session:
        for bad in ("", "   ", "x" * 101, "tab\there"):
            with pytest.raises(ValidationError) as caught:
                create_key(session, "default", bad, utcnow())
            assert caught.value.field == "name"
        with pytest.raises(ValidationError) as caught:
            create_key(session, "no-such-workspace", "web", utcnow())
        assert caught.value.field == "workspace"
        with pytest.raises(KeyError):
            revoke_key(session, "default", 987654321, utcnow())
        created = create_key(session, "default", "other-workspace-check", utcnow())
        with pytest.raises(KeyError):  # a key of another workspace is not found
            revoke_key(session, "elsewhere", created.view["id"], utcnow())
