"""TwiML answers: what Twilio should do with a call or message, built with Twilio's library.

Why the library and not a template: it escapes the configurable greeting (``&``, ``<``) and
writes attributes as Twilio spells them.

A call is greeted (``<Say>``), then forwarded to the agent number (``<Dial><Number>``) when
one is configured, else hung up. The ``<Dial action>`` brings the outcome of the forwarded
leg back to ``/v1/twilio/status``, and the agent's number rides in its query string: Twilio
signs the whole URL, so the status route can trust it. The action is *relative*
(``status?agent=…``): Twilio resolves it against the URL it called (``…/v1/twilio/voice``),
so it stays right behind a proxy that serves the hub under a path prefix.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

#: the Dial action, relative to ``/v1/twilio/voice``
STATUS_ACTION = "status"
#: record both legs as two channels, from the moment the agent answers
RECORDING = "record-from-answer-dual"


def dial_action(agent: str) -> str:
    """The Dial action URL (relative), naming the agent the call was forwarded to."""
    return f"{STATUS_ACTION}?{urlencode({'agent': agent})}"


def answer_call(greeting: str, forward_to: str | None, *, record: bool = False) -> str:
    """TwiML for an incoming call: greet, then forward to ``forward_to`` or hang up."""
    response = VoiceResponse()
    response.say(greeting)
    if forward_to:
        dial = response.dial(
            action=dial_action(forward_to),
            method="POST",
            record=RECORDING if record else None,
        )
        dial.number(forward_to)
    else:
        response.hangup()
    return str(response.to_xml())


def empty_messaging() -> str:
    """``<Response/>`` for an incoming message: no reply (Twilio answers STOP and HELP)."""
    return str(MessagingResponse().to_xml())


def empty_voice() -> str:
    """``<Response/>`` for a status or Dial action callback (the call then ends)."""
    return str(VoiceResponse().to_xml())


__all__ = ["RECORDING", "answer_call", "dial_action", "empty_messaging", "empty_voice"]
