"""Identity: unified customer profiles and the identifiers that point at them."""

from identity.models import Profile, ProfileIdentifier, ProfileTypeCount
from identity.privacy_models import Erasure, ErasureTombstone  # erasure tables
from identity.resolve import (
    PRIORITY,
    Plan,
    apply_events,
    new_profile_id,
    plan_events,
    write_plan,
)
from identity.traits import merge_traits

__all__ = [
    "PRIORITY",
    "Erasure",
    "ErasureTombstone",
    "Plan",
    "Profile",
    "ProfileIdentifier",
    "ProfileTypeCount",
    "apply_events",
    "merge_traits",
    "new_profile_id",
    "plan_events",
    "write_plan",
]
