"""``ecrm webhooks``: register, list, remove downstream webhook endpoints, rotate secrets.

``add`` and ``rotate`` print the signing secret once: the hub never shows it again (store
it in the receiver's configuration now). Bad input (a private or plain-http URL, an
unknown event type) prints one line naming the field and exits 2; nothing is written.
"""

from __future__ import annotations

import click

from pipeline import ValidationError, utcnow
from workers.process import load_runtime, one_line_errors

_workspace = click.option("--workspace", default="default", show_default=True)


@click.group("webhooks")
def webhooks() -> None:
    """Downstream webhooks: the endpoints profile events are sent to."""


def _events(text: str | None) -> list[str]:
    """``--events a,b`` as a list (empty: every event)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _grace_seconds(text: str) -> int:
    """``--grace 24h`` (``30m``, ``7d``, ``0``) in seconds."""
    from pipeline.caps import parse_period

    if text.strip() == "0":
        return 0
    try:
        return int(parse_period(text.strip()).total_seconds())
    except ValueError as exc:
        raise ValidationError("--grace", str(exc)) from None


@webhooks.command("add")
@click.argument("url")
@click.option("--events", default=None, help="Comma-separated event types (default: all).")
@click.option("--description", default="", help="What the endpoint is for.")
@click.option("--disabled", is_flag=True, help="Register it switched off.")
@_workspace
@one_line_errors
def add_command(
    url: str, events: str | None, description: str, disabled: bool, workspace: str
) -> None:
    """Register URL as a webhook endpoint; prints its id and signing secret (shown once)."""
    from connectors.webhooks.endpoints import create_endpoint

    runtime = load_runtime(migrate=True)
    with runtime.db.write() as session:
        view, secret = create_endpoint(
            session,
            workspace,
            url=url,
            events=_events(events),
            description=description,
            enabled=not disabled,
            allow_private=runtime.settings.webhook_allow_private,
            now=utcnow(),
        )
    click.echo(f"{view['id']}  {view['url']}  events: {', '.join(view['events']) or 'all'}")
    click.echo(f"secret: {secret}")
    click.echo("(the secret is shown only now: keep it with the receiver)")


@webhooks.command("list")
@_workspace
@one_line_errors
def list_command(workspace: str) -> None:
    """The workspace's endpoints (no secrets)."""
    from connectors.webhooks.endpoints import list_endpoints

    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        views = list_endpoints(session, workspace, now=utcnow())
    if not views:
        click.echo("no webhook endpoints")
    for view in views:
        state = "enabled" if view["enabled"] else "disabled"
        if view["disabled_reason"]:
            state += f" ({view['disabled_reason']})"
        events = ", ".join(view["events"]) or "all"
        click.echo(f"{view['id']}  {view['url']}  {state}  events: {events}")


@webhooks.command("remove")
@click.argument("endpoint_id", metavar="ID")
@_workspace
@one_line_errors
def remove_command(endpoint_id: str, workspace: str) -> None:
    """Remove endpoint ID and its secrets."""
    from connectors.webhooks.endpoints import delete_endpoint

    runtime = load_runtime(migrate=True)
    with runtime.db.write() as session:
        delete_endpoint(session, workspace, endpoint_id)
    click.echo(f"removed {endpoint_id}")


@webhooks.command("rotate")
@click.argument("endpoint_id", metavar="ID")
@click.option("--grace", default="24h", show_default=True, help="How long the old secret stays.")
@_workspace
@one_line_errors
def rotate_command(endpoint_id: str, grace: str, workspace: str) -> None:
    """A new signing secret for ID (shown once); the old one is also signed with until the
    grace period ends, so the receiver can switch over meanwhile."""
    from datetime import timedelta

    from connectors.webhooks.endpoints import rotate_secret

    seconds = _grace_seconds(grace)
    runtime = load_runtime(migrate=True)
    now = utcnow()
    with runtime.db.write() as session:
        secret = rotate_secret(session, workspace, endpoint_id, grace_seconds=seconds, now=now)
    click.echo(f"secret: {secret}")
    click.echo(f"the previous secret stays valid until {(now + timedelta(seconds=seconds))}")


__all__ = ["webhooks"]
