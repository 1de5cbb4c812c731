"""Call-detail records -> ``call.completed`` touchpoints (pure: no database).

Asterisk rows are written the way ``cdr_csv`` writes them: every string quoted with inner
quotes doubled, dates quoted (an unset one left empty), numbers bare.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.calls import (
    CallMapping,
    CompiledCallMapping,
    MappingError,
    Skip,
    channel_endpoint,
    load_mapping,
    parse_clid,
    shipped_mappings,
)
from connectors.files import RowError
from pipeline import Touchpoint

SAMPLE = Path(__file__).parents[1] / "data" / "calls" / "Master.csv"
RECEIVED = datetime(2026, 3, 3, tzinfo=UTC)
ASTERISK_COLUMNS = load_mapping("asterisk").columns or []


def asterisk(**changes: Any) -> CompiledCallMapping:
    mapping = load_mapping("asterisk").model_copy(update={"timezone": "America/New_York"})
    if changes:
        mapping = CallMapping.model_validate(mapping.model_dump() | changes)
    return CompiledCallMapping(mapping, mapping.columns)


def cdr(**values: Any) -> list[str]:
    """One Master.csv line as csv.reader gives it back (defaults: an answered inbound call)."""
    row: dict[str, Any] = {
        "accountcode": "",
        "src": "4155550123",
        "dst": "400",
        "dcontext": "ext-queues",
        "clid": '"Smith, Alice" <4155550123>',
        "channel": "PJSIP/trunk-00000001",
        "dstchannel": "PJSIP/201-00000002",
        "lastapp": "Dial",
        "lastdata": "PJSIP/201,20",
        "start": "2026-03-02 09:15:02",
        "answer": "2026-03-02 09:15:10",
        "end": "2026-03-02 09:19:40",
        "duration": 278,
        "billsec": 270,
        "disposition": "ANSWERED",
        "amaflags": "DOCUMENTATION",
        "uniqueid": "1772442902.101",
        "userfield": "",
    } | values
    line = ",".join(
        str(v) if isinstance(v, int) or (k in ("start", "answer", "end") and not v) else _q(v)
        for k, v in row.items()
    )
    return next(csv.reader(io.StringIO(line)))


def _q(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def convert(row: list[str], compiled: CompiledCallMapping | None = None) -> Touchpoint:
    return (compiled or asterisk()).touchpoint(row, received_at=RECEIVED, default_region="US")


# -- caller ids and channels -------------------------------------------------------------


@pytest.mark.parametrize(
    ("clid", "expected"),
    [
        ('"Smith, Alice" <4155550123>', ("Smith, Alice", "4155550123")),
        ('"Say \\"Hi\\"" <201>', ('Say "Hi"', "201")),
        ("Bob <4155550124>", ("Bob", "4155550124")),
        ('"" <4155550125>', (None, "4155550125")),
        ("<4155550126>", (None, "4155550126")),
        ("4155550127", (None, "4155550127")),
        ("+1 (415) 555-0128", (None, "+1 (415) 555-0128")),
        ("Reception", ("Reception", None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_caller_ids_are_split_into_name_and_number(
    clid: str | None, expected: tuple[str | None, str | None]
) -> None:
    assert parse_clid(clid) == expected


@pytest.mark.parametrize(
    ("channel", "endpoint"),
    [
        ("PJSIP/201-0000002a", "201"),
        ("SIP/201-00000001", "201"),
        ("SIP/my-trunk-00000001", "my-trunk"),
        ("Local/201@from-queue-0000001a;1", "201"),
        ("IAX2/office-12345", "office"),
        ("DAHDI/1-1", "1"),
        ("not a channel", None),
        (None, None),
    ],
)
def test_channel_names_give_their_endpoint(channel: str | None, endpoint: str | None) -> None:
    assert channel_endpoint(channel) == endpoint


# -- Asterisk Master.csv -----------------------------------------------------------------


def test_shipped_mappings_load_by_name() -> None:
    assert shipped_mappings() == ["asterisk", "generic"]
    # The order cdr_csv.c writes them in.
    expected = (
        "accountcode src dst dcontext clid channel dstchannel lastapp lastdata "
        "start answer end duration billsec disposition amaflags uniqueid userfield"
    )
    assert load_mapping("asterisk").columns == expected.split(" ")


def test_answered_inbound_queue_call_from_the_sample() -> None:
    first = next(csv.reader(SAMPLE.open(newline="")))
    touchpoint = convert(first)
    assert touchpoint.message_id.startswith("call:asterisk:1772442902.101:")
    assert (touchpoint.channel, touchpoint.type) == ("call", "call.completed")
    assert touchpoint.source == "calls-import"
    assert touchpoint.identifiers == {"phone": "+14155550123"}
    assert touchpoint.traits == {"caller_name": "Smith, Alice"}  # the comma stayed inside
    # 09:15:02 in New York (EST, UTC-5) is 14:15:02 UTC.
    assert touchpoint.occurred_at == datetime(2026, 3, 2, 14, 15, 2, tzinfo=UTC)
    assert touchpoint.properties == {
        "last_app": "Queue",
        "amaflags": "DOCUMENTATION",
        "call_id": "1772442902.101",
        "direction": "inbound",
        "from": "+14155550123",
        "to": "400",
        "started_at": "2026-03-02T14:15:02+00:00",
        "answered_at": "2026-03-02T14:15:10+00:00",
        "ended_at": "2026-03-02T14:19:40+00:00",
        "duration": 278,
        "talk_seconds": 270,
        "disposition": "answered",
        "agent": "201",  # Local/201@from-queue-...;1
        "queue": "sales",  # Queue(sales,t,,,300)
        "context": "ext-queues",
        "caller_name": "Smith, Alice",
    }


def test_unanswered_call_has_no_answer_time_and_no_talk_time() -> None:
    touchpoint = convert(cdr(answer="", billsec=0, duration=21, disposition="NO ANSWER"))
    properties = touchpoint.properties
    assert properties["disposition"] == "no-answer"
    assert "answered_at" not in properties
    assert (properties["duration"], properties["talk_seconds"]) == (21, 0)
    assert properties["ended_at"] == "2026-03-02T14:19:40+00:00"


@pytest.mark.parametrize(
    ("written", "disposition"),
    [
        ("ANSWERED", "answered"),
        ("NO ANSWER", "no-answer"),
        ("BUSY", "busy"),
        ("FAILED", "failed"),
        ("CONGESTION", "failed"),
        ("no answer", "no-answer"),
    ],
)
def test_asterisk_dispositions(written: str, disposition: str) -> None:
    answered = disposition == "answered"
    row = cdr(disposition=written, answer="" if not answered else "2026-03-02 09:15:10")
    assert convert(row).properties["disposition"] == disposition


def test_unknown_disposition_is_refused_naming_the_column() -> None:
    with pytest.raises(RowError) as caught:
        convert(cdr(disposition="TELEPORTED"))
    assert caught.value.field == "disposition"
    assert "'disposition'" in caught.value.reason and "TELEPORTED" not in caught.value.reason


def test_outbound_call_the_customer_is_the_dialled_number() -> None:
    row = cdr(
        src="201",
        dst="94155550199",
        dcontext="from-internal",
        clid='"Dana Agent" <201>',
        channel="PJSIP/201-00000006",
        dstchannel="PJSIP/trunk-00000007",
        accountcode="sales",
    )
    touchpoint = convert(row, asterisk(dial_prefix="9"))
    assert touchpoint.identifiers == {"phone": "+14155550199"}
    assert touchpoint.traits == {}  # the caller id is the agent's, not the customer's
    properties = touchpoint.properties
    assert (properties["direction"], properties["from"], properties["to"]) == (
        "outbound",
        "201",
        "+14155550199",
    )
    assert properties["agent"] == "201" and properties["account_code"] == "sales"
    assert "caller_name" not in properties


@pytest.mark.parametrize("dst", ["202", "*97", "s"])
def test_calls_between_extensions_are_skipped(dst: str) -> None:
    with pytest.raises(Skip, match="internal call"):
        convert(cdr(src="201", dst=dst, dcontext="from-internal", clid='"Dana" <201>'))


def test_context_settles_the_direction_before_the_extension_pattern() -> None:
    # The PBX wrote the company's outgoing caller id (not the extension) as src: by the
    # numbers alone this looks inbound; the outbound route's context says otherwise.
    row = cdr(src="4155550100", dst="4155550199", dcontext="outbound-allroutes", clid="")
    touchpoint = convert(row)
    assert touchpoint.properties["direction"] == "outbound"
    assert touchpoint.identifiers == {"phone": "+14155550199"}
    assert convert(
        cdr(src="4155550100", dst="4155550199", dcontext="other", clid="")
    ).identifiers == {"phone": "+14155550100"}


def test_withheld_caller_keeps_the_call_with_a_stand_in_identifier() -> None:
    touchpoint = convert(
        cdr(src="anonymous", clid='"Anonymous" <anonymous>', dstchannel="", answer="")
    )
    assert touchpoint.identifiers == {"anonymous_id": touchpoint.message_id}
    assert touchpoint.traits == {}
    assert touchpoint.properties["from"] == "anonymous"
    assert "agent" not in touchpoint.properties  # nobody picked up


def test_a_caller_that_is_no_phone_number_is_refused_without_quoting_it() -> None:
    with pytest.raises(RowError) as caught:
        convert(cdr(src="not-a-number", clid=""))
    assert caught.value.field == "from" and "not a phone number" in caught.value.reason
    assert "not-a-number" not in str(caught.value)


def test_bad_time_is_refused_naming_the_field() -> None:
    with pytest.raises(RowError) as caught:
        convert(cdr(start="02/03/2026 09:15"))
    assert caught.value.field == "started_at"
    assert "%Y-%m-%d %H:%M:%S" in caught.value.reason


def test_each_dialled_leg_of_one_call_is_its_own_event() -> None:
    ring = {"uniqueid": "1772443800.107", "start": "2026-03-02 09:30:00"}
    missed = convert(cdr(dstchannel="PJSIP/202-00000004", disposition="NO ANSWER", **ring))
    taken = convert(cdr(dstchannel="PJSIP/203-00000005", **ring))
    assert missed.message_id != taken.message_id
    assert (missed.properties["agent"], taken.properties["agent"]) == ("202", "203")
    assert convert(cdr(dstchannel="PJSIP/203-00000005", **ring)).message_id == taken.message_id


def test_without_uniqueid_the_id_is_a_stable_hash_of_the_record() -> None:
    row = cdr()[:16]  # loguniqueid=no: 16 columns
    first = convert(row)
    assert first.message_id.startswith("call:asterisk:~") and "call_id" not in first.properties
    assert convert(list(row)).message_id == first.message_id
    later = cdr(start="2026-03-02 09:16:02")[:16]
    assert convert(later).message_id != first.message_id


def test_system_names_the_pbx_in_message_ids() -> None:
    touchpoint = convert(cdr(), asterisk(system="pbx-berlin", unique_call_id=True))
    assert touchpoint.message_id == "call:pbx-berlin:1772442902.101"


# -- the generic layout ------------------------------------------------------------------

GENERIC_HEADER = (
    "call_id,direction,from,to,caller_name,started_at,answered_at,ended_at,duration,"
    "talk_seconds,disposition,agent,queue,recording_url,email,properties.campaign"
)


def generic(line: str) -> Touchpoint:
    mapping = load_mapping("generic")
    header = GENERIC_HEADER.split(",")
    row = next(csv.reader(io.StringIO(line)))
    return convert(row, CompiledCallMapping(mapping, header))


def test_generic_row_with_direction_recording_and_email() -> None:
    touchpoint = generic(
        "C-1,in,(415) 555-0123,+14155550100,Alice,2026-03-02T09:15:02+01:00,"
        "2026-03-02T09:15:10+01:00,2026-03-02T09:19:40+01:00,,,completed,alice.agent,"
        "support,https://rec.example.com/C-1.mp3,Alice@Example.com,spring"
    )
    assert touchpoint.message_id == "call:generic:C-1"
    assert touchpoint.identifiers == {"phone": "+14155550123", "email": "alice@example.com"}
    properties = touchpoint.properties
    assert properties["direction"] == "inbound" and properties["disposition"] == "answered"
    assert (properties["duration"], properties["talk_seconds"]) == (278, 270)  # from times
    assert properties["agent"] == "alice.agent" and properties["queue"] == "support"
    assert properties["recording_url"] == "https://rec.example.com/C-1.mp3"
    assert properties["campaign"] == "spring" and properties["to"] == "+14155550100"
    assert touchpoint.occurred_at == datetime(2026, 3, 2, 8, 15, 2, tzinfo=UTC)


def test_generic_without_direction_or_disposition_uses_extensions_and_times() -> None:
    touchpoint = generic("C-2,,4155550123,310,,2026-03-02T09:15:02Z,,2026-03-02T09:15:30Z,,,,,,,,")
    properties = touchpoint.properties
    assert properties["direction"] == "inbound" and properties["agent"] == "310"
    assert properties["disposition"] == "no-answer" and properties["duration"] == 28


def test_generic_unknown_direction_is_refused() -> None:
    with pytest.raises(RowError) as caught:
        generic("C-3,sideways,4155550123,310,,2026-03-02T09:15:02Z,,,,,,,,,,")
    assert caught.value.field == "direction"


# -- mappings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fields": {"from": "src", "to": "dst"}}, "fields needs started_at"),
        ({"fields": {"to": "dst", "started_at": "start"}}, "from (or caller_id)"),
        ({"extension_pattern": "(unclosed"}, "not a regular expression"),
        ({"timezone": "Mars/Olympus"}, "unknown IANA time zone"),
        ({"columns": ["a", "a"]}, "distinct"),
        ({"system": "has:colon"}, "should match pattern"),
        ({"dispositions": {"X": "teleported"}}, "Input should be"),
    ],
)
def test_bad_mappings_say_what_is_wrong(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    import yaml

    document = load_mapping("asterisk").model_dump(exclude_none=True) | change
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(MappingError, match=r"mine\.yaml") as caught:
        load_mapping(str(path))
    assert message in str(caught.value)


def test_a_file_lacking_a_required_column_stops_before_it_starts() -> None:
    with pytest.raises(MappingError, match="started_at: no column 'started_at'"):
        CompiledCallMapping(load_mapping("generic"), ["call_id", "from", "to"])


def test_unknown_mapping_names_the_shipped_ones() -> None:
    with pytest.raises(MappingError, match="asterisk, generic"):
        load_mapping("nosuch")
