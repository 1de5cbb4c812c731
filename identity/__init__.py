"""Identity: unified customer profiles and the identifiers that point at them."""

from identity.models import Profile, ProfileChannelCount, ProfileIdentifier
from identity.resolve import PRIORITY, apply_events, merge_traits, new_profile_id

__all__ = [
    "PRIORITY",
    "Profile",
    "ProfileChannelCount",
    "ProfileIdentifier",
    "apply_events",
    "merge_traits",
    "new_profile_id",
]
