"""Identity: unified customer profiles and the identifiers that point at them."""

from identity.models import Profile, ProfileChannelCount, ProfileIdentifier
from identity.resolve import (
    PRIORITY,
    Plan,
    apply_events,
    merge_traits,
    new_profile_id,
    plan_events,
    write_plan,
)

__all__ = [
    "PRIORITY",
    "Plan",
    "Profile",
    "ProfileChannelCount",
    "ProfileIdentifier",
    "apply_events",
    "merge_traits",
    "new_profile_id",
    "plan_events",
    "write_plan",
]
