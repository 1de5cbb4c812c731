"""``ecrm mailboxes``: configure, check and watch the IMAP mailboxes of inbound email.

Why ``add`` tests by default: a mailbox that cannot log in would otherwise only show up
as an error on its cursor later; checking first (DNS, TCP, TLS, login, folders, IDLE)
tells the operator at once, step by step, what is wrong.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from connectors.email import (
    DEFAULT_PORTS,
    SECURITY_MODES,
    MailboxSettings,
    PollOptions,
    Step,
    add_mailbox,
    check_mailbox,
    get_mailbox,
    list_failures,
    list_mailboxes,
    mailbox_cursors,
    mailbox_view,
    poll_mailbox,
    remove_mailbox,
)
from pipeline import HubError
from workers.process import load_runtime, one_line_errors

_workspace = click.option("--workspace", default="default", show_default=True)


@click.group("mailboxes")
def mailboxes() -> None:
    """Inbound email: IMAP mailboxes whose messages become email.received events."""


def _print_step(step: Step) -> None:
    click.echo(f"  ok  {step.name:8} {step.detail}")


def _check(settings: MailboxSettings) -> None:
    click.echo(f"checking {settings.name} ({settings.host}:{settings.port}, {settings.security})")
    password = settings.password()  # its error names the mailbox already
    try:
        check_mailbox(settings, password, on_step=_print_step)
    except HubError as exc:
        raise HubError(f"mailbox {settings.name}: {exc}") from None


@mailboxes.command("add")
@click.argument("name")
@click.option("--host", required=True, help="IMAP server, e.g. imap.gmail.com")
@click.option("--port", type=click.IntRange(1, 65535), help="Default: 993 for tls, else 143.")
@click.option("--security", type=click.Choice(SECURITY_MODES), default="tls", show_default=True)
@click.option("--user", "username", required=True, help="The login name (often the address).")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the password.")
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the password (e.g. a Docker/systemd secret).",
)
@click.option(
    "--folder",
    "folders",
    multiple=True,
    default=("INBOX",),
    show_default=True,
    help="A folder to watch (repeat for several).",
)
@_workspace
@click.option("--test/--no-test", default=True, show_default=True, help="Check it first.")
@one_line_errors
def add(
    name: str,
    host: str,
    port: int | None,
    security: str,
    username: str,
    password_env: str | None,
    password_file: Path | None,
    folders: tuple[str, ...],
    workspace: str,
    test: bool,
) -> None:
    """Add a mailbox; ecrm scheduler / ecrm run start polling it within seconds."""
    settings = MailboxSettings(
        name=name,
        host=host,
        port=port or DEFAULT_PORTS[security],
        security=security,
        username=username,
        password_env=password_env,
        password_file=str(password_file.absolute()) if password_file else None,
        folders=folders,
    )
    settings.validate()
    if security == "none" and host not in ("127.0.0.1", "::1", "localhost"):
        click.echo(f"warning: --security none sends the password to {host} in plain text", err=True)
    if test:
        _check(settings)
    runtime = load_runtime(migrate=True)
    with runtime.db.write() as session:
        add_mailbox(session, workspace, settings)
    click.echo(
        f"mailbox {name} added (folders: {', '.join(folders)}; password from "
        f"{settings.password_source}); ecrm run / ecrm scheduler polls it from now on"
    )


@mailboxes.command("test")
@click.argument("name")
@_workspace
@one_line_errors
def test_command(name: str, workspace: str) -> None:
    """Check a stored mailbox step by step: DNS, TCP, TLS, login, folders, IDLE."""
    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        mailbox = get_mailbox(session, workspace, name)
    if mailbox is None:
        raise HubError(f"no mailbox {name!r} in workspace {workspace!r}")
    _check(mailbox.settings)
    click.echo(f"mailbox {name} works")


@mailboxes.command("list")
@_workspace
@click.option("--json", "as_json", is_flag=True, help="One JSON object per mailbox and line.")
@one_line_errors
def list_command(workspace: str, as_json: bool) -> None:
    """The mailboxes, each folder's cursor (UIDVALIDITY, last UID, last poll, last error)."""
    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        views = [
            mailbox_view(mailbox, mailbox_cursors(session, mailbox))
            for mailbox in list_mailboxes(session, workspace)
        ]
    for view in views:
        if as_json:
            click.echo(json.dumps(view))
            continue
        state = "enabled" if view["enabled"] else "disabled"
        click.echo(
            f"{view['name']}  {view['host']}:{view['port']} {view['security']}  "
            f"user {view['user']}  password from {view['password_source']}  {state}"
        )
        for cursor in view["cursors"]:
            click.echo("  " + _cursor_line(cursor))
    if not as_json and not views:
        click.echo("no mailboxes (add one with: ecrm mailboxes add NAME --host … --user …)")


