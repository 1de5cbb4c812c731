"""The ``ecrm`` command line: start-up of every process, plus operator commands.

Why ``ecrm run`` supervises children instead of threads: the API and the worker each get a
core (the GIL would put them on one), and each child is tied to the parent with
``PR_SET_PDEATHSIG`` so that killing ``ecrm run`` (even with ``kill -9``) kills them too.
Any error the hub raises on purpose is printed as one line and exits with status 2.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from datetime import datetime
from typing import Any

import click

from workers.file_import import file_import_arguments
from workers.lazy_group import LazyGroup
from workers.process import load_runtime as _runtime
from workers.process import one_line_errors, spawn, supervise


@click.group(
    cls=LazyGroup,
    lazy={
        "bench": "workers.commands:bench",
        "demo": "workers.demo:demo",
        "actions": "workers.actions_cli:actions",
        "mailboxes": "workers.mailboxes_cli:mailboxes",
        "identity": "workers.identity_cli:identity",
        "profiles": "workers.privacy_cli:profiles",  # GDPR erasure and export
        "rules": "workers.rules_cli:rules",
        "loyalty": "workers.loyalty_cli:loyalty",
        "webhooks": "workers.webhooks_cli:webhooks",  # downstream webhook endpoints
        "keys": "workers.keys_cli:keys",  # write keys kept in the database
    },
)
def main() -> None:
    """ecrm-hub: omnichannel touchpoint integration hub."""


@main.command()
@one_line_errors
def config() -> None:
    """Print the effective settings (secrets masked)."""
    settings = _runtime().settings
    for name, value in settings.masked().items():
        click.echo(f"{name:32} {value}")
    click.echo(f"{'credentials file':32} {settings.home / 'credentials'}")


@main.command()
@one_line_errors
def init() -> None:
    """Create or upgrade the database schema (idempotent)."""
    runtime = _runtime(migrate=True)
    click.echo(f"database ready: {runtime.db.engine.url.render_as_string(hide_password=True)}")


@main.command()
@one_line_errors
def serve() -> None:
    """Run the HTTP API (uvicorn); applies pending migrations first."""
    import uvicorn

    from workers.api import create_app

    runtime = _runtime(migrate=True)
    settings = runtime.settings
    app = create_app(runtime)
    calm_garbage_collector()
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def calm_garbage_collector() -> None:
    """Freeze the API's heap after start-up and collect the young generation less often.

    Why: after importing FastAPI, SQLAlchemy and pydantic the process holds about 190,000
    objects the collector would walk on every full collection, and parsing one 100-event
    batch allocates about 2,000 more, so collections kept firing inside ``orjson.loads``:
    under wrk it cost 480 µs of CPU per batch instead of 70 µs (measured in ``ecrm
    serve``). Frozen objects are never walked; a gen-0 threshold of 20,000 objects lets
    a request's short-lived objects die before anyone looks at them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


@main.command()
@click.option(
    "--beat",
    is_flag=True,
    help="Also run the scheduler (Celery beat forks it; not tied to ecrm run's lifetime).",
)
@click.option(
    "--webhooks",
    is_flag=True,
    help="Send webhook deliveries instead (a thread pool of ECRM_WEBHOOK_WORKERS threads).",
)
@one_line_errors
def worker(beat: bool, webhooks: bool) -> None:
    """Run a Celery worker: every queue but webhooks, or (--webhooks) only webhooks."""
    from workers.celery_app import QUEUES, WEBHOOK_QUEUE, configure

    runtime = _runtime(migrate=True)
    settings = runtime.settings
    app = configure(settings)
    queues = (WEBHOOK_QUEUE,) if webhooks else QUEUES
    argv = ["worker", "-Q", ",".join(queues), "--loglevel", settings.log_level]
    # Celery names a worker celery@host unless told: a second worker on the same host
    # would take the same name and RabbitMQ refuses its control queue (RESOURCE_LOCKED).
    # The process id keeps every worker on a machine apart.
    kind = "webhooks" if webhooks else "worker"
    argv += ["--hostname", f"{kind}-{os.getpid()}@%h"]
    if webhooks:  # waiting on receivers: threads, so a hanging one holds one thread only
        argv += ["--pool", "threads", "--concurrency", str(settings.webhook_workers)]
    elif settings.worker_concurrency == 1:
        argv += ["--pool", "solo"]
    else:
        argv += ["--pool", "prefork", "--concurrency", str(settings.worker_concurrency)]
    if beat:
        argv += ["--beat", "--schedule", str(settings.home / "beat-schedule")]
    app.worker_main(argv)


