"""Guards: whether a matched rule's actions may run for a profile now, and when.

Three decisions, each kept apart from firing so it can be tested on its own:

- :func:`in_holdout`: is the profile in the rule's holdout group? A stable hash, so the
  same profile stays held out (or not) for a rule across batches, processes and
  restarts, and groups of different rules are independent. Held-out firings are recorded
  with their actions held back: the group is what uplift is measured against.
- :func:`quiet_until`: is it quiet hours where the profile is? Then the messages are due
  when the window ends: delayed, never dropped.
- :class:`GuardState`: would the firing exceed a cap? A rule's ``frequency`` caps count
  the profile's recent firings of that rule whose actions ran; ``ECRM_CHANNEL_CAPS``
  counts the profile's recent messages per channel, whoever queued them. It is read once
  per batch, with a few queries for all the batch's profiles, and then kept up to date in
  memory (:meth:`GuardState.note`), so two events of one profile in a batch are capped
  like two batches would be.

What counts for a channel cap: every message in the outbox to the profile on that
channel (email: ``email.send`` and ``email.reply``; sms: ``sms.send``), queued, sending or
sent, from a rule, the API or the CLI alike: the cap protects the customer, not a rule.
``suppressed`` (no consent) and ``failed`` messages were never delivered and do not count.
Messages are counted when they were queued (``created_at``), also when quiet hours made
them due later.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain

from sqlalchemy import select
from sqlalchemy.orm import Session

from personalization.actions import CHANNEL_OF, FAILED, SUPPRESSED, Action
from personalization.rules.models import RuleFiring
from personalization.rules.schema import Cap, CompiledRule, QuietHours, time_zone
from pipeline.db import in_list

#: ``held`` of a firing whose actions did not run, and what :meth:`GuardState.check` returns
HOLDOUT = "holdout"
FREQUENCY_CAP = "frequency_cap"
CHANNEL_CAP = "channel_cap"
#: the message channel of each action type that sends one
MESSAGE_CHANNELS = {"send_email": "email", "send_sms": "sms"}
#: profiles per query (well under the bound-parameter limits)
_CHUNK = 400
#: outbox statuses of messages that never reached the customer
_NOT_DELIVERED = (SUPPRESSED, FAILED)
_SCALE = float(2**64)


def in_holdout(rule_id: str, profile_id: str, percent: float) -> bool:
    """Is the profile in the rule's holdout group (``percent`` of all profiles)?

    The first 8 bytes of SHA-256 over rule id and profile id are a uniform number in
    [0, 1): not Python's ``hash()``, which changes with every process. Raising a rule's
    percentage keeps everyone held out before held out (the group only grows).
    """
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"{rule_id}\x00{profile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE * 100 < percent


def quiet_until(now: datetime, quiet: QuietHours, profile_tz: str | None) -> datetime | None:
    """When the quiet window ``now`` falls in ends (aware UTC), or ``None`` if not quiet.

    The window is wall-clock time in the profile's time zone (``profile_tz``; missing or
    not a known IANA name: the guard's ``timezone``), so 21:00-08:00 follows each customer.
    It includes ``start`` and excludes ``end``. On a day the clocks change the window keeps
    its wall-clock times: an end in a repeated hour is its first occurrence still ahead,
    an end in a skipped hour comes an hour later on the clock (02:30 -> 03:30).
    """
    if now.tzinfo is None:
        raise ValueError("quiet_until needs an aware datetime")
    zone = time_zone(profile_tz) or time_zone(quiet.timezone) or UTC
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None, fold=0)
    if quiet.start < quiet.end:
        inside, end_day = quiet.start <= clock < quiet.end, local.date()
    else:  # crosses midnight: the evening part ends tomorrow
        inside = clock >= quiet.start or clock < quiet.end
        end_day = local.date() + timedelta(days=1 if clock >= quiet.start else 0)
    if not inside:
        return None
    wall = datetime.combine(end_day, quiet.end)
    both = [wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    # an instant whose wall clock reads the end: two in a repeated hour, none in a skipped one
    real = sorted(end for end in both if end.astimezone(zone).replace(tzinfo=None) == wall)
    return next((end for end in real if end > now), max(both))


def message_channels(rule: CompiledRule) -> tuple[str, ...]:
    """The channel of each message the rule's actions send (``email`` twice for two emails)."""
    return tuple(
        MESSAGE_CHANNELS[action.type] for action in rule.actions if action.type in MESSAGE_CHANNELS
    )


