"""The review queue: probable matches between the two thresholds, decided by a person.

Why accepting appends an event instead of merging here: the event log is the truth, so an
accepted review becomes an ``identity.linked`` event that carries one identifier of each
profile; the worker merges them under the same limits as any other link, audited the
same way, and a replay of the log reproduces it. Rejecting only records the decision.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from identity.config import IdentityConfig
from identity.models import IdentityReview, ProfileIdentifier
from identity.views import current_profile
from pipeline import utcnow
from pipeline.errors import ValidationError

PENDING, ACCEPTED, REJECTED = "pending", "accepted", "rejected"
#: the event type of links made by people (API, reviews); see identity.graph
LINK_EVENT = "identity.linked"
STATUSES = (PENDING, ACCEPTED, REJECTED)


class ReviewNotFound(ValidationError):
    """No review with that id in the workspace."""


def review_view(review: IdentityReview, session: Session) -> dict[str, Any]:
    """A review as the API shows it, with both profiles as they are now."""
    profile = current_profile(session, review.workspace_id, review.profile_id)
    candidate = current_profile(session, review.workspace_id, review.candidate_id)
    return {
        "id": review.id,
        "status": review.status,
        "probability": review.probability,
        "profile_id": review.profile_id,
        "candidate_id": review.candidate_id,
        "current_profile_ids": [
            profile.id if profile else review.profile_id,
            candidate.id if candidate else review.candidate_id,
        ],
        "evidence": review.evidence,
        "created_at": review.created_at.isoformat(),
        "decided_at": review.decided_at.isoformat() if review.decided_at else None,
        "decided_by": review.decided_by,
    }


def list_reviews(
    session: Session, workspace_id: str, *, status: str = PENDING, after: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    """Reviews in a status, oldest first; ``after`` (a review id) pages on."""
    rows = session.scalars(
        select(IdentityReview)
        .where(
            IdentityReview.workspace_id == workspace_id,
            IdentityReview.status == status,
            IdentityReview.id > after,
        )
        .order_by(IdentityReview.id)
        .limit(limit)
    ).all()
    return [review_view(row, session) for row in rows]


def decide(
    session: Session,
    workspace_id: str,
    review_id: int,
    *,
    accept: bool,
    by: str,
    config: IdentityConfig,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Record a decision; for an acceptance, also the link touchpoint to append.

    Deciding again the same way changes nothing (and links nothing twice); a decided
    review cannot be turned around (raises :class:`ValidationError` on ``decision``).
    """
    review = session.scalars(
        select(IdentityReview).where(
            IdentityReview.workspace_id == workspace_id, IdentityReview.id == review_id
        )
    ).first()
    if review is None:
        raise ReviewNotFound("review_id", f"no review {review_id}")
    wanted = ACCEPTED if accept else REJECTED
    if review.status == wanted:
        return review_view(review, session), None
    if review.status != PENDING:
        raise ValidationError("decision", f"review {review_id} was already {review.status}")
    link = _link(session, review, config) if accept else None
    session.execute(
        update(IdentityReview)
        .where(IdentityReview.id == review.id, IdentityReview.status == PENDING)
        .values(status=wanted, decided_at=utcnow(), decided_by=by)
    )
    session.refresh(review)
    return review_view(review, session), link


def _link(session: Session, review: IdentityReview, config: IdentityConfig) -> dict[str, Any]:
    """The ``identity.linked`` touchpoint joining the two profiles.

    It carries the first profile's strongest identifier as its identifier and the
    second's in ``properties.link_identifiers`` (both may be of one kind, two anonymous
    ids say, which one identifier map could not hold).
    """
    keys = []
    for profile_id in (review.profile_id, review.candidate_id):
        profile = current_profile(session, review.workspace_id, profile_id)
        key = _strongest(session, profile.id if profile else profile_id, config)
        if key is None:
            raise ValidationError("review_id", f"profile {profile_id} has no usable identifier")
        keys.append(key)
    if keys[0] == keys[1]:
        raise ValidationError("review_id", "the two profiles are already one")
    now = utcnow()
    (kind, value), (other_kind, other_value) = keys
    return {
        "message_id": f"review:{review.workspace_id}:{review.id}",
        "channel": "web",
        "type": LINK_EVENT,
        "occurred_at": now,
        "received_at": now,
        "source": "identity.review",
        "identifiers": {kind: value},
        "properties": {
            "link_identifiers": [f"{other_kind}:{other_value}"],
            "review_id": review.id,
            "probability": review.probability,
        },
    }


def _strongest(session: Session, profile_id: str, config: IdentityConfig) -> tuple[str, str] | None:
    """The profile's strongest identifier that resolution would use."""
    rows = session.execute(
        select(ProfileIdentifier.kind, ProfileIdentifier.value, ProfileIdentifier.sharing).where(
            ProfileIdentifier.profile_id == profile_id
        )
    ).all()
    usable = [
        (kind, value)
        for kind, value, sharing in rows
        if sharing != "shared" and not config.is_blocked(kind, value)
    ]
    usable.sort(key=lambda key: (config.rank(key[0]), key[1]))
    return usable[0] if usable else None


__all__ = ["STATUSES", "ReviewNotFound", "decide", "list_reviews", "review_view"]
