"""What a batch's rules may read, fetched once per batch: profiles, consent, history, firings.

Why per batch: the batch's events share profiles, and their history windows overlap. Read
per event, a 500-event batch cost thousands of statements; read per batch it costs a few
per kind of fact, whatever the number of rules (the trigger index decides which facts are
needed at all). Each event's :class:`~personalization.rules.evaluate.Context` is then built
in memory.

What a context shows: traits and identifiers as they stand after the batch's identity
writes; history aggregates as of the event's ``occurred_at``; points and tier as left by
the actions of the events before it in the batch (:class:`BatchLoyalty`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from identity.models import Profile, ProfileEvent, ProfileIdentifier
from personalization.consent import ADDRESS_KIND, Consent
from personalization.rules.evaluate import Context
from personalization.rules.history_batch import HistoryRequest, history_for_events
from personalization.rules.index import Candidates
from personalization.rules.models import RuleFiring
from pipeline.db import in_list
from pipeline.models import Event
from pipeline.processing import StoredEvent

_CHUNK = 400


class BatchLoyalty(Protocol):
    """Points and tier per profile as the batch's actions leave them."""

    def view(self, profile_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Prior:
    """A firing row already written for a (rule, event): a retried batch, or a near miss."""

    id: int
    matched: bool


@dataclass
class BatchReads:
    """The facts of one batch (see the module doc); :meth:`context` builds one event's view."""

    session: Session
    workspace_id: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    identifiers: dict[str, dict[str, str]] = field(default_factory=dict)
    #: (channel, normalized address) -> consent status
    consent: dict[tuple[str, str], str] = field(default_factory=dict)
    history: dict[int, dict[Any, Any]] = field(default_factory=dict)
    #: (rule id, event id) -> the firing row written before
    prior: dict[tuple[str, int], Prior] = field(default_factory=dict)
    #: the profiles whose rows, identifiers and consent were read
    read_profiles: set[str] = field(default_factory=set)

    @classmethod
    def read(
        cls,
        session: Session,
        workspace_id: str,
        pending: Sequence[tuple[StoredEvent, Candidates]],
        profiles: Mapping[int, str],
        *,
        prior: Collection[int] | None = None,
    ) -> BatchReads:
        """``prior``: the events whose firings already written are read (``None``: all)."""
        reads = cls(session, workspace_id)
        # only where a candidate rule reads the profile (points rules on page views do not)
        reads._read_profiles(sorted({profiles[e.id] for e, c in pending if c.profile}))
        may_have = [e.id for e, _ in pending if prior is None or e.id in prior]
        if may_have:
            reads._read_prior(may_have)
        requests = []
        for event, candidates in pending:
            profile_id = profiles.get(event.id)
            if profile_id is not None and candidates.aggregates:
                requests.append(
                    HistoryRequest(event.id, profile_id, event.occurred_at, candidates.aggregates)
                )
        if requests:
            reads.history = history_for_events(session, workspace_id, requests)
        return reads

    def _read_profiles(self, chosen: list[str]) -> None:
        """Rows, identifiers, then the consent of their addresses."""
        session, ws = self.session, self.workspace_id
        self.read_profiles.update(chosen)
        for start in range(0, len(chosen), _CHUNK):
            part = chosen[start : start + _CHUNK]
            for row in session.execute(
                select(
                    Profile.id,
                    Profile.traits,
                    Profile.event_count,
                    Profile.first_seen_at,
                    Profile.last_seen_at,
                ).where(Profile.workspace_id == ws, in_list(session, Profile.id, part))
            ):
                self.rows[row.id] = {
                    "traits": row.traits or {},
                    "event_count": row.event_count,
                    "first_seen_at": row.first_seen_at,
                    "last_seen_at": row.last_seen_at,
                }
            for pid, kind, value in session.execute(
                select(
                    ProfileIdentifier.profile_id, ProfileIdentifier.kind, ProfileIdentifier.value
                )
                .where(
                    ProfileIdentifier.workspace_id == ws,
                    in_list(session, ProfileIdentifier.profile_id, part),
                )
                .order_by(ProfileIdentifier.last_seen_at)
            ):
                self.identifiers.setdefault(pid, {})[kind] = value  # the most recent one wins
        self._read_consent(chosen)

    def _read_consent(self, chosen: list[str]) -> None:
        wanted = {
            (channel, found[kind])
            for profile_id in chosen
            if (found := self.identifiers.get(profile_id))
            for channel, kind in ADDRESS_KIND.items()
            if kind in found
        }
        addresses = sorted({address for _, address in wanted})
        for start in range(0, len(addresses), _CHUNK):
            for channel, address, status in self.session.execute(
                select(Consent.channel, Consent.address, Consent.status).where(
                    Consent.workspace_id == self.workspace_id,
                    in_list(self.session, Consent.address, addresses[start : start + _CHUNK]),
                )
            ):
                if (channel, address) in wanted:
                    self.consent[(channel, address)] = status

    def _read_prior(self, event_ids: list[int]) -> None:
        for start in range(0, len(event_ids), _CHUNK):
            for firing_id, rule_id, event_id, matched in self.session.execute(
                select(
                    RuleFiring.id, RuleFiring.rule_id, RuleFiring.event_id, RuleFiring.matched
                ).where(
                    RuleFiring.workspace_id == self.workspace_id,
                    in_list(self.session, RuleFiring.event_id, event_ids[start : start + _CHUNK]),
                )
            ):
                self.prior[(rule_id, event_id)] = Prior(firing_id, bool(matched))

    def ensure_history(self, event: StoredEvent, profile_id: str, candidates: Candidates) -> None:
        """Compute the aggregates an event (a derived one) needs that were not read."""
        known = self.history.setdefault(event.id, {})
        missing = candidates.aggregates - known.keys()
        if missing:
            request = HistoryRequest(event.id, profile_id, event.occurred_at, frozenset(missing))
            known.update(history_for_events(self.session, self.workspace_id, [request])[event.id])

    def consent_of(self, profile_id: str) -> dict[str, str]:
        """Channel -> status for the profile's current addresses (no decision: absent)."""
        found = self.identifiers.get(profile_id, {})
        return {
            channel: status
            for channel, kind in ADDRESS_KIND.items()
            if kind in found and (status := self.consent.get((channel, found[kind]))) is not None
        }

    def context(
        self,
        event: StoredEvent,
        profile_id: str,
        candidates: Candidates,
        loyalty: BatchLoyalty,
        extra: Mapping[str, Any] | None = None,
    ) -> Context:
        """One event's context; ``extra`` adds profile keys (tags, segments, rule traits).

        A profile not read with the batch (no candidate of its events needed it, but a
        derived event's does) is read now.
        """
        if candidates.profile and profile_id not in self.read_profiles:
            self._read_profiles([profile_id])
        profile: dict[str, Any] = {"id": profile_id, **self.rows.get(profile_id, {})}
        profile["identifiers"] = dict(self.identifiers.get(profile_id, {}))
        profile["consent"] = self.consent_of(profile_id)
        if extra:  # labels: rule-set traits win over those the events carried
            profile["traits"] = {**profile.get("traits", {}), **extra["rule_traits"]}
            profile["tags"], profile["segments"] = extra["tags"], extra["segments"]
        if "channels" in candidates.profile_reads:
            profile["channels"] = self._channels(profile_id, event.occurred_at)
        return Context(
            event=event_view(event),
            profile=profile,
            loyalty=dict(loyalty.view(profile_id)),
            history=self.history.get(event.id, {}),
        )

    def _channels(self, profile_id: str, as_of: datetime) -> dict[str, int]:
        """Events per channel up to ``as_of`` (one query per event: only rules reading it)."""
        return dict(
            self.session.execute(
                select(Event.channel, func.count())
                .select_from(ProfileEvent)
                .join(Event, Event.id == ProfileEvent.event_id)
                .where(
                    ProfileEvent.workspace_id == self.workspace_id,
                    ProfileEvent.profile_id == profile_id,
                    ProfileEvent.occurred_at <= as_of,
                )
                .group_by(Event.channel)
            ).all()
        )


def event_view(event: StoredEvent) -> dict[str, Any]:
    """The event as conditions and templates see it."""
    return {
        "id": event.id,
        "message_id": event.message_id,
        "type": event.type,
        "channel": event.channel,
        "source": event.source,
        "occurred_at": event.occurred_at,
        "properties": event.properties,
        "traits": event.traits,
        "identifiers": event.identifiers,
    }


__all__ = ["BatchLoyalty", "BatchReads", "Prior", "event_view"]