def _count(times: Sequence[datetime], since: datetime) -> int:
    return sum(1 for when in times if when > since)


@dataclass
class GuardState:
    """Recent firings and messages of a batch's profiles: what the caps are checked on.

    Only the rules given to :meth:`read` have their firings read; :meth:`check` of another
    rule sees none (so it is allowed unless :meth:`note` recorded some).
    """

    channel_caps: Mapping[str, Cap] = field(default_factory=dict)
    #: (rule id, profile id) -> when its actions ran
    firings: dict[tuple[str, str], list[datetime]] = field(default_factory=dict)
    #: (channel, profile id) -> when each message was queued
    messages: dict[tuple[str, str], list[datetime]] = field(default_factory=dict)

    @classmethod
    def read(
        cls,
        session: Session,
        workspace_id: str,
        profile_ids: Collection[str],
        rules: Sequence[CompiledRule],
        now: datetime,
        channel_caps: Mapping[str, Cap],
    ) -> GuardState:
        """Read what the caps of ``rules`` and ``channel_caps`` need, for these profiles.

        One query per 400 profiles for firings (only if a rule has frequency caps) and one
        for messages (only if a capped channel is one the rules send on), each bounded by
        the longest period involved; no query at all without caps.
        """
        state = cls(channel_caps=dict(channel_caps))
        capped = {rule.id: rule.guards.frequency for rule in rules if rule.guards.frequency}
        channels = {ch for rule in rules for ch in message_channels(rule)} & set(channel_caps)
        chosen = sorted(set(profile_ids))
        if not chosen or not (capped or channels):
            return state
        firing_since = now - max(cap.per for cap in chain(*capped.values())) if capped else now
        kinds = [kind for kind, channel in CHANNEL_OF.items() if channel in channels]
        message_since = now - max((channel_caps[ch].per for ch in channels), default=timedelta())
        for start in range(0, len(chosen), _CHUNK):
            part = chosen[start : start + _CHUNK]
            if capped:
                query = select(RuleFiring.rule_id, RuleFiring.profile_id, RuleFiring.created_at)
                query = query.where(
                    RuleFiring.workspace_id == workspace_id,
                    in_list(session, RuleFiring.profile_id, part),
                    RuleFiring.created_at > firing_since,
                    RuleFiring.rule_id.in_(sorted(capped)),
                    RuleFiring.matched.is_(True),
                    RuleFiring.held.is_(None),
                )
                for rule_id, profile_id, created_at in session.execute(query):
                    if profile_id is not None:  # in_list matched it: never None
                        state.firings.setdefault((rule_id, profile_id), []).append(created_at)
            if kinds:
                query = select(Action.kind, Action.profile_id, Action.created_at).where(
                    Action.workspace_id == workspace_id,
                    in_list(session, Action.profile_id, part),
                    Action.created_at > message_since,
                    Action.kind.in_(kinds),
                    Action.status.not_in(_NOT_DELIVERED),
                )
                for kind, profile_id, created_at in session.execute(query):
                    if profile_id is not None:  # in_list matched it: never None
                        key = (CHANNEL_OF[kind], profile_id)
                        state.messages.setdefault(key, []).append(created_at)
        return state

    def check(
        self, rule: CompiledRule, profile_id: str, channels: Collection[str], now: datetime
    ) -> str | None:
        """``None`` if the rule's actions may run for the profile now, else why not.

        ``frequency_cap``: one of the rule's caps is reached (its firings that ran within
        the cap's period). ``channel_cap``: a capped channel in ``channels`` (the channels
        of the messages it would send, a channel once per message) has no room for them.
        """
        ran = self.firings.get((rule.id, profile_id), ())
        for cap in rule.guards.frequency:
            if _count(ran, now - cap.per) >= cap.max:
                return FREQUENCY_CAP
        for channel, needed in Counter(channels).items():
            channel_cap = self.channel_caps.get(channel)
            if channel_cap is None:
                continue
            sent = _count(self.messages.get((channel, profile_id), ()), now - channel_cap.per)
            if sent + needed > channel_cap.max:
                return CHANNEL_CAP
        return None

    def note(
        self, rule: CompiledRule, profile_id: str, channels: Collection[str], now: datetime
    ) -> None:
        """Record that the rule's actions ran for the profile now (and sent on ``channels``)."""
        self.firings.setdefault((rule.id, profile_id), []).append(now)
        for channel in channels:
            self.messages.setdefault((channel, profile_id), []).append(now)