@main.command()
@one_line_errors
def scheduler() -> None:
    """Run the periodic jobs (outbox relay and sweep) with Celery beat, and the mail poller."""
    from workers.celery_app import configure
    from workers.mail_poller import MailPoller

    runtime = _runtime(migrate=True)
    mail = MailPoller(runtime)  # one thread per watched folder, beside beat
    mail.start()
    app = configure(runtime.settings)
    try:
        app.start(
            [
                "beat",
                "--loglevel",
                runtime.settings.log_level,
                "--schedule",
                str(runtime.settings.home / "beat-schedule"),
            ]
        )
    finally:
        mail.stop()


@main.command()
@one_line_errors
def run() -> None:
    """API + worker + scheduler in one command (the embedded default)."""
    runtime = _runtime(migrate=True)
    settings = runtime.settings
    click.echo(
        f"ecrm-hub on http://{settings.http_host}:{settings.http_port} "
        f"(data in {settings.home}; write key and admin token in {settings.home / 'credentials'})"
    )
    runtime.db.dispose()
    from pipeline.broker import prepare
    from workers.celery_app import ALL_QUEUES

    prepare(settings.broker_url, ALL_QUEUES)
    children = [spawn("serve"), spawn("worker"), spawn("worker", "--webhooks"), spawn("scheduler")]
    sys.exit(supervise(children))


@main.group()
def events() -> None:
    """Inspect and replay the event log."""


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"needs a time zone (e.g. {value}+00:00)")
    return parsed


@events.command("failed")
@click.option("--workspace", default="default", show_default=True)
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@one_line_errors
def events_failed(workspace: str, limit: int, as_json: bool) -> None:
    """List events that failed processing, with their errors."""
    from pipeline.events import event_view, list_events

    runtime = _runtime(migrate=True)
    with runtime.db.read() as session:
        views = [
            event_view(record)
            for record in list_events(session, workspace, status="failed", limit=limit)
        ]
    for view in views:
        if as_json:
            click.echo(json.dumps(view, default=str))
        else:
            click.echo(f"{view['received_at']}  {view['message_id']}  {view['error']}")
    if not as_json:
        click.echo(f"{len(views)} failed event(s)")


@events.command("replay")
@click.argument("message_ids", nargs=-1)
@click.option("--workspace", default="default", show_default=True)
@click.option("--since", help="Only events received at or after this ISO time.")
@click.option("--until", help="Only events received before this ISO time.")
@click.option("--all-failed", is_flag=True, help="Every failed event (with --since/--until).")
@one_line_errors
def events_replay(
    message_ids: tuple[str, ...],
    workspace: str,
    since: str | None,
    until: str | None,
    all_failed: bool,
) -> None:
    """Send failed events back for processing (already processed ones are skipped)."""
    from pipeline.events import replay

    if not (message_ids or since or until or all_failed):
        raise click.UsageError("name message ids, a --since/--until range, or --all-failed")
    runtime = _runtime(migrate=True)
    with runtime.db.write() as session:
        result = replay(
            session,
            workspace,
            message_ids=list(message_ids) or None,
            since=_parse_time(since),
            until=_parse_time(until),
            status=None if message_ids else "failed",
        )
    click.echo(
        f"requeued {result.requeued}; skipped {result.skipped_processed} already processed, "
        f"{result.skipped_pending} still pending"
    )


@main.group("import")
def import_group() -> None:
    """Load exports of other systems (POS transactions, call-detail records)."""


@import_group.command("pos")
@file_import_arguments(
    "generic, square",
    click.option(
        "--format",
        "file_format",
        type=click.Choice(["csv", "jsonl"]),
        help="Default: from the extension (.csv; .jsonl/.ndjson).",
    ),
)
@one_line_errors
def import_pos(**arguments: Any) -> None:
    """Import a POS export (CSV or JSON Lines): resumable, idempotent, with a reject file."""
    from workers.pos_import import run_pos_import

    sys.exit(run_pos_import(**arguments))


@import_group.command("calls")
@file_import_arguments(
    "asterisk, generic",
    click.option(
        "--timezone",
        help="IANA zone of times written without an offset (the PBX's). Default: the mapping's.",
    ),
)
@one_line_errors
def import_calls(**arguments: Any) -> None:
    """Import call-detail records (CSV): resumable, idempotent, with a reject file."""
    from workers.calls_import import run_calls_import

    sys.exit(run_calls_import(**arguments))


if __name__ == "__main__":
    main()
