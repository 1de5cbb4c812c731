"""A deterministic, realistic omnichannel sample: the data behind ``ecrm demo`` and benchmarks.

Why a generator and not a fixture file: the demo needs a few thousand events and the
benchmarks need hundreds of thousands, and both need the *same* events on every run (so a
re-run dedupes by ``message_id`` and numbers are comparable). A seeded
:class:`random.Random` gives that with no data files and no third-party faker.

Why it is messy on purpose: identity resolution is only worth demonstrating on data that
looks like a real business's. So the sample contains what real touchpoints produce:

* one person writing from two email addresses (personal and work);
* a phone number given on a web login (``profile.identified``) and then calling support;
* anonymous web sessions that later log in (one event carries ``anonymous_id`` and
  ``user_id``), and devices that stay remembered afterwards;
* POS receipts identified by a loyalty card, some also by the phone on the card;
* a family phone shared by two people, and ``info@``-style addresses shared by colleagues
  (identifiers that must *not* merge people);
* names with typos (swapped or missing letters) and emails in odd case or with spaces;
* phone numbers written in E.164, international, ``011``-dialled and US national formats
  (the national ones only parse with default region ``US``).

Every event carries the ground truth in ``context["sample_person"]`` (``person-0042``), so
tests can measure how well identity resolution recovers the real people.

It also holds what the demo's marketing rules
(``personalization/rules/samples/demo.yaml``) react to, so ``ecrm demo`` shows each of
them firing: support emails whose subject is a complaint, SMS keyword replies (``YES``,
``STOP``) that carry a consent decision, and a few lapsed customers who opted in to SMS,
bought nothing and come back to the site after two months away. These are drawn from a
second RNG (seeded from the seed), so the main draws, and with them the people and every
other event, are the same as without them.
"""

from __future__ import annotations

import os
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any, TypeVar

import orjson

from connectors.sample_vocabulary import (
    _AGENTS,
    _CA_AREAS,
    _CALL_QUEUES,
    _COMPANY_DOMAINS,
    _COUNTRY_DOMAINS,
    _COUNTRY_PICK,
    _CURRENCY,
    _DEVICES_PICK,
    _DOMAIN_PICK,
    _EMAIL_SUBJECTS,
    _FX,
    _PAGES,
    _PAYMENTS,
    _PRODUCTS,
    _QUANTITY_PICK,
    _REFERRERS,
    _SHARED_PREFIXES,
    _SMALL_BUSINESSES,
    _SMS_BODIES,
    _STORES,
    _US_AREAS,
    _USER_AGENTS,
    _VIEWS_PICK,
    FIRST_NAMES,
    LAST_NAMES,
    _Store,
)

__all__ = ["DEFAULT_START", "generate_sample", "read_jsonl", "write_jsonl"]

#: Fixed default start, so the default sample is identical on every run and machine.
#: Pass ``start=utcnow() - timedelta(days=days)`` for a sample that looks recent.
DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)
SOURCE = "sample"
_TIMESTAMP_FIELDS = ("occurred_at", "received_at")
_T = TypeVar("_T")
#: share of support emails that are complaints (the demo's auto-reply rule answers them)
COMPLAINT_SHARE = 0.15
#: complaint subjects: each matches one of the demo rule's globs (``*complain*``, ...)
_COMPLAINT_SUBJECTS = (
    "Complaint about my order",
    "Refund not received yet",
    "Not happy with the quality",
)
#: SMS keywords that are a consent decision (``personalization.consent``)
_SMS_CONSENT = {"YES": "opted_in", "STOP": "opted_out"}
#: a lapsed customer comes back after at least this many days away (the win-back rule: 60)
LAPSE_DAYS = 61
_DAY = 86400.0


