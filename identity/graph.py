"""Deterministic identity resolution of one batch, in memory: who is who, and what joins.

Given who owns each identifier before the batch (read from the database) and what each
involved profile holds, :class:`BatchGraph` walks the batch's events in log order and
decides, for each event, the profile it belongs to, the identifiers it attaches, the
profiles it merges and the joins it refuses. Nothing here touches the database, so the
rules can be read (and tested) on their own:

* An identifier that is blocked (:class:`~identity.config.IdentityConfig`) is ignored: it
  never finds, founds, joins or merges a profile. An event with nothing else belongs to no
  profile.
* No owner among the event's identifiers: a new profile holds them all.
* One owner: the event joins it; identifiers nobody owns are attached to it, unless the
  profile already holds as many of that kind as allowed (then the join is refused and
  recorded as a conflict: the identifier stays free, so it founds its own profile later).
* The event's strongest identifier is new and the owner of the others is full for its
  kind (a second customer id beside a known phone): the event is another person, who
  gets a profile of their own; the identifier they share with the owner is recorded, and
  one shared by more than ``shared_after`` people is flagged and ignored from then on,
  like a blocked value (a shop's walk-in card, a family inbox).
* Several owners: the owner of the strongest identifier leads; each other owner, in the
  order of strength of the identifier that found it, is merged in if the union breaks no
  limit, and recorded as a refused merge otherwise. The survivor of a merge is the older
  profile (profile ids are time-ordered), so a profile's id never changes under it.
* An unmerge (:mod:`identity.unmerge`) leaves two sides of identifiers that must stay
  apart: no attachment or merge puts identifiers of both sides in one profile (a
  ``kept_apart`` conflict is recorded instead), whatever the limits would allow.

Every decision keeps its evidence (event, identifiers), which becomes the merge audit and
the identifiers' provenance that ``explain`` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from identity.config import IdentityConfig
from identity.matching import CandidatePool

Key = tuple[str, str]
Held = dict[str, set[str]]
#: an unmerge's id and the side (``a`` split off, ``b`` kept) an identifier is on
Side = tuple[int, str]


def key_text(key: Key) -> str:
    """``kind:value``, as identifiers are written in the API."""
    return f"{key[0]}:{key[1]}"


@dataclass(frozen=True)
class Attachment:
    """An identifier the batch gives to a profile for the first time."""

    key: Key
    profile_id: str
    event_id: int
    #: the identifier of the same event that already belonged to the profile (None: the
    #: event founded the profile with it)
    linked_by: Key | None


@dataclass(frozen=True)
class Merge:
    """``merged_id`` goes into ``survivor_id``: an event carried keys of both, or matched."""

    survivor_id: str
    merged_id: str
    event_id: int
    #: the identifier that belonged to the merged profile, and the survivor's side
    merged_key: Key | None
    survivor_key: Key | None
    #: a probabilistic match's comparison (fields, levels, weights, probability)
    match: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Review:
    """A probable match between the two thresholds: a person decides."""

    event_id: int
    profile_id: str
    candidate_id: str
    probability: float
    evidence: Mapping[str, Any]


@dataclass(frozen=True)
class Conflict:
    """A join the limits refused."""

    #: "merge_refused", "distinct_person", "identifier_refused" or "kept_apart"
    reason: str
    kind: str
    event_id: int
    profile_ids: tuple[str, ...]
    detail: Mapping[str, object]
    #: the identifier several people turned out to share (what shared detection counts)
    shared: Key | None = None


@dataclass
class BatchGraph:
    """The identity decisions of one batch (see the module docstring)."""

    config: IdentityConfig
    #: owner of each identifier known before the batch (always a live profile)
    owner: dict[Key, str]
    #: what a profile holds, per kind, loaded on first need (``load_held``)
    load_held: Callable[[Iterable[str]], Mapping[str, Held]]
    new_profile_id: Callable[[], str]
    #: identifiers flagged as shared by several people: ignored like blocked values
    shared: set[Key] = field(default_factory=set)
    #: the unmerge sides each identifier is on (see :mod:`identity.unmerge`)
    apart: Mapping[Key, frozenset[Side]] = field(default_factory=dict)
    #: candidates for probabilistic matching (None: matching is off)
    pool: CandidatePool | None = None
    reviews: list[Review] = field(default_factory=list)
    #: the event that founded each new profile
    founders: dict[str, int] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)
    #: union-find: a merged profile points at the profile it went into
    parent: dict[str, str] = field(default_factory=dict)
    new_profiles: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    _blocked: dict[Key, bool] = field(default_factory=dict, repr=False)

    def find(self, profile_id: str) -> str:
        """The profile a profile now lives in (itself unless merged in this batch)."""
        root = profile_id
        while root in self.parent:
            root = self.parent[root]
        while profile_id != root:  # path compression
            self.parent[profile_id], profile_id = root, self.parent[profile_id]
        return root

    def usable(self, identifiers: Mapping[str, str]) -> list[Key]:
        """An event's identifiers that may identify someone, strongest first."""
        blocked = self._blocked
        keys = []
        for key in identifiers.items():
            if key in self.shared:
                continue
            is_blocked = blocked.get(key)
            if is_blocked is None:  # most values come again and again in one batch
                is_blocked = blocked[key] = self.config.is_blocked(*key)
            if not is_blocked:
                keys.append(key)
        if len(keys) > 1:
            keys.sort(key=lambda key: self.config.rank(key[0]))
        return keys

    def preload(self, events: Iterable[tuple[int, Mapping[str, str]]]) -> None:
        """Load, in one read, what the profiles that may need a limit check hold."""
        wanted: set[str] = set()
        for _, identifiers in events:
            keys = self.usable(identifiers)
            owners = {self.owner[key] for key in keys if key in self.owner}
            if len(owners) > 1 or (owners and len(owners) < len(keys)):
                wanted |= owners
        self.ensure_held(wanted)

    def ensure_held(self, profile_ids: Iterable[str]) -> None:
        """Load what these profiles hold (those not loaded yet), in one read."""
        missing = [p for p in profile_ids if p not in self.held]
        if missing:
            loaded = self.load_held(missing)
            for profile_id in missing:
                self.held[profile_id] = {k: set(v) for k, v in loaded.get(profile_id, {}).items()}

    def resolve(
        self,
        event_id: int,
        identifiers: Mapping[str, str],
        traits: Mapping[str, Any] | None = None,
        links: Iterable[Key] = (),
    ) -> str | None:
        """The profile the event belongs to (None: no usable identifier).

        ``links`` are further identifiers a link made by a person names (an accepted
        review, ``POST /v1/identity/links``): joined like the event's own, limits and all.
        """
        keys = self.usable(identifiers)
        for key in links:
            if key not in keys and key not in self.shared and not self.config.is_blocked(*key):
                keys.append(key)
        if not keys:
            return None
        founded_before = len(self.new_profiles)
        profile_id = self._resolve_keys(event_id, keys)
        if self.pool is not None and traits:
            founded = len(self.new_profiles) > founded_before
            profile_id = self._match(self.pool, event_id, profile_id, traits, founded=founded)
        return profile_id

    def _match(
        self,
        pool: CandidatePool,
        event_id: int,
        profile_id: str,
        traits: Mapping[str, Any],
        *,
        founded: bool,
    ) -> str:
        """Probabilistic matching of a record that founded a profile; files it for later."""
        values = pool.model.normalize(traits)
        if not pool.model.matchable(values):
            return profile_id
        if founded:
            best = pool.best(values, profile_id, self.find)
            if best is not None and best.probability >= pool.model.upper:
                merges = len(self.merges)
                lead = self._merge(
                    self.find(best.profile_id), profile_id, event_id, None, None, best.evidence()
                )
                if len(self.merges) > merges:  # refused by a limit: the record stays its own
                    profile_id = lead
            elif best is not None and best.probability >= pool.model.lower:
                self.reviews.append(
                    Review(event_id, profile_id, best.profile_id, best.probability, best.evidence())
                )
        pool.add(profile_id, values)
        return profile_id

    def _resolve_keys(self, event_id: int, keys: list[Key]) -> str:
        found: list[tuple[str, Key]] = []
        for key in keys:
            if key in self.owner:
                profile_id = self.find(self.owner[key])
                if all(profile_id != p for p, _ in found):
                    found.append((profile_id, key))
        if not found:
            return self._found_profile(keys, event_id)
        group, lead_key = found[0]
        if len(found) > 1 or len(found) < len(keys):
            self.ensure_held(p for p, _ in found)
        strongest = keys[0]
        if strongest not in self.owner and self._full(group, strongest[0]):
            # The event's strongest identifier is new and its profile already holds all it
            # may of that kind (a second customer id): this is someone else, who shares
            # the weaker identifiers with the people who own them (a family phone).
            profile_id = self._found_profile(
                [key for key in keys if key not in self.owner], event_id
            )
            for other, other_key in found:
                self.conflicts.append(
                    Conflict(
                        "distinct_person",
                        strongest[0],
                        event_id,
                        (profile_id, other),
                        {"identifiers": [key_text(strongest), key_text(other_key)]},
                        shared=other_key,
                    )
                )
            return profile_id
        if strongest not in self.owner and self._split_between(strongest, group) is not None:
            # an unmerge put the event's strongest identifier apart from its only owner:
            # the event goes with that identifier, as a profile of its own
            self._kept_apart(strongest, group, event_id, found[0][1])
            return self._found_profile([key for key in keys if key not in self.owner], event_id)
        for other, other_key in found[1:]:
            group = self._merge(group, other, event_id, lead_key, other_key)
        for key in keys:
            if key not in self.owner:
                self._attach_within_limit(key, group, event_id, lead_key)
        return group

    def _found_profile(self, keys: Sequence[Key], event_id: int) -> str:
        profile_id = self.new_profile_id()
        self.new_profiles.append(profile_id)
        self.founders[profile_id] = event_id
        self.held[profile_id] = {}
        for key in keys:
            if not self._kept_apart(key, profile_id, event_id, keys[0]):
                self._attach(key, profile_id, event_id, None)
        return profile_id

    def _sides(self, profile_id: str) -> set[Side]:
        """The unmerge sides what a profile holds is on."""
        sides: set[Side] = set()
        for kind, values in self.held[profile_id].items():
            for value in values:
                sides |= self.apart.get((kind, value), frozenset())
        return sides

    @staticmethod
    def _opposed(a: Iterable[Side], b: set[Side]) -> int | None:
        """The unmerge that forbids joining sides ``a`` and ``b`` (None: none does)."""
        for split_id, side in a:
            if (split_id, "b" if side == "a" else "a") in b:
                return split_id
        return None

    def _split_between(self, key: Key, group: str) -> int | None:
        """The unmerge that forbids attaching ``key`` to ``group`` (None: none does)."""
        sides = self.apart.get(key) if self.apart else None
        return self._opposed(sides, self._sides(group)) if sides else None

    def _kept_apart(self, key: Key, group: str, event_id: int, lead_key: Key) -> bool:
        """Whether an unmerge forbids attaching ``key`` to ``group`` (recorded if so)."""
        split_id = self._split_between(key, group)
        if split_id is None:
            return False
        self.conflicts.append(
            Conflict(
                "kept_apart",
                key[0],
                event_id,
                (group,),
                {"identifier": key_text(key), "linked_by": key_text(lead_key), "split": split_id},
            )
        )
        return True

    def _full(self, profile_id: str, kind: str) -> bool:
        return len(self.held[profile_id].get(kind, ())) >= self.config.limit(kind)

    def _attach(self, key: Key, profile_id: str, event_id: int, linked_by: Key | None) -> None:
        self.owner[key] = profile_id
        self.held[profile_id].setdefault(key[0], set()).add(key[1])
        self.attachments.append(Attachment(key, profile_id, event_id, linked_by))

    def _attach_within_limit(self, key: Key, group: str, event_id: int, lead_key: Key) -> None:
        if self._kept_apart(key, group, event_id, lead_key):
            return
        kind = key[0]
        holding = self.held[group].get(kind, set())
        limit = self.config.limit(kind)
        if len(holding) >= limit:
            self.conflicts.append(
                Conflict(
                    "identifier_refused",
                    kind,
                    event_id,
                    (group,),
                    {
                        "identifier": key_text(key),
                        "linked_by": key_text(lead_key),
                        "limit": limit,
                        "held": sorted(holding),
                    },
                )
            )
            return
        self._attach(key, group, event_id, lead_key)

    def _merge(
        self,
        group: str,
        other: str,
        event_id: int,
        lead_key: Key | None,
        other_key: Key | None,
        match: Mapping[str, Any] | None = None,
    ) -> str:
        """Merge ``other`` into ``group`` if the limits allow; the profile that leads now."""
        self.ensure_held((group, other))
        split_id = self._opposed(self._sides(group), self._sides(other)) if self.apart else None
        if split_id is not None:
            self.conflicts.append(
                Conflict(
                    "kept_apart",
                    other_key[0] if other_key else "match",
                    event_id,
                    (group, other),
                    {
                        "identifiers": [key_text(k) for k in (lead_key, other_key) if k],
                        "split": split_id,
                        **({"match": dict(match)} if match else {}),
                    },
                )
            )
            return group
        over = self._over_limit(self.held[group], self.held[other])
        if over:
            kind, count = over
            self.conflicts.append(
                Conflict(
                    "merge_refused",
                    kind,
                    event_id,
                    (group, other),
                    {
                        "identifiers": [key_text(k) for k in (lead_key, other_key) if k],
                        "limit": self.config.limit(kind),
                        "would_hold": count,
                        **({"match": dict(match)} if match else {}),
                    },
                    shared=other_key,
                )
            )
            return group
        # the older profile survives; one that exists already always outlives one this
        # batch made (a worker whose clock runs behind must not rename a profile)
        new = set(self.new_profiles)
        survivor, merged = sorted((group, other), key=lambda p: (p in new, p))
        survivor_key, merged_key = (
            (lead_key, other_key) if survivor == group else (other_key, lead_key)
        )
        self.parent[merged] = survivor
        for kind, values in self.held.pop(merged).items():
            self.held[survivor].setdefault(kind, set()).update(values)
        self.merges.append(Merge(survivor, merged, event_id, merged_key, survivor_key, match))
        return survivor

    def _over_limit(self, a: Held, b: Held) -> tuple[str, int] | None:
        """The first kind (by priority) whose union would hold too many, with that count."""
        for kind in sorted(a.keys() & b.keys(), key=self.config.rank):
            count = len(a[kind] | b[kind])
            if count > self.config.limit(kind):
                return kind, count
        return None


__all__ = ["Attachment", "BatchGraph", "Conflict", "Merge", "key_text"]