def _cursor_line(cursor: dict[str, Any]) -> str:
    line = (
        f"{cursor['folder']}: uidvalidity {cursor['uidvalidity'] or '-'}, "
        f"last uid {cursor['last_uid']}, {cursor['ingested']} ingested, "
        f"{cursor['failed']} refused, last poll {cursor['last_polled_at'] or 'never'}"
    )
    if cursor["last_error"]:
        line += f"\n    last error ({cursor['last_error_at']}): {cursor['last_error']}"
    return line


@mailboxes.command("remove")
@click.argument("name")
@_workspace
@one_line_errors
def remove(name: str, workspace: str) -> None:
    """Remove a mailbox with its cursors and failure records (its events stay)."""
    runtime = load_runtime(migrate=True)
    with runtime.db.write() as session:
        if not remove_mailbox(session, workspace, name):
            raise HubError(f"no mailbox {name!r} in workspace {workspace!r}")
    click.echo(f"mailbox {name} removed")


@mailboxes.command("failures")
@click.argument("name", required=False)
@_workspace
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (with headers).")
@one_line_errors
def failures(name: str | None, workspace: str, limit: int, as_json: bool) -> None:
    """Messages the poller refused (too big, unusable), newest first, with the reason."""
    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        rows = list_failures(session, workspace, mailbox=name, limit=limit)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row.as_dict()))
        else:
            mid = f" <{row.message_id}>" if row.message_id else ""
            click.echo(
                f"{row.failed_at.isoformat()}  {row.mailbox}/{row.folder} uid {row.uid}{mid}: "
                f"{row.reason}"
            )
    if not as_json:
        click.echo(f"{len(rows)} refused message(s)")


@mailboxes.command("poll")
@click.argument("name", required=False)
@_workspace
@click.option("--once", is_flag=True, help="Poll every folder now, then exit (cron, tests).")
@one_line_errors
def poll(name: str | None, workspace: str, once: bool) -> None:
    """Poll now (--once), or watch in the foreground until Ctrl-C (like the scheduler)."""
    from workers.mail_poller import MailPoller, new_owner

    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        chosen = [m for m in list_mailboxes(session, workspace) if name in (None, m.name)]
    if name is not None and not chosen:
        raise HubError(f"no mailbox {name!r} in workspace {workspace!r}")
    if not once:
        _watch_foreground(MailPoller(runtime, only=name, workspace=workspace))
        return
    options = PollOptions.from_settings(runtime.settings)
    failed = 0
    for mailbox in chosen:
        if not mailbox.settings.enabled:
            continue
        for result in poll_mailbox(
            runtime.db,
            mailbox,
            options,
            owner=new_owner(),
            lease_patience=options.lease_seconds + 1,
        ):
            where = f"{result.mailbox}/{result.folder}"
            if result.error:
                failed += 1
                click.echo(f"{where}: error: {result.error}")
                continue
            resync = " (UIDVALIDITY changed: folder re-read)" if result.uidvalidity_changed else ""
            click.echo(
                f"{where}: {result.accepted} new, {result.duplicates} duplicate(s), "
                f"{result.failed} refused{resync}"
            )
    if failed:
        raise HubError(f"{failed} folder(s) could not be polled (see above)")


def _watch_foreground(poller: Any) -> None:
    done = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    poller.start()
    click.echo("watching mailboxes; Ctrl-C to stop", err=True)
    while not done.wait(1):
        pass
    poller.stop()
    sys.exit(0)


__all__ = ["mailboxes"]