# --------------------------------------------------------------------------------------
# Phone numbers: one canonical number, many spellings.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Phone:
    """A number as country code plus national digit groups (without trunk ``0``)."""

    country_code: str
    groups: tuple[str, ...]

    @property
    def e164(self) -> str:
        return "+" + self.country_code + "".join(self.groups)

    def render(self, rng: Random) -> str:
        """Spell the number the way a person or a system might have typed it."""
        cc, g = self.country_code, self.groups
        spaced = " ".join(g)
        if cc == "1":  # NANP: mostly national spellings, which need default region US.
            area, exchange, line = g
            style = rng.randrange(10)
            if style < 3:
                return f"+1 {area} {exchange} {line}"
            if style < 6:
                return f"({area}) {exchange}-{line}"
            if style == 6:
                return f"{area}-{exchange}-{line}"
            if style == 7:
                return f"{area}.{exchange}.{line}"
            if style == 8:
                return f"1-{area}-{exchange}-{line}"
            return self.e164
        style = rng.randrange(4)
        if style == 0:
            return f"+{cc} {spaced}"
        if style == 1:
            return f"+{cc} (0){spaced}"
        if style == 2:  # dialled from the US
            return f"011 {cc} {spaced}"
        return self.e164


def _digits(rng: Random, n: int) -> str:
    return f"{rng.randrange(10**n):0{n}d}"


def _candidate_phone(rng: Random, country: str) -> _Phone:
    """One number from a range reserved for fiction/drama where the country has one."""
    if country in ("US", "CA"):
        area = rng.choice(_US_AREAS if country == "US" else _CA_AREAS)
        line = "01" + _digits(rng, 2) if rng.random() < 0.8 else _digits(rng, 4)
        return _Phone("1", (area, "555", line))
    if country == "GB":
        block = rng.randrange(5)
        if block == 4:
            return _Phone("44", ("7700", "900" + _digits(rng, 3)))
        area = ("20", "161", "121", "131")[block]
        return _Phone("44", (area, "7946" if area == "20" else "496", "0" + _digits(rng, 3)))
    if country == "DE":
        if rng.random() < 0.5:
            return _Phone("49", ("30", "55" + _digits(rng, 2), _digits(rng, 4)))
        return _Phone("49", ("151", _digits(rng, 4), _digits(rng, 4)))
    if country == "FR":
        if rng.random() < 0.5:
            return _Phone("33", ("1", "99", "00", _digits(rng, 2), _digits(rng, 2)))
        return _Phone("33", ("6", "39", "98", _digits(rng, 2), _digits(rng, 2)))
    if rng.random() < 0.5:  # AU
        return _Phone("61", ("2", "5550", _digits(rng, 4)))
    return _Phone("61", ("3", "7010", _digits(rng, 4)))


def _new_phone(rng: Random, country: str, taken: set[str]) -> _Phone:
    """A number nobody else has (sharing is added deliberately, not by collision)."""
    while True:
        phone = _candidate_phone(rng, country)
        if phone.e164 not in taken:
            taken.add(phone.e164)
            return phone


