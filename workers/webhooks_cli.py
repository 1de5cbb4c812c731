"""``ecrm webhooks``: register, list, remove downstream webhook endpoints, rotate secrets.

``add`` and ``rotate`` print the signing secret once: the hub never shows it again (store
it in the receiver's configuration now). Bad input (a private or plain-http URL, an
unknown event type) prints one line naming the field and exits 2; nothing is written.
"""

from __future__ import annotations

from datetime import timedelta

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


def _grace_seconds(text: str, name: str = "--grace") -> int:
    """``--grace 24h`` (``30m``, ``7d``, ``0``) in seconds."""
    from pipeline.caps import parse_period

    if text.strip() == "0":
        return 0
    try:
        return int(parse_period(text.strip()).total_seconds())
    except ValueError as exc:
        raise ValidationError(name, str(exc)) from None


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


@webhooks.command("enable")
@click.argument("endpoint_id", metavar="ID")
@_workspace
@one_line_errors
def enable_command(endpoint_id: str, workspace: str) -> None:
    """Switch endpoint ID on again (after the hub disabled it, say); its open deliveries go."""
    _switch(endpoint_id, workspace, True)


@webhooks.command("disable")
@click.argument("endpoint_id", metavar="ID")
@_workspace
@one_line_errors
def disable_command(endpoint_id: str, workspace: str) -> None:
    """Switch endpoint ID off: nothing is sent or queued for it until it is enabled."""
    _switch(endpoint_id, workspace, False)


def _switch(endpoint_id: str, workspace: str, enabled: bool) -> None:
    from connectors.webhooks.endpoints import update_endpoint

    runtime = load_runtime(migrate=True)
    with runtime.db.write() as session:
        update_endpoint(
            session,
            workspace,
            endpoint_id,
            enabled=enabled,
            allow_private=runtime.settings.webhook_allow_private,
            now=utcnow(),
        )
    click.echo(f"{endpoint_id} {'enabled' if enabled else 'disabled'}")


@webhooks.command("deliveries")
@click.option("--endpoint", "endpoint_id", default=None, help="Only this endpoint's.")
@click.option("--status", default=None, help="pending, retrying, delivered or failed.")
@click.option("--profile", "profile_id", default=None, help="Only this profile's.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_workspace
@one_line_errors
def deliveries_command(
    endpoint_id: str | None,
    status: str | None,
    profile_id: str | None,
    limit: int,
    as_json: bool,
    workspace: str,
) -> None:
    """The delivery log, newest first: status, attempts, last answer."""
    import json

    from connectors.webhooks.deliveries import list_deliveries

    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        views, _ = list_deliveries(
            session,
            workspace,
            endpoint_id=endpoint_id,
            status=status,
            profile_id=profile_id,
            limit=limit,
        )
    if not views and not as_json:
        click.echo("no webhook deliveries")
    for view in views:
        if as_json:
            click.echo(json.dumps(view))
            continue
        last = view["last_status"] or view["last_error"] or "-"
        click.echo(
            f"{view['id']}  {view['status']:<9} {view['type']:<24} {view['profile_id']}  "
            f"attempts {view['attempts']}  last {last}"
        )


@webhooks.command("show")
@click.argument("delivery_id", metavar="DELIVERY_ID")
@_workspace
@one_line_errors
def show_command(delivery_id: str, workspace: str) -> None:
    """One delivery as JSON: its payload and every attempt."""
    import json

    from connectors.webhooks.deliveries import get_delivery

    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        view = get_delivery(session, workspace, delivery_id)
    click.echo(json.dumps(view, indent=2))


@webhooks.command("retry")
@click.argument("delivery_id", metavar="DELIVERY_ID")
@_workspace
@one_line_errors
def retry_command(delivery_id: str, workspace: str) -> None:
    """Send DELIVERY_ID (msg_...) again now, with the same webhook-id."""
    from connectors.webhooks.deliveries import retry_delivery

    runtime = load_runtime(migrate=True)
    with runtime.db.write() as session:
        view = retry_delivery(session, workspace, delivery_id, now=utcnow())
    click.echo(f"{view['id']} queued again (attempts so far: {view['attempts']})")


@webhooks.command("replay")
@click.argument("endpoint_id", metavar="ID")
@click.option("--since", required=True, help="A period (2h, 7d) or an ISO time.")
@_workspace
@one_line_errors
def replay_command(endpoint_id: str, since: str, workspace: str) -> None:
    """Queue again for endpoint ID every profile change since --since it subscribes to."""
    from workers.rules_period import period_start
    from workers.webhooks_dispatch import replay

    try:
        start = period_start(since, "--since")
    except ValueError as exc:
        raise ValidationError("--since", str(exc)) from None
    runtime = load_runtime(migrate=True)
    queued = replay(runtime, workspace, endpoint_id, start)
    click.echo(f"{queued} deliveries queued for {endpoint_id} (changes since {start.isoformat()})")


@webhooks.command("prune")
@click.option(
    "--older-than",
    default=None,
    help="A period (30d, 12h); default: ECRM_WEBHOOK_RETENTION_DAYS.",
)
@one_line_errors
def prune_command(older_than: str | None) -> None:
    """Remove finished deliveries (with attempts) and the passed change feed older than that.

    The scheduler does this every hour; open deliveries are never removed.
    """
    from workers.webhooks_dispatch import prune

    keep = None
    if older_than is not None:
        keep = timedelta(seconds=_grace_seconds(older_than, "--older-than"))
    pruned = prune(load_runtime(migrate=True), keep)
    click.echo(
        f"removed {pruned.deliveries} deliveries, {pruned.attempts} attempts, "
        f"{pruned.changes} profile changes"
    )


__all__ = ["webhooks"]
