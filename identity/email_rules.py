"""Provider rules for email addresses: one mailbox, several spellings.

Gmail delivers ``John.Smith+shop@googlemail.com`` to ``johnsmith@gmail.com``: dots in the
local part and ``+tags`` are ignored, and ``googlemail.com`` is the same domain. A person
who signs up with one spelling and buys with another is one customer, so resolution can
compare addresses in their canonical form.

Why off unless configured: the rules change which value identifies a person. A hub that
already holds identifiers would see new events under the canonical spelling and the old
ones under the old, so switching them on is a decision (try it first with
``ecrm identity simulate``). Why in identity, not at ingest: the event log keeps the
address as the customer wrote it (replies go to the address that actually spoke); only
the identity graph compares canonical forms.

Configured in the identity file::

    email_rules:
      - domains: [gmail.com, googlemail.com]
        canonical_domain: gmail.com
        ignore_dots: true
        ignore_plus_tags: true
      - domains: [outlook.com, hotmail.com]
        ignore_plus_tags: true
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: what ``email_rules: gmail`` stands for (the common case, spelled out once)
GMAIL = {
    "domains": ["gmail.com", "googlemail.com"],
    "canonical_domain": "gmail.com",
    "ignore_dots": True,
    "ignore_plus_tags": True,
}


@dataclass(frozen=True)
class EmailRule:
    """How one provider's addresses are compared."""

    domains: tuple[str, ...]
    canonical_domain: str | None = None
    ignore_dots: bool = False
    ignore_plus_tags: bool = False


@dataclass(frozen=True)
class EmailRules:
    """The rules by domain; an address of any other domain is left as it is."""

    by_domain: Mapping[str, EmailRule]

    @classmethod
    def of(cls, rules: Sequence[EmailRule]) -> EmailRules:
        return cls({domain: rule for rule in rules for domain in rule.domains})

    def canonical(self, address: str) -> str:
        """The address as the provider delivers it (already case-folded by ingest)."""
        local, at, domain = address.rpartition("@")
        rule = self.by_domain.get(domain)
        if rule is None or not at or not local:
            return address
        if rule.ignore_plus_tags:
            local = local.split("+", 1)[0] or local
        if rule.ignore_dots:
            local = local.replace(".", "") or local
        return f"{local}@{rule.canonical_domain or domain}"

    def identifiers(self, identifiers: Mapping[str, str]) -> dict[str, str]:
        """An event's identifiers with its email in canonical form."""
        email = identifiers.get("email")
        if email is None:
            return dict(identifiers)
        return {**identifiers, "email": self.canonical(email)}


NO_RULES = EmailRules({})

__all__ = ["GMAIL", "NO_RULES", "EmailRule", "EmailRules"]
