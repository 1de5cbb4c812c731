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
    """Identity resolution: explain a profile, list refused joins."""


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
