"""A profile as the hub shows it everywhere: identity's view with loyalty and labels added.

Why one function: ``GET /v1/profiles/{id}`` and the ``data`` of ``profile.created`` /
``profile.updated`` webhooks must be the same document, or a consumer syncing from
webhooks and one reading the API would disagree about a customer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from identity.views import profile_view
from workers.api_labels import profile_labels
from workers.api_loyalty import profile_loyalty


def full_profile(session: Session, workspace_id: str, profile_id: str) -> dict[str, Any] | None:
    """The profile's JSON (``None``: unknown); a merged-away id shows its survivor."""
    view = profile_view(session, workspace_id, profile_id)
    return profile_labels(session, workspace_id, profile_loyalty(session, workspace_id, view))


def full_profiles(
    session: Session, workspace_id: str, profile_ids: Sequence[str]
) -> dict[str, dict[str, Any] | None]:
    """:func:`full_profile` of each id."""
    return {pid: full_profile(session, workspace_id, pid) for pid in profile_ids}


__all__ = ["full_profile", "full_profiles"]
