"""Mail written by robots: auto-replies, bulk mail and bounces (RFC 3834, RFC 3464).

Why it matters: rules must never answer a robot (two auto-responders can mail each other
forever), and a bounce says a customer's address no longer works.
"""

from __future__ import annotations

from email.message import EmailMessage, Message
from typing import Any

from connectors.email.headers import clean_text, header_text, usable_address

_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_DAEMONS = frozenset({"mailer-daemon", "postmaster"})
STATUS_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})


def automation_flags(message: Message, sender: str) -> dict[str, bool]:
    """``auto_reply``, ``bulk`` and ``bounce`` (sender-based) as RFC 3834 and practice say."""
    auto_submitted = (header_text(message, "Auto-Submitted") or "").split(";")[0].strip().lower()
    precedence = (header_text(message, "Precedence") or "").strip().lower()
    autoreply_header = any(
        (header_text(message, name) or "").strip().lower() not in ("", "no")
        for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
    )
    auto_reply = (
        (bool(auto_submitted) and auto_submitted != "no")
        or precedence in _AUTO_PRECEDENCE
        or autoreply_header
    )
    bulk = (
        precedence in _BULK_PRECEDENCE
        or header_text(message, "List-Id") is not None
        or header_text(message, "List-Unsubscribe") is not None
    )
    local = sender.rpartition("@")[0] if "@" in sender else sender
    bounce = local.strip().lower() in _DAEMONS
    return {"auto_reply": auto_reply, "bulk": bulk, "bounce": bounce}


def delivery_report(message: EmailMessage) -> dict[str, Any] | None:
    """The first recipient's outcome of a DSN (``multipart/report; report-type=delivery-status``).

    Prefers a recipient whose ``Action`` is ``failed``; ``delayed`` alone is not a bounce.
    """
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type", "")).lower() not in (
        "delivery-status",
        "global-delivery-status",
    ):
        return None
    for part in message.iter_parts():
        if part.get_content_type() not in STATUS_PARTS:
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            return None
        statuses = (_recipient_status(b) for b in blocks[1:] if isinstance(b, Message))
        recipients = [status for status in statuses if status]
        if not recipients:
            return {"action": None}
        failed = [r for r in recipients if r.get("action") == "failed"]
        return (failed or recipients)[0]
    return None


def _recipient_status(block: Message) -> dict[str, Any]:
    recipient = (
        header_text(block, "Final-Recipient") or header_text(block, "Original-Recipient") or ""
    )
    address = recipient.partition(";")[2].strip() if ";" in recipient else recipient.strip()
    out: dict[str, Any] = {}
    if address:
        out["recipient"] = usable_address(address) or clean_text(address)[:256]
    for name, key in (("Action", "action"), ("Status", "status")):
        value = (header_text(block, name) or "").strip().lower()
        if value:
            out[key] = value.split()[0][:32]
    diagnostic = header_text(block, "Diagnostic-Code")
    if diagnostic:
        out["diagnostic"] = " ".join(clean_text(diagnostic).split())[:500]
    return out
