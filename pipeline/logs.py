"""Structured logs (structlog) with customers' contact details kept out.

Why redact here: log lines travel to places with weaker access control than the database,
so every email address and phone number in a log value is replaced by a short hash that
still lets an operator correlate lines about the same customer.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d ()-]{7,}\d")


def _digest(match: re.Match[str]) -> str:
    return "<redacted:" + hashlib.sha256(match.group(0).encode()).hexdigest()[:10] + ">"


def redact(text: str) -> str:
    """Replace email addresses and phone numbers in ``text`` by short hashes."""
    return _PHONE.sub(_digest, _EMAIL.sub(_digest, text))


def _redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Set up structlog once per process (named events, bound context, redaction)."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    for noisy in ("alembic", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