# --------------------------------------------------------------------------------------
# People: the ground truth.
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Person:
    person_id: str
    first: str
    last: str
    country: str
    customer_id: str = ""
    emails: list[str] = field(default_factory=list)
    shared_email: str | None = None
    phone: _Phone | None = None
    loyalty_card: str | None = None
    devices: list[str] = field(default_factory=list)
    store: _Store | None = None
    activity: float = 1.0
    shares_phone: bool = False
    phone_on_identify: bool = False
    card_with_phone: bool = False


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _uuid4(rng: Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _email_local(rng: Random, first: str, last: str) -> str:
    f, la = _ascii(first), _ascii(last)
    style = rng.randrange(6)
    if style == 0:
        return f"{f}.{la}"
    if style == 1:
        return f"{f}{la}"
    if style == 2:
        return f"{f[0]}.{la}"
    if style == 3:
        return f"{f}_{la}"
    if style == 4:
        return f"{f}{rng.randrange(70, 100)}"
    return f"{f}.{la}{rng.randrange(1, 30)}"


def _new_email(rng: Random, person: _Person, taken: set[str], *, work: bool) -> str:
    if work:
        domain = rng.choice(_COMPANY_DOMAINS)
    elif rng.random() < 0.12:
        domain = rng.choice(_COUNTRY_DOMAINS[person.country])
    else:
        domain = _DOMAIN_PICK.pick(rng)
    local = _email_local(rng, person.first, person.last)
    address = f"{local}@{domain}"
    while address in taken:
        address = f"{local}{rng.randrange(2, 1000)}@{domain}"
    taken.add(address)
    return address


def _make_people(rng: Random, customers: int) -> list[_Person]:
    """Draw the people first, then wire in the deliberate overlaps."""
    width = max(4, len(str(customers - 1)))
    people = [
        _Person(
            person_id=f"person-{i:0{width}d}",
            first=rng.choice(FIRST_NAMES),
            last=rng.choice(LAST_NAMES),
            country=_COUNTRY_PICK.pick(rng),
        )
        for i in range(customers)
    ]

    # Families: the second person takes the first's surname, country and phone.
    families: list[tuple[_Person, _Person]] = []
    if customers >= 2:
        chosen = rng.sample(people, 2 * max(1, customers // 40))
        for head, member in zip(chosen[::2], chosen[1::2], strict=True):
            member.last, member.country = head.last, head.country
            head.shares_phone = member.shares_phone = True
            families.append((head, member))

    customer_ids = rng.sample(range(100_000, 1_000_000), customers)
    loyalty_numbers = iter(rng.sample(range(10_000_000, 100_000_000), customers))
    phones_taken: set[str] = set()
    emails_taken: set[str] = set()
    for person, cid in zip(people, customer_ids, strict=True):
        person.customer_id = f"C{cid}"
        person.activity = min(6.0, rng.lognormvariate(0.0, 0.6))
        person.emails.append(_new_email(rng, person, emails_taken, work=False))
        if rng.random() < 0.18:
            person.emails.append(_new_email(rng, person, emails_taken, work=rng.random() < 0.7))
        if person.shares_phone or rng.random() < 0.8:
            person.phone = _new_phone(rng, person.country, phones_taken)
        if rng.random() < 0.6:
            person.store = rng.choice(_STORES[person.country])
        if rng.random() < (0.55 if person.store else 0.1):
            person.loyalty_card = f"LC-{next(loyalty_numbers)}"
        n_devices = _DEVICES_PICK.pick(rng)
        person.devices = [_uuid4(rng) for _ in range(n_devices)]
        person.phone_on_identify = person.phone is not None and rng.random() < 0.15
        person.card_with_phone = (
            person.loyalty_card is not None and person.phone is not None and rng.random() < 0.3
        )
    for head, member in families:
        member.phone = head.phone
        member.store = head.store

    # Colleagues at small businesses share one info@-style mailbox.
    if customers >= 2:
        for n in range(max(1, customers // 100)):
            business = _SMALL_BUSINESSES[n % len(_SMALL_BUSINESSES)]
            if n >= len(_SMALL_BUSINESSES):
                business = f"{business}-{n // len(_SMALL_BUSINESSES) + 1}"
            address = f"{rng.choice(_SHARED_PREFIXES)}@{business}.com"
            for colleague in rng.sample(people, min(customers, rng.choice((2, 2, 3)))):
                if colleague.shared_email is None:
                    colleague.shared_email = address
    return people


# --------------------------------------------------------------------------------------
# Events.
# --------------------------------------------------------------------------------------


def _typo(rng: Random, name: str) -> str:
    """A swapped pair or a missing letter, as a hurried human would type the name."""
    if len(name) < 4:
        return name
    i = rng.randrange(1, len(name) - 1)
    if rng.random() < 0.5 and name[i] != name[i + 1]:
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    return name[:i] + name[i + 1 :]


def _render_email(rng: Random, address: str) -> str:
    """Mostly as stored; sometimes capitalized, shouted or with stray whitespace."""
    roll = rng.random()
    if roll < 0.8:
        return address
    if roll < 0.88:
        local, domain = address.split("@", 1)
        return f"{local.title()}@{domain.capitalize()}"
    if roll < 0.93:
        return address.upper()
    return f"  {address} "


def _money(value: float) -> float:
    return round(value, 2)


class _Generator:
    """Builds events person by person; ``message_id`` is assigned after sorting by time."""

    def __init__(self, rng: Random, start: datetime, days: int, story: Random) -> None:
        self.rng = rng
        #: draws for what the demo's rules react to, apart from ``rng`` (see the module doc)
        self.story = story
        self.start = start
        self.days = days
        self.events: list[dict[str, Any]] = []
        self.order_seq = 0

    # -- helpers -------------------------------------------------------------------------

    def moment(self, first_hour: float, last_hour: float) -> float:
        """Seconds after ``start``: a random day, within plausible opening hours."""
        day = self.rng.randrange(self.days)
        return day * 86400.0 + self.rng.uniform(first_hour * 3600.0, last_hour * 3600.0)

    def emit(
        self,
        person: _Person,
        channel: str,
        type_: str,
        at: float,
        delay: float,
        identifiers: dict[str, Any],
        *,
        traits: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        occurred = self.start + timedelta(milliseconds=int(at * 1000))
        received = occurred + timedelta(milliseconds=int(delay * 1000))
        self.events.append(
            {
                "message_id": "",
                "channel": channel,
                "type": type_,
                "occurred_at": occurred,
                "received_at": received,
                "source": SOURCE,
                "identifiers": identifiers,
                "traits": traits or {},
                "properties": properties or {},
                "context": {"sample_person": person.person_id, **(context or {})},
            }
        )

    def name_traits(self, person: _Person) -> dict[str, Any]:
        rng = self.rng
        first = _typo(rng, person.first) if rng.random() < 0.06 else person.first
        last = _typo(rng, person.last) if rng.random() < 0.06 else person.last
        return {"first_name": first, "last_name": last}

    def basket(self, currency: str, max_lines: int) -> tuple[list[dict[str, Any]], float]:
        rng = self.rng
        fx = _FX[currency]
        items: list[dict[str, Any]] = []
        for product in rng.sample(_PRODUCTS, rng.randint(1, max_lines)):
            quantity = _QUANTITY_PICK.pick(rng)
            items.append(
                {
                    "sku": product.sku,
                    "name": product.name,
                    "category": product.category,
                    "quantity": quantity,
                    "unit_price": _money(product.price * fx),
                }
            )
        total = _money(sum(i["unit_price"] * i["quantity"] for i in items))
        return items, total

    def order_id(self, prefix: str) -> str:
        self.order_seq += 1
        return f"{prefix}-{self.order_seq:07d}"

    # -- channels ------------------------------------------------------------------------

    def web(self, person: _Person) -> None:
        """Sessions on the person's devices; a login links the device from then on."""
        rng = self.rng
        currency = _CURRENCY[person.country]
        sessions = max(1, round(person.activity * rng.uniform(1.0, 3.0)))
        will_login = rng.random() < 0.85 or person.phone_on_identify
        first_login = rng.randrange(sessions) if will_login else -1
        remembered: set[str] = set()
        identified_with_phone = False
        for index, at in enumerate(sorted(self.moment(6, 23.5) for _ in range(sessions))):
            device = person.devices[0] if rng.random() < 0.7 else rng.choice(person.devices)
            user_agent = _USER_AGENTS[int(device[:2], 16) % len(_USER_AGENTS)]
            context = {"session_id": f"s-{rng.getrandbits(64):016x}", "user_agent": user_agent}
            t = at

            def ids(device: str = device) -> dict[str, Any]:
                out: dict[str, Any] = {"anonymous_id": device}
                if device in remembered:
                    out["user_id"] = person.customer_id
                return out

            def step(low: float = 5.0, high: float = 120.0) -> float:
                nonlocal t
                t += rng.uniform(low, high)
                return t

            path, title = rng.choice(_PAGES)
            self.emit(
                person,
                "web",
                "page.viewed",
                t,
                rng.uniform(0.05, 2.0),
                ids(),
                properties={"path": path, "title": title, "referrer": rng.choice(_REFERRERS)},
                context=context,
            )
            viewed = rng.sample(_PRODUCTS, _VIEWS_PICK.pick(rng))
            for product in viewed:
                self.emit(
                    person,
                    "web",
                    "product.viewed",
                    step(),
                    rng.uniform(0.05, 2.0),
                    ids(),
                    properties={
                        "sku": product.sku,
                        "name": product.name,
                        "category": product.category,
                        "price": _money(product.price * _FX[currency]),
                        "currency": currency,
                    },
                    context=context,
                )
            cart: tuple[list[dict[str, Any]], float] | None = None
            if viewed and rng.random() < 0.4:
                cart = self.basket(currency, 3)
                self.emit(
                    person,
                    "web",
                    "cart.updated",
                    step(),
                    rng.uniform(0.05, 2.0),
                    ids(),
                    properties={"items": cart[0], "cart_total": cart[1], "currency": currency},
                    context=context,
                )
            logs_in = device not in remembered and (
                index == first_login or (will_login and index > first_login and rng.random() < 0.3)
            )
            if logs_in:
                remembered.add(device)
                email = rng.choice(person.emails)
                identifiers: dict[str, Any] = {
                    "anonymous_id": device,
                    "user_id": person.customer_id,
                    "email": _render_email(rng, email),
                }
                traits = {**self.name_traits(person), "email": email}
                with_phone = person.phone is not None and (
                    (person.phone_on_identify and not identified_with_phone) or rng.random() < 0.1
                )
                if with_phone and person.phone is not None:
                    identified_with_phone = True
                    identifiers["phone"] = traits["phone"] = person.phone.render(rng)
                self.emit(
                    person,
                    "web",
                    "profile.identified",
                    step(10, 60),
                    rng.uniform(0.05, 2.0),
                    identifiers,
                    traits=traits,
                    context=context,
                )
            if cart is not None and device in remembered and rng.random() < 0.55:
                items, total = cart
                self.emit(
                    person,
                    "web",
                    "order.completed",
                    step(30, 300),
                    rng.uniform(0.05, 2.0),
                    ids(),
                    properties={
                        "order_id": self.order_id("W"),
                        "items": items,
                        "total": total,
                        "currency": currency,
                        "shipping": rng.choice(("standard", "express", "click_and_collect")),
                    },
                    context=context,
                )

    def pos(self, person: _Person) -> None:
        """Till receipts: loyalty card, phone typed by the cashier, or a customer lookup."""
        rng = self.rng
        store = person.store
        if store is None:
            return
        visits = round(person.activity * rng.uniform(0.0, 2.4))
        if person.card_with_phone:
            visits = max(1, visits)
        currency = _CURRENCY[store.country]
        for visit in range(visits):
            identifiers: dict[str, Any] = {}
            roll = rng.random()
            if person.loyalty_card is not None and (
                (person.card_with_phone and visit == 0) or roll < 0.9
            ):
                identifiers["loyalty_card"] = person.loyalty_card
                if person.phone is not None and (
                    (person.card_with_phone and visit == 0) or rng.random() < 0.1
                ):
                    identifiers["phone"] = person.phone.render(rng)
            elif person.phone is not None and roll < 0.95:
                identifiers["phone"] = person.phone.render(rng)
            else:
                identifiers["customer_id"] = person.customer_id
            items, total = self.basket(currency, 4)
            self.emit(
                person,
                "pos",
                "order.completed",
                self.moment(9, 21),
                rng.uniform(30.0, 4 * 3600.0),  # tills upload in batches
                identifiers,
                properties={
                    "order_id": self.order_id("P"),
                    "store_id": store.store_id,
                    "store_city": store.city,
                    "items": items,
                    "total": total,
                    "currency": currency,
                    "payment_method": rng.choice(_PAYMENTS),
                },
                context={"register": f"R{rng.randint(1, 6)}"},
            )

    def email(self, person: _Person) -> None:
        """Inbound mail to support, from every address the person uses."""
        rng = self.rng
        count = round(person.activity * rng.uniform(0.2, 1.6))
        count = max(count, len(person.emails) if len(person.emails) > 1 else 0)
        senders = [
            person.emails[i] if i < len(person.emails) else rng.choice(person.emails)
            for i in range(count)
        ]
        if person.shared_email is not None:
            senders.append(person.shared_email)
        for sender in senders:
            at, delay = self.moment(0, 24), rng.uniform(1.0, 30.0)
            identifiers = {"email": _render_email(rng, sender)}
            traits = self.name_traits(person)
            subject = rng.choice(_EMAIL_SUBJECTS)
            if self.story.random() < COMPLAINT_SHARE:
                subject = self.story.choice(_COMPLAINT_SUBJECTS)
            self.emit(
                person,
                "email",
                "email.received",
                at,
                delay,
                identifiers,
                traits=traits,
                properties={
                    "subject": subject,
                    "mailbox": "support@shop.example",
                    "thread_id": f"thr-{rng.getrandbits(40):010x}",
                },
            )

    def call(self, person: _Person) -> None:
        """Contact-centre calls, identified by the caller's number (CLI)."""
        rng = self.rng
        phone = person.phone
        if phone is None:
            return
        count = round(person.activity * rng.uniform(0.0, 1.1))
        if person.shares_phone or person.phone_on_identify:
            count = max(1, count)
        for _ in range(count):
            duration = int(rng.lognormvariate(5.2, 0.7))  # ~3 minutes median
            ended = self.moment(8, 20) + duration
            self.emit(
                person,
                "call",
                "call.completed",
                ended,
                rng.uniform(1.0, 60.0),
                {"phone": phone.render(rng)},
                properties={
                    "duration_seconds": duration,
                    "agent": rng.choice(_AGENTS),
                    "direction": "inbound" if rng.random() < 0.85 else "outbound",
                    "queue": rng.choice(_CALL_QUEUES),
                    "resolved": rng.random() < 0.8,
                },
                context={"call_id": f"call-{rng.getrandbits(48):012x}"},
            )

    def sms(self, person: _Person) -> None:
        """Replies to the SMS short code."""
        rng = self.rng
        phone = person.phone
        if phone is None:
            return
        for _ in range(round(person.activity * rng.uniform(0.0, 1.2))):
            at, delay = self.moment(7, 23), rng.uniform(0.5, 10.0)
            identifiers = {"phone": phone.render(rng)}
            properties: dict[str, Any] = {"body": rng.choice(_SMS_BODIES), "to": "72345"}
            if properties["body"] in _SMS_CONSENT:
                status = _SMS_CONSENT[properties["body"]]
                properties["consent"] = {"channel": "sms", "status": status}
            self.emit(person, "sms", "sms.received", at, delay, identifiers, properties=properties)

    def lapsed(self, people: list[_Person]) -> None:
        """A few customers who opted in to SMS, bought nothing and come back after 60+ days.

        Why after the fact: whether a person lapsed is only known once their events are
        drawn. Those who logged in, bought nothing and were last on the site at least
        :data:`LAPSE_DAYS` before the sample ends get an SMS opt-in with their phone when
        they last logged in, and a page view on the same device at least that many days
        after their last one: what the demo's win-back rule looks for. People sharing a
        phone or a mailbox are left out (their profiles are not theirs alone).
        """
        story, end = self.story, self.days * _DAY
        last_view: dict[str, float] = {}
        last_login: dict[str, dict[str, Any]] = {}
        buyers: set[str] = set()
        for event in self.events:
            person_id = event["context"]["sample_person"]
            at = (event["occurred_at"] - self.start).total_seconds()
            if event["type"] == "page.viewed":
                last_view[person_id] = max(at, last_view.get(person_id, 0.0))
            elif event["type"] == "order.completed":
                buyers.add(person_id)
            elif event["type"] == "profile.identified":
                found = last_login.get(person_id)
                if found is None or event["occurred_at"] > found["occurred_at"]:
                    last_login[person_id] = event
        candidates = [
            person
            for person in people
            if person.phone is not None
            and not person.shares_phone
            and person.shared_email is None
            and person.person_id in last_login
            and person.person_id not in buyers
            and last_view.get(person.person_id, end) + LAPSE_DAYS * _DAY < end - 3600.0
        ]
        wanted = min(len(candidates), max(1, len(people) // 50))
        for person in story.sample(candidates, wanted):
            assert person.phone is not None
            login = last_login[person.person_id]
            device = login["identifiers"]["anonymous_id"]
            email = login["traits"]["email"]
            phone = person.phone.render(story)
            at = (login["occurred_at"] - self.start).total_seconds() + story.uniform(20, 90)
            self.emit(
                person,
                "web",
                "profile.identified",
                at,
                story.uniform(0.05, 2.0),
                {
                    "anonymous_id": device,
                    "user_id": person.customer_id,
                    "email": email,
                    "phone": phone,
                },
                traits={"first_name": person.first, "last_name": person.last, "email": email},
                properties={"consent": {"channel": "sms", "status": "opted_in"}},
                context={k: v for k, v in login["context"].items() if k != "sample_person"},
            )
            away = last_view[person.person_id] + LAPSE_DAYS * _DAY
            path, title = story.choice(_PAGES)
            self.emit(
                person,
                "web",
                "page.viewed",
                story.uniform(away, end - 3600.0),
                story.uniform(0.05, 2.0),
                {"anonymous_id": device, "user_id": person.customer_id},
                properties={"path": path, "title": title, "referrer": story.choice(_REFERRERS)},
                context={
                    "session_id": f"s-{story.getrandbits(64):016x}",
                    "user_agent": _USER_AGENTS[int(device[:2], 16) % len(_USER_AGENTS)],
                },
            )


def _populate(generator: _Generator, people: list[_Person]) -> None:
    for person in people:
        generator.web(person)  # always emits, so every person has events
        generator.pos(person)
        generator.email(person)
        generator.call(person)
        generator.sms(person)
    generator.lapsed(people)


def generate_sample(
    *,
    customers: int = 300,
    seed: int = 7,
    start: datetime | None = None,
    days: int = 90,
) -> list[dict[str, Any]]:
    """Return a deterministic sample of raw touchpoints, sorted by ``occurred_at``.

    Each dict is valid input for ``Touchpoint.model_validate``; identifiers are spelled
    as real sources spell them (normalize with default region ``US``). The same arguments
    always give the same list, so ``message_id`` (``sample-<seed>-<n>``) dedupes re-runs
    of the same sample; samples of different size share ids but not content.
    """
    if customers < 0:
        raise ValueError("customers must be >= 0")
    if days < 1:
        raise ValueError("days must be >= 1")
    if start is None:
        start = DEFAULT_START
    elif start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    rng = Random(seed)
    generator = _Generator(rng, start.astimezone(UTC), days, Random(f"{seed}:stories"))
    _populate(generator, _make_people(rng, customers))
    events = generator.events
    events.sort(key=lambda event: event["occurred_at"])  # stable: ties keep build order
    for n, event in enumerate(events):
        event["message_id"] = f"sample-{seed}-{n}"
    return events


def write_jsonl(events: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write one JSON object per line (ISO-8601 timestamps); return the number written."""
    count = 0
    with open(path, "wb") as fh:
        for event in events:
            fh.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
            count += 1
    return count


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the events of a JSONL file, with ``occurred_at``/``received_at`` as datetimes.

    Why parse the timestamps back: so ``read_jsonl(write_jsonl(x))`` equals ``x`` and a
    benchmark can feed either to the same code.
    """
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            event: dict[str, Any] = orjson.loads(line)
            for key in _TIMESTAMP_FIELDS:
                value = event.get(key)
                if isinstance(value, str):
                    event[key] = datetime.fromisoformat(value)
            yield event
