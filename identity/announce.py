"""What a batch of events tells the profile change feed: created, merged, updated.

Why not one change per event: subscribers (downstream webhooks) keep what a profile *is*:
its traits, its identifiers, whom it was merged with. An event that only moves activity
counters (``event_count``, ``last_seen_at``) changes none of that, and announcing it would
write a feed row per event and a delivery per event and endpoint. So a batch announces:

* ``profile.created`` for each profile it creates that is still live at the end of the
  batch (one born and merged within the batch was never seen by anyone);
* ``profile.merged`` (on the survivor) for each existing profile merged away, with the
  audit's rule and evidence: subscribers drop the merged id;
* ``profile.updated`` for each other existing profile whose traits changed value or which
  gained identifiers; the delivered ``data`` is the whole current profile, so ``changed``
  only says why.

The rows are written last in :func:`identity.resolve.write_plan`, in the batch's
transaction: a batch retried after a conflict announces nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from identity.changes import NewChange

CREATED: Final = "profile.created"
UPDATED: Final = "profile.updated"
MERGED: Final = "profile.merged"


def changed_traits(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Names of the traits whose value differs (added, removed or changed), sorted."""
    names = before.keys() | after.keys()
    return sorted(name for name in names if before.get(name) != after.get(name))


def batch_changes(
    new_profiles: Sequence[Mapping[str, Any]],
    merge_audit: Sequence[Mapping[str, Any]],
    new_identifiers: Sequence[Mapping[str, Any]],
    traits: Mapping[str, Sequence[str]],
    find: Callable[[str], str],
) -> list[NewChange]:
    """The batch's changes, in feed order: creations, merges, then updates.

    ``traits`` maps an existing profile to its changed trait names; ``find`` gives the
    profile an id ended up in.
    """
    born = {row["id"] for row in new_profiles}
    changes: list[NewChange] = [
        (CREATED, row["id"], {}) for row in new_profiles if row["merged_into"] is None
    ]
    survivors: set[str] = set()
    for audit in merge_audit:
        if audit["merged_id"] in born:
            continue  # a profile of this batch: its events simply joined the survivor
        survivor = find(audit["survivor_id"])
        survivors.add(survivor)
        details = {
            "survivor_id": survivor,
            "merged_id": audit["merged_id"],
            "rule": audit["rule"],
            "evidence": audit["evidence"],
            "event_id": audit["event_id"],
        }
        changes.append((MERGED, survivor, details))
    gained: dict[str, set[str]] = {}
    for row in new_identifiers:
        gained.setdefault(row["profile_id"], set()).add(row["kind"])
    quiet = born | survivors  # their own change carries the whole new state
    for profile_id in sorted((gained.keys() | traits.keys()) - quiet):
        changed = [f"traits.{name}" for name in traits.get(profile_id, ())]
        changed += [f"identifiers.{kind}" for kind in sorted(gained.get(profile_id, ()))]
        if changed:
            changes.append((UPDATED, profile_id, {"changed": changed}))
    return changes


__all__ = ["CREATED", "MERGED", "UPDATED", "batch_changes", "changed_traits"]
