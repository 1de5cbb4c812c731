"""SMS keywords: Twilio's STOP/START/HELP families and the consent change they carry."""

from __future__ import annotations

import pytest

from connectors.twilio import HELP_WORDS, START_WORDS, STOP_WORDS, consent_change, keyword_of


@pytest.mark.parametrize(
    "word", ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"]
)
def test_every_opt_out_word_is_stop(word: str) -> None:
    assert keyword_of(word) == "STOP"
    assert keyword_of(word.lower()) == "STOP"
    assert keyword_of(f"  {word.title()}.\n") == "STOP"


@pytest.mark.parametrize("word", ["START", "YES", "UNSTOP"])
def test_every_opt_in_word_is_start(word: str) -> None:
    assert keyword_of(word) == "START"
    assert keyword_of(f"{word.lower()}!") == "START"


@pytest.mark.parametrize("word", ["HELP", "info", "Help?"])
def test_help_words(word: str) -> None:
    assert keyword_of(word) == "HELP"


def test_the_families_are_twilios_lists_and_disjoint() -> None:
    assert {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"} <= STOP_WORDS
    assert {"START", "YES", "UNSTOP"} == START_WORDS
    assert {"HELP", "INFO"} == HELP_WORDS
    assert not (STOP_WORDS & START_WORDS or STOP_WORDS & HELP_WORDS or START_WORDS & HELP_WORDS)


@pytest.mark.parametrize(
    "body",
    ["", None, "stop it", "Please stop", "STOP STOP", "yesterday", "STOPP", "Hello", "S T O P"],
)
def test_only_a_whole_body_keyword_counts(body: str | None) -> None:
    assert keyword_of(body) is None


def test_twilios_opt_out_type_wins_over_the_body() -> None:
    # Advanced Opt-Out knows custom keywords ("ARRET") and says which family they are in.
    assert keyword_of("ARRET", "STOP") == "STOP"
    assert keyword_of("STOP", "start") == "START"
    assert keyword_of("AIDE", "HELP") == "HELP"
    assert keyword_of("STOP", "") == "STOP"
    assert keyword_of("hello", "SOMETHING-NEW") is None


def test_consent_change_shape_is_the_contract() -> None:
    assert consent_change("STOP") == {"channel": "sms", "status": "opted_out", "keyword": "STOP"}
    assert consent_change("START") == {"channel": "sms", "status": "opted_in", "keyword": "START"}
    assert consent_change("HELP") is None
    assert consent_change(None) is None
