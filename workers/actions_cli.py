"""``ecrm actions``: send an email or SMS by hand, list actions, retry failed ones.

Why the CLI queues instead of sending: the same outbox, consent check, retries and
delivery record as every other action; it only publishes the delivery task at once, and a
running worker (``ecrm run``/``ecrm worker``) sends it.
"""

from __future__ import annotations

import json
from typing import Any

import click

from workers.process import load_runtime, one_line_errors


@click.group()
def actions() -> None:
    """Outbound messages (the action outbox): send, list, retry."""


def _queue(workspace: str, body: dict[str, Any]) -> None:
    from personalization import action_view, enqueue, parse_request
    from pipeline import HubError
    from workers.api_actions import missing_settings
    from workers.celery_app import configure
    from workers.delivery import wake

    runtime = load_runtime(migrate=True)
    settings = runtime.settings
    missing = missing_settings(settings, body["kind"])
    if missing:
        raise HubError(f"{body['kind']} needs {', '.join(missing)}")
    with runtime.db.write() as session:
        new = parse_request(
            session, workspace, body, default_region=settings.default_region, origin="cli"
        )
        queued = enqueue(
            session, workspace, new, publish_lease_seconds=settings.batch_lease_seconds
        )
        view = action_view(queued.action)
    if queued.created:
        configure(settings)
        wake(queued.action.id)
    state = "queued" if queued.created else f"already known ({view['status']})"
    click.echo(f"{view['id']}  {view['kind']}  {state}")


_workspace = click.option("--workspace", default="default", show_default=True)
_key = click.option("--idempotency-key", help="Sending twice with the same key sends once.")


@actions.command("send-email")
@click.option("--to", help="Recipient address (default for a reply: the original sender).")
@click.option("--subject", help="Subject (default for a reply: Re: <original subject>).")
@click.option("--text", required=True, help="Plain-text body.")
@click.option("--html", help="Optional HTML alternative.")
@click.option(
    "--reply-to-event",
    "reply_to",
    metavar="MESSAGE_ID",
    help="Answer this email event (e.g. email:abc@example.com) with threading headers.",
)
@_key
@_workspace
@one_line_errors
def send_email(
    to: str | None,
    subject: str | None,
    text: str,
    html: str | None,
    reply_to: str | None,
    idempotency_key: str | None,
    workspace: str,
) -> None:
    """Queue an email (email.send, or email.reply with --reply-to-event)."""
    body = {
        "kind": "email.reply" if reply_to else "email.send",
        "to": to,
        "subject": subject,
        "text": text,
        "html": html,
        "in_reply_to": reply_to,
        "idempotency_key": idempotency_key,
    }
    _queue(workspace, {k: v for k, v in body.items() if v is not None})


@actions.command("send-sms")
@click.option("--to", required=True, help="Phone number (E.164, or national in the region).")
@click.option("--text", required=True, help="Message body (at most 1600 characters).")
@_key
@_workspace
@one_line_errors
def send_sms(to: str, text: str, idempotency_key: str | None, workspace: str) -> None:
    """Queue an SMS (sms.send) through Twilio."""
    body = {"kind": "sms.send", "to": to, "text": text, "idempotency_key": idempotency_key}
    _queue(workspace, {k: v for k, v in body.items() if v is not None})


@actions.command("list")
@click.option("--status", type=click.Choice(["queued", "sending", "sent", "failed", "suppressed"]))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_workspace
@one_line_errors
def list_command(status: str | None, limit: int, as_json: bool, workspace: str) -> None:
    """List actions, oldest first (with their last error)."""
    from personalization import action_view, list_actions

    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        views = [
            action_view(a) for a in list_actions(session, workspace, status=status, limit=limit)
        ]
    for view in views:
        if as_json:
            click.echo(json.dumps(view))
            continue
        error = f"  {view['last_error']}" if view["last_error"] else ""
        click.echo(
            f"{view['created_at'][:19]}  {view['id']}  {view['kind']:11} {view['status']:10} "
            f"attempts={view['attempts']}{error}"
        )
    if not as_json:
        click.echo(f"{len(views)} action(s)")


@actions.command("retry")
@click.argument("action_id")
@_workspace
@one_line_errors
def retry_command(action_id: str, workspace: str) -> None:
    """Send a failed action again (failed -> queued, with a fresh budget of attempts)."""
    from personalization import retry
    from workers.celery_app import configure
    from workers.delivery import wake

    runtime = load_runtime(migrate=True)
    with runtime.db.write() as session:
        retry(session, workspace, action_id)
    configure(runtime.settings)
    wake(action_id)
    click.echo(f"{action_id}  queued again")
