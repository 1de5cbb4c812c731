"""``ecrm demo``: the hub's main job on the embedded default, over a generated sample.

Why it runs the real pipeline: the sample goes through ingest into the event log, the
outbox relay, the embedded broker and a Celery worker process, exactly as live traffic
does, so what the summary shows is what the hub does. The data stays in ``ECRM_HOME`` for
``ecrm serve`` to browse.

Why it applies a rule set first: rules are what turns unified profiles into messages and
points, so the demo stores the bundled sample rules (or ``--rules FILE``) before ingesting
and the worker fires them as it processes the batches; the summary then reports, per rule,
what the firings recorded. Applying is idempotent (unchanged rules get no new version), so
re-running the demo on the same ``ECRM_HOME`` changes nothing. The demo delivers nothing:
the messages the rules queue stay in the outbox.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.sample import generate_sample, write_jsonl
from identity.models import IdentityConflict, Profile, ProfileMerge, ProfileTypeCount
from identity.reviews import list_reviews
from identity.views import list_shared
from personalization import rules as rules_package
from personalization.actions import QUEUED, Action, mark_suppressed
from personalization.loyalty.models import LoyaltyAccount
from personalization.rules import RuleSet, RuleSetInvalid, apply_rule_set, load_file
from personalization.rules.guards import MESSAGE_CHANNELS
from personalization.rules.models import Rule, RuleFiring
from pipeline import DEFAULT_WORKSPACE, HubError, ingest, utcnow
from pipeline.events import status_counts
from pipeline.models import Event
from workers.celery_app import configure
from workers.process import load_runtime as _runtime
from workers.process import one_line_errors, spawn, stop_children
from workers.processing import relay_outbox
from workers.runtime import Runtime

CHUNK = 500
#: the rule set the demo applies unless ``--rules`` says otherwise (shipped as package data)
SAMPLE_RULES = Path(rules_package.__file__).with_name("samples") / "demo.yaml"
#: how the sample rules are shown, and recorded as their versions' source
SAMPLE_RULES_NAME = "personalization/rules/samples/demo.yaml"
#: ``--rules none``: apply no rule file
NO_RULES = "none"


@click.command()
@click.option("--customers", default=300, show_default=True, help="People in the sample.")
@click.option("--seed", default=7, show_default=True, help="Sample seed (same seed, same data).")
@click.option("--timeout", default=300, show_default=True, help="Seconds to wait for processing.")
@click.option(
    "--rules",
    "rules_file",
    metavar="FILE",
    default=None,
    help="Rule file made the default workspace's rule set before ingesting, as "
    "`ecrm rules apply` does (default: the bundled sample, "
    "personalization/rules/samples/demo.yaml); `none`: apply nothing (rules stored "
    "before still fire).",
)
@one_line_errors
def demo(customers: int, seed: int, timeout: int, rules_file: str | None) -> None:
    """Ingest a realistic omnichannel sample; show the profiles it made and what rules did."""
    console = Console()
    started = utcnow()
    rules = _load_rules(rules_file)  # a mistake in the file stops the demo before anything
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
    _apply_rules(console, runtime, rules)
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
    _hold_sample_messages(runtime, started)


def _hold_sample_messages(runtime: Runtime, since: datetime) -> int:
    """Suppress the messages the sample's rules queued during this run; how many.

    Why: the sample's addresses are invented but their domains are real (gmail.com ...);
    a later ``ecrm run`` with SMTP or Twilio configured must never send to them.
    """
    with runtime.db.write() as session:
        queued = session.scalars(
            select(Action).where(
                Action.workspace_id == DEFAULT_WORKSPACE,
                Action.status == QUEUED,
                Action.origin.startswith("rule:"),
                Action.created_at >= since,
            )
        ).all()
        for action in queued:
            mark_suppressed(session, action, "demo sample: never delivered")
    return len(queued)


def _load_rules(rules_file: str | None) -> tuple[str, RuleSet] | None:
    """The rule file to apply, checked, with the name to show and record as its source.

    ``None`` for ``--rules none``. A file with mistakes prints each as
    ``FILE:LINE: field: message`` and stops the demo (exit 2) before anything is written.
    """
    if rules_file is not None and rules_file.strip().lower() == NO_RULES:
        return None
    path = Path(rules_file) if rules_file is not None else SAMPLE_RULES
    try:
        rule_set = load_file(path)
    except RuleSetInvalid as exc:
        for line in exc.lines():
            click.echo(line, err=True)
        raise HubError(f"{path}: {len(exc.issues)} problem(s); nothing applied") from None
    return (SAMPLE_RULES_NAME if rules_file is None else rules_file), rule_set


def _apply_rules(console: Console, runtime: Runtime, rules: tuple[str, RuleSet] | None) -> None:
    """Make ``rules`` the default workspace's rule set, before anything is ingested.

    Before, so the worker fires the rules on this run's batches; idempotent, so a re-run
    with the same file makes no new version.
    """
    if rules is None:
        console.print("rules: none applied (--rules none); rules stored before still fire")
        return
    name, rule_set = rules
    with runtime.db.write() as session:
        result = apply_rule_set(session, DEFAULT_WORKSPACE, rule_set, source=name)
    console.print(f"rules: {name}: {result.summary()}", soft_wrap=True)  # a path: unbroken


@dataclass
class RuleTally:
    """What one rule did, summed over the firings recorded (all runs)."""

    rule_id: str
    enabled: bool = True
    #: matched with the actions run (``held`` NULL)
    fired: int = 0
    #: matched, actions held back (holdout, frequency or channel cap)
    held: int = 0
    #: message actions put in the outbox
    queued: int = 0
    #: message actions not queued because the address opted out
    suppressed: int = 0
    points: int = 0


def rule_tallies(session: Session, workspace_id: str) -> list[RuleTally]:
    """Per rule: firings, messages and points, from ``rule_firings`` (highest priority first).

    Every enabled rule has a row, also one that never fired (so a rule that should have
    fired and did not stands out); a disabled rule only when it fired before. The
    outcomes are added up in Python: fine for a demo's thousands of firings, and the
    statuses live inside the JSON of each firing.
    """
    tallies = {
        rule_id: RuleTally(rule_id, enabled=enabled)
        for rule_id, enabled in session.execute(
            select(Rule.id, Rule.enabled)
            .where(Rule.workspace_id == workspace_id)
            .order_by(Rule.priority.desc(), Rule.id)
        )
    }
    firings = select(RuleFiring.rule_id, RuleFiring.held, RuleFiring.outcomes).where(
        RuleFiring.workspace_id == workspace_id, RuleFiring.matched.is_(True)
    )
    for rule_id, held, outcomes in session.execute(firings):
        tally = tallies.setdefault(rule_id, RuleTally(rule_id, enabled=False))
        if held is not None:
            tally.held += 1
            continue
        tally.fired += 1
        for outcome in outcomes:
            status = outcome.get("status")
            if outcome.get("type") in MESSAGE_CHANNELS:
                tally.queued += status == "queued"
                tally.suppressed += status == "suppressed"
            elif status == "awarded":
                tally.points += int(outcome.get("points") or 0)
    return [t for t in tallies.values() if t.enabled or t.fired or t.held]


def _rules_summary(console: Console, runtime: Runtime) -> None:
    """The Rules table (per rule and in total) and where to look closer."""
    with runtime.db.read() as session:
        tallies = rule_tallies(session, DEFAULT_WORKSPACE)
        tiers = dict(
            session.execute(
                select(LoyaltyAccount.tier, func.count())
                .where(
                    LoyaltyAccount.workspace_id == DEFAULT_WORKSPACE,
                    LoyaltyAccount.tier.is_not(None),
                )
                .group_by(LoyaltyAccount.tier)
            ).all()
        )
    if not tallies:
        console.print("Rules: none stored (try `ecrm demo --rules FILE`)")
        return
    table = Table(
        title="Rules (all runs)",
        caption="held back: holdout or a cap; suppressed: the address opted out",
    )
    table.add_column("rule")
    for column in ("fired", "held back", "queued", "suppressed", "points"):
        table.add_column(column, justify="right")
    for t in tallies:
        name = t.rule_id if t.enabled else f"{t.rule_id} (disabled)"
        table.add_row(
            name, *(f"{n:,}" for n in (t.fired, t.held, t.queued, t.suppressed, t.points))
        )
    totals = (
        sum(t.fired for t in tallies),
        sum(t.held for t in tallies),
        sum(t.queued for t in tallies),
        sum(t.suppressed for t in tallies),
        sum(t.points for t in tallies),
    )
    table.add_row("[bold]total[/]", *(f"[bold]{n:,}[/]" for n in totals))
    console.print(table)
    reached = ", ".join(f"{tier} {count:,}" for tier, count in sorted(tiers.items()))
    console.print(
        f"Loyalty tiers held: {reached or 'none yet'} (ecrm loyalty balance PROFILE)\n"
        "Each firing's conditions and outcomes: GET /v1/rules/{id}/firings; what a rule "
        "file would do over the log, writing nothing: ecrm rules test FILE\n"
        "The demo sends nothing: its rules' messages go to made-up addresses, so they are\n"
        "kept in the outbox as suppressed (GET /v1/actions), never delivered."
    )


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
                select(ProfileTypeCount.channel, func.sum(ProfileTypeCount.count)).group_by(
                    ProfileTypeCount.channel
                )
            ).all()
        )
        multi = session.scalar(
            select(func.count()).select_from(
                select(ProfileTypeCount.profile_id)
                .group_by(ProfileTypeCount.profile_id)
                .having(func.count(func.distinct(ProfileTypeCount.channel)) > 1)
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
    _rules_summary(console, runtime)
    console.print(
        f"Browse it: [bold]ecrm serve[/], then\n  curl -H 'Authorization: Bearer <token>' "
        f"http://{settings.http_host}:{settings.http_port}/v1/profiles/{top[0][0] if top else 'ID'}"
        f"\n(the admin token is in {settings.home / 'credentials'})"
    )
