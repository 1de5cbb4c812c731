"""``ecrm demo``: the hub's main job on the embedded default, over a generated sample.

Why it runs the real pipeline: the sample goes through ingest into the event log, the
outbox relay, the embedded broker and a Celery worker process, exactly as live traffic
does, so what the summary shows is what the hub does. The data stays in ``ECRM_HOME`` for
``ecrm serve`` to browse.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from connectors.sample import generate_sample, write_jsonl
from identity.models import IdentityConflict, Profile, ProfileChannelCount, ProfileMerge
from identity.reviews import list_reviews
from identity.views import list_shared
from pipeline import DEFAULT_WORKSPACE, ingest, utcnow
from pipeline.events import status_counts
from pipeline.models import Event
from workers.celery_app import configure
from workers.process import load_runtime as _runtime
from workers.process import one_line_errors, spawn, stop_children
from workers.processing import relay_outbox
from workers.runtime import Runtime

CHUNK = 500


@click.command()
@click.option("--customers", default=300, show_default=True, help="People in the sample.")
@click.option("--seed", default=7, show_default=True, help="Sample seed (same seed, same data).")
@click.option("--timeout", default=300, show_default=True, help="Seconds to wait for processing.")
@one_line_errors
def demo(customers: int, seed: int, timeout: int) -> None:
    """Ingest a realistic omnichannel sample and show the unified profiles it produced."""
    console = Console()
    runtime = _runtime(migrate=True)
    settings, db = runtime.settings, runtime.db
    configure(settings)
    sample = generate_sample(
        customers=customers, seed=seed, start=utcnow() - timedelta(days=90), days=90
    )
    sample_path = settings.home / "sample" / "touchpoints.jsonl"
    sample_path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(sample, sample_path)
    console.print(
        f"[bold]ecrm demo[/]: {len(sample):,} touchpoints from {customers} customers "
        f"(web, POS, email, call centre) -> {sample_path}"
    )
    worker = spawn("worker")
    outcome: Counter[str] = Counter()
    columns = (
        TextColumn("{task.description:12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("ingesting", total=len(sample))
            for first in range(0, len(sample), CHUNK):
                chunk = sample[first : first + CHUNK]
                with db.write() as session:
                    results = ingest(
                        session,
                        chunk,
                        workspace_id=DEFAULT_WORKSPACE,
                        default_region=settings.default_region,
                    )
                outcome.update(result.status for result in results)
                relay_outbox(runtime, sweep=False)
                progress.advance(task, len(chunk))
            waiting = progress.add_task("processing", total=len(sample))
            deadline = time.monotonic() + timeout
            while True:
                with db.read() as session:
                    counts = status_counts(session)
                done = counts["processed"] + counts["failed"]
                total = done + counts["pending"]
                progress.update(waiting, completed=done, total=total)
                if not counts["pending"]:
                    break
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise click.ClickException("processing did not finish; see `ecrm events`")
                relay_outbox(runtime, sweep=False)
                time.sleep(0.2)
    finally:
        stop_children([worker])
    _summary(console, runtime, outcome, customers)


def _summary(console: Console, runtime: Runtime, outcome: Counter[str], people: int) -> None:
    db, settings = runtime.db, runtime.settings
    with db.read() as session:
        profiles = (
            session.scalar(
                select(func.count()).select_from(Profile).where(Profile.merged_into.is_(None))
            )
            or 0
        )
        events = session.scalar(select(func.count()).select_from(Event)) or 0
        failed = status_counts(session)["failed"]
        per_channel = dict(
            session.execute(
                select(ProfileChannelCount.channel, func.sum(ProfileChannelCount.count)).group_by(
                    ProfileChannelCount.channel
                )
            ).all()
        )
        multi = session.scalar(
            select(func.count()).select_from(
                select(ProfileChannelCount.profile_id)
                .group_by(ProfileChannelCount.profile_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
        merges = session.scalar(select(func.count()).select_from(ProfileMerge)) or 0
        conflicts = session.scalar(select(func.count()).select_from(IdentityConflict)) or 0
        shared = len(list_shared(session, DEFAULT_WORKSPACE))
        reviews = len(list_reviews(session, DEFAULT_WORKSPACE, limit=1000))
        top = session.execute(
            select(Profile.id, Profile.event_count, Profile.traits)
            .where(Profile.merged_into.is_(None))
            .order_by(Profile.event_count.desc())
            .limit(5)
        ).all()
    table = Table(title="This run")
    for column in ("accepted", "duplicate", "rejected"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{outcome[c]:,}" for c in ("accepted", "duplicate", "rejected")))
    console.print(table)
    channels = Table(title="Event log by channel (all runs)")
    channels.add_column("channel")
    channels.add_column("events", justify="right")
    for channel, count in sorted(per_channel.items()):
        channels.add_row(channel, f"{int(count):,}")
    channels.add_row("[bold]total[/]", f"[bold]{events:,}[/]")
    console.print(channels)
    summary = Table(title="Unified profiles")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("people in the sample (ground truth)", f"{people:,}")
    summary.add_row("profiles", f"{profiles:,}")
    summary.add_row("profiles seen on 2+ channels", f"{multi or 0:,}")
    summary.add_row("events per profile", f"{events / profiles:.1f}" if profiles else "-")
    summary.add_row("merges (ecrm identity explain PROFILE)", f"{merges:,}")
    summary.add_row("joins refused by limits (ecrm identity conflicts)", f"{conflicts:,}")
    summary.add_row("identifiers flagged as shared", f"{shared:,}")
    summary.add_row("probable matches to review", f"{reviews:,}")
    summary.add_row("failed events", f"{failed or 0:,}")
    console.print(summary)
    busiest = Table(title="Busiest profiles")
    busiest.add_column("profile")
    busiest.add_column("events", justify="right")
    busiest.add_column("name")
    for profile_id, count, traits in top:
        name = traits.get("name") or " ".join(
            str(traits[k]) for k in ("first_name", "last_name") if traits.get(k)
        )
        busiest.add_row(profile_id, str(count), name)
    console.print(busiest)
    console.print(
        f"Browse it: [bold]ecrm serve[/], then\n  curl -H 'Authorization: Bearer <token>' "
        f"http://{settings.http_host}:{settings.http_port}/v1/profiles/{top[0][0] if top else 'ID'}"
        f"\n(the admin token is in {settings.home / 'credentials'})"
    )
