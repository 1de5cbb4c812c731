"""SMS keywords: opt-out (STOP), opt-in (START) and HELP, as carriers and Twilio know them.

Why the hub reads them itself: Twilio's Advanced Opt-Out already answers these keywords and
blocks further messages to the number, but the hub must know too, so that its profile's SMS
consent agrees with Twilio's block list and rules never plan a message Twilio would refuse.

A message is a keyword when its whole body, trimmed of whitespace and of surrounding
punctuation (``Stop.``, ``"STOP!"``), is one of the words below, case-insensitively.
Twilio's own ``OptOutType`` form field (sent by Advanced Opt-Out, also for custom keywords
configured in the Messaging Service) wins over our reading of the body.
"""

from __future__ import annotations

from typing import Any, Literal

Keyword = Literal["STOP", "START", "HELP"]

#: Twilio's standard opt-out words, plus OPTOUT and REVOKE (FCC 2025 revocation words).
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
#: Twilio's standard opt-in words.
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
#: Twilio's standard help words.
HELP_WORDS = frozenset({"HELP", "INFO"})

_FAMILY: dict[str, Keyword] = {
    **dict.fromkeys(STOP_WORDS, "STOP"),
    **dict.fromkeys(START_WORDS, "START"),
    **dict.fromkeys(HELP_WORDS, "HELP"),
}
_DECLARED: dict[str, Keyword] = {"STOP": "STOP", "START": "START", "HELP": "HELP"}
_CONSENT_STATUS: dict[Keyword, str] = {"STOP": "opted_out", "START": "opted_in"}
_PUNCTUATION = " \t\r\n.,;:!?'\"()[]-*"


def keyword_of(body: str | None, opt_out_type: str | None = None) -> Keyword | None:
    """The keyword family (``STOP``/``START``/``HELP``) of an incoming message, if any."""
    declared = _DECLARED.get((opt_out_type or "").strip().upper())
    if declared is not None:
        return declared
    return _FAMILY.get((body or "").strip(_PUNCTUATION).upper())


def consent_change(keyword: Keyword | None) -> dict[str, Any] | None:
    """``properties.consent`` for a keyword: what STOP/START do to the sender's SMS consent.

    The shape is a contract with identity (see :mod:`connectors.twilio.webhooks`):
    ``{"channel": "sms", "status": "opted_out" | "opted_in", "keyword": "STOP" | "START"}``.
    HELP changes nothing.
    """
    if keyword is None or keyword not in _CONSENT_STATUS:
        return None
    return {"channel": "sms", "status": _CONSENT_STATUS[keyword], "keyword": keyword}


__all__ = [
    "HELP_WORDS",
    "START_WORDS",
    "STOP_WORDS",
    "Keyword",
    "consent_change",
    "keyword_of",
]
