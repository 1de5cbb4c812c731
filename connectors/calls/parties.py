"""The two parties of a CDR as PBXes write them: caller-id strings and channel names.

Why apart from the record conversion: these are Asterisk's spellings (``"Name" <number>``,
``TECH/endpoint-uniqueid``) that other systems' exports often copy; they are parsed
leniently (an unparseable value is ``None``, never an error) because they only add
detail (the caller's name, the agent) to a call that is imported either way.
"""

from __future__ import annotations

import re

#: ``"Alice Smith" <5551234>``, ``Alice <5551234>``, ``<5551234>``: (name, number).
#: Possessive and atomic, so a value that does not match fails in linear time: with a
#: lazy bare name, ``a`` then 1,000 spaces and tabs then ``<x`` backtracked for 18 s.
_CLID = re.compile(
    r'^\s*+(?:"(?P<quoted>(?:[^"\\]|\\.)*+)"|(?>(?P<bare>[^<"]*)))\s*+'
    r"(?:<(?P<number>[^>]*+)>)?\s*$"
)
#: ``PJSIP/201-0000002a``, ``SIP/my-trunk-00000001``, ``Local/201@from-queue-0000001a;1``.
_CHANNEL = re.compile(r"^[A-Za-z0-9_]+/(?P<name>.+?)(?:-[0-9A-Fa-f]+)?(?:;\d+)?$")
NUMBERISH = re.compile(r"^[\d\s()+.\-*#]+$")


def parse_clid(value: str | None) -> tuple[str | None, str | None]:
    """(name, number) of a caller-id string such as ``"Alice" <5551234>``."""
    if value is None:
        return None, None
    found = _CLID.match(value)
    if found is None:
        return None, None
    number = (found["number"] or "").strip() or None
    name = found["quoted"]
    if name is not None:
        name = name.replace('\\"', '"').replace("\\\\", "\\")
    else:
        name = found["bare"]
        if number is None and name and NUMBERISH.match(name):
            return None, name.strip()
    name = (name or "").strip() or None
    return name, number


def channel_endpoint(channel: str | None) -> str | None:
    """The endpoint of an Asterisk channel name: ``PJSIP/201-0000002a`` -> ``201``."""
    if channel is None:
        return None
    found = _CHANNEL.match(channel.strip())
    if found is None:
        return None
    return found["name"].split("@", 1)[0] or None


__all__ = ["NUMBERISH", "channel_endpoint", "parse_clid"]
