"""Email provider rules on a real database: spellings of one Gmail mailbox are one person."""

from __future__ import annotations

import uuid

from test_identity_merge import WS, ev, profile_of, run

from identity.config import IdentityConfig
from identity.views import find_profile_id
from pipeline import Database
from pipeline.events import get_event


def test_without_rules_spellings_stay_apart_and_switching_on_is_not_retroactive(
    any_db: Database,
) -> None:
    t = uuid.uuid4().hex[:8]
    signup = ev(0, email=f"Jo.Smith.{t}+shop@gmail.com", user_id=f"u-{t}")
    receipt = ev(1, channel="pos", email=f"josmith{t}@googlemail.com")
    run(any_db, [signup], [receipt])  # no rules: two spellings, two people
    assert profile_of(any_db, signup) != profile_of(any_db, receipt)

    rules = IdentityConfig.from_mapping({"email_rules": ["gmail"]})
    later = ev(2, channel="pos", email=f"j.o.smith{t}+x@gmail.com", loyalty_card=f"L-{t}")
    run(any_db, [later], config=rules)
    with any_db.read() as session:
        found = find_profile_id(session, WS, "email", f"JoSmith{t}@gmail.com", "US", rules)
        # the log keeps the address as the customer wrote it
        record = get_event(session, WS, later["message_id"])
    assert record is not None
    assert record.event.identifiers["email"] == f"j.o.smith{t}+x@gmail.com"
    assert found == profile_of(any_db, later)
    # identifiers stored before keep their spelling: the rule does not reach back
    assert profile_of(any_db, later) not in {
        profile_of(any_db, signup),
        profile_of(any_db, receipt),
    }


def test_with_the_rule_from_the_start_the_spellings_are_one_profile(any_db: Database) -> None:
    t = uuid.uuid4().hex[:8]
    rules = IdentityConfig.from_mapping({"email_rules": ["gmail"]})
    first = ev(0, email=f"ann.{t}@gmail.com")
    second = ev(1, channel="pos", email=f"ann{t}+receipts@googlemail.com", phone="+14155550123")
    run(any_db, [first], [second], config=rules)
    assert profile_of(any_db, first) == profile_of(any_db, second)
    with any_db.read() as session:
        assert find_profile_id(session, WS, "email", f"ann.{t}@gmail.com", "US", rules) == (
            profile_of(any_db, first)
        )
        # without the rules the stored spelling is the canonical one
        assert find_profile_id(session, WS, "email", f"ann{t}@gmail.com", "US") == profile_of(
            any_db, first
        )
