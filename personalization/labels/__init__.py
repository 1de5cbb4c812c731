"""Durable tags, segments and rule-set traits of unified profiles.

What rules (``add_tag``, ``remove_tag``, ``enter_segment``, ``exit_segment``,
``set_trait``) and operators decide about a person, kept apart from the event-derived
``profiles.traits`` (which an unmerge rebuilds from the event log) in the append-only
``profile_labels`` table::

    apply_label_changes(session, ws, [LabelChange(...), ...], now=now) -> [outcome, ...]
    labels_of(session, ws, survivors) -> {survivor: Labels}
    labels_of_profile(session, ws, profile_id) -> Labels

Each real change is also written to the profile change feed (``profile.tag_added`` …,
:data:`FEED_TYPES`). GDPR export and erasure: :mod:`personalization.labels.privacy`.
"""

from personalization.labels.models import LABELS, ProfileLabel
from personalization.labels.names import (
    ACTION_CHANGES,
    KINDS,
    OPS,
    LabelChange,
    change_for_action,
    check_change,
    check_name,
    check_value,
)
from personalization.labels.store import (
    CHANGE_TYPES,
    FEED_TYPES,
    SEGMENT_ENTERED,
    SEGMENT_EXITED,
    TAG_ADDED,
    TAG_REMOVED,
    TRAIT_SET,
    TRAIT_UNSET,
    Labels,
    UnknownProfile,
    apply_label_changes,
    labels_of,
    labels_of_profile,
    survivor_of,
    survivors_of,
)

__all__ = [
    "ACTION_CHANGES",
    "CHANGE_TYPES",
    "FEED_TYPES",
    "KINDS",
    "LABELS",
    "OPS",
    "SEGMENT_ENTERED",
    "SEGMENT_EXITED",
    "TAG_ADDED",
    "TAG_REMOVED",
    "TRAIT_SET",
    "TRAIT_UNSET",
    "LabelChange",
    "Labels",
    "ProfileLabel",
    "UnknownProfile",
    "apply_label_changes",
    "change_for_action",
    "check_change",
    "check_name",
    "check_value",
    "labels_of",
    "labels_of_profile",
    "survivor_of",
    "survivors_of",
]
