"""``ecrm identity``: why a profile is what it is, and the joins the limits refused.

Read-only views of the same functions the API serves (``/v1/profiles/{id}/explain``,
``/v1/identity/conflicts``), for operators on the hub's host.
"""

from __future__ import annotations

import json

import click

from workers.process import load_runtime, one_line_errors

_workspace = click.option("--workspace", default="default", show_default=True)


@click.group()
def identity() -> None:
    """Identity resolution: explain, refused joins, shared identifiers, reviews, unmerge."""


@identity.command("explain")
@click.argument("profile_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole explanation as JSON.")
@_workspace
@one_line_errors
def explain_command(profile_id: str, as_json: bool, workspace: str) -> None:
    """Why each identifier and merge belongs to PROFILE_ID, as a tree."""
    from identity.explain import explain
    from pipeline import HubError

    runtime = load_runtime(migrate=False)
    with runtime.db.read() as session:
        view = explain(session, workspace, profile_id, config=runtime.identity)
    if view is None:
        raise HubError(f"no profile {profile_id!r} in workspace {workspace!r}")
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(view["text"])
    for event in view["events"]:
        click.echo(f"  {event['occurred_at']}  {event['type']:<20} via {event['via']}")


@identity.command("conflicts")
@click.option("--profile", "profile_id", help="Only those involving this profile.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@_workspace
@one_line_errors
def conflicts_command(profile_id: str | None, limit: int, workspace: str) -> None:
    """Joins refused because a limit would break (oldest first)."""
    from identity.views import list_conflicts

    runtime = load_runtime(migrate=False)
    with runtime.db.read() as session:
        items, _ = list_conflicts(session, workspace, profile_id=profile_id, limit=limit)
    if not items:
        click.echo("no conflicts")
    for item in items:
        profiles = " ".join(item["current_profile_ids"])
        what = item["detail"].get("identifier") or " + ".join(item["detail"].get("identifiers", []))
        click.echo(f"{item['id']}  {item['reason']:<18} {item['kind']:<12} {what}  [{profiles}]")


@identity.command("shared")
@click.option("--flag", "flag", metavar="KIND:VALUE", help="Mark as shared: resolution ignores it.")
@click.option("--allow", "allow", metavar="KIND:VALUE", help="One person's: never flagged again.")
@_workspace
@one_line_errors
def shared_command(flag: str | None, allow: str | None, workspace: str) -> None:
    """List identifiers flagged as shared by several people, or decide about one."""
    from identity.views import list_shared, set_sharing
    from pipeline import HubError

    runtime = load_runtime(migrate=False)
    if flag and allow:
        raise HubError("give --flag or --allow, not both")
    decided = flag or allow
    if decided:
        kind, value = _key(decided, runtime.settings.default_region)
        value = runtime.identity.canonical(kind, value)
        with runtime.db.write() as session:
            if not set_sharing(session, workspace, kind, value, shared=bool(flag)):
                raise HubError(f"no profile holds {kind}:{value}")
        click.echo(f"{kind}:{value}  {'shared' if flag else 'allowed'}")
        return
    with runtime.db.read() as session:
        items = list_shared(session, workspace)
    if not items:
        click.echo("no shared identifiers")
    for item in items:
        people = f"{item['people']} people"
        click.echo(f"{item['identifier']}  {item['status']:<8} {people}  owner {item['owner']}")


@identity.command("reviews")
@click.option("--accept", "accept", type=int, metavar="ID", help="Accept: the two become one.")
@click.option("--reject", "reject", type=int, metavar="ID", help="Reject: they stay apart.")
@click.option(
    "--status",
    default="pending",
    show_default=True,
    type=click.Choice(["pending", "accepted", "rejected"]),
)
@_workspace
@one_line_errors
def reviews_command(accept: int | None, reject: int | None, status: str, workspace: str) -> None:
    """Probable matches waiting for a person (between the two thresholds), or decide one."""
    from identity.reviews import decide, list_reviews
    from pipeline import HubError, ingest

    runtime = load_runtime(migrate=False)
    if accept is not None and reject is not None:
        raise HubError("give --accept or --reject, not both")
    chosen = accept if accept is not None else reject
    if chosen is not None:
        with runtime.db.write() as session:
            view, link = decide(
                session,
                workspace,
                chosen,
                accept=accept is not None,
                by="cli",
                config=runtime.identity,
            )
            if link is not None:
                ingest(
                    session,
                    [link],
                    workspace_id=workspace,
                    default_region=runtime.settings.default_region,
                )
        click.echo(f"{view['id']}  {view['status']}" + (f"  {link['message_id']}" if link else ""))
        return
    with runtime.db.read() as session:
        items = list_reviews(session, workspace, status=status)
    if not items:
        click.echo(f"no {status} reviews")
    for item in items:
        a, b = item["current_profile_ids"]
        click.echo(f"{item['id']}  p={item['probability']:.3f}  {a}  {b}")


@identity.command("unmerge")
@click.argument("profile_id")
@click.option("--identifier", metavar="KIND:VALUE", help="Split this identifier off.")
@click.option("--source", help="Split off what only this source's events carry.")
@click.option("--reason", help="Why (kept with the audit record).")
@_workspace
@one_line_errors
def unmerge_command(
    profile_id: str, identifier: str | None, source: str | None, reason: str | None, workspace: str
) -> None:
    """Split PROFILE_ID: recompute it from the event log with that link forbidden."""
    from pipeline import HubError
    from workers.unmerge_flow import unmerge_profile

    runtime = load_runtime(migrate=False)
    if (identifier is None) == (source is None):
        raise HubError("give --identifier KIND:VALUE or --source, one of them")
    key = _key(identifier, runtime.settings.default_region) if identifier else None
    with runtime.db.write() as session:
        result = unmerge_profile(
            runtime,
            session,
            workspace,
            profile_id,
            identifier=key,
            source=source,
            reason=reason,
            requested_by="cli",
        )
    click.echo(f"split {result['split_id']}: {result['events']} events recomputed")
    for part in result["profiles"]:
        held = ", ".join(part["identifiers"]) or "-"
        click.echo(f"  {part['id']}  {part['events']} events  {held}")
    for move in result["loyalty"]["moved"]:
        click.echo(f"  {move['points']} points of event {move['event_id']} -> {move['to']}")


def _key(text: str, default_region: str) -> tuple[str, str]:
    """``KIND:VALUE`` normalized as ingest does (raises a one-line :class:`HubError`)."""
    from pipeline import HubError
    from pipeline.identifiers import normalize_identifier

    kind, sep, value = text.partition(":")
    if not sep or not kind or not value:
        raise HubError(f"{text!r}: use KIND:VALUE")
    try:
        return kind, normalize_identifier(kind, value, default_region)
    except ValueError as exc:
        raise HubError(f"{text!r}: {exc}") from None


from workers.simulate_cli import simulate_command  # noqa: E402

identity.add_command(simulate_command)

from workers.estimate_cli import estimate_command  # noqa: E402

identity.add_command(estimate_command)
