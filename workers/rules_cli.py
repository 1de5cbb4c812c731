"""``ecrm rules``: check, store and list marketing rules (YAML files kept in git).

``validate`` reads only the file (no database): every problem is printed as
``FILE:LINE: field: message``, then the exit status is 2. ``apply`` makes the file the
workspace's whole rule set, atomically (see :mod:`personalization.rules.store`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from workers.process import load_runtime, one_line_errors

if TYPE_CHECKING:
    from personalization.rules import RuleSet

_workspace = click.option("--workspace", default="default", show_default=True)


@click.group()
def rules() -> None:
    """Marketing rules: validate a rule file, apply it, list the stored rules."""


def _load(path: str) -> RuleSet:
    """The checked rule set of ``path``; on errors, print them all and exit 2."""
    from personalization.rules import RuleSetInvalid, load_file

    try:
        return load_file(path)
    except RuleSetInvalid as exc:
        for line in exc.lines():
            click.echo(line, err=True)
        click.echo(f"ecrm: {path}: {len(exc.issues)} problem(s); nothing applied", err=True)
        sys.exit(2)


@rules.command("validate")
@click.argument("path", metavar="FILE")
@one_line_errors
def validate_command(path: str) -> None:
    """Check FILE against the rules schema and vocabulary (no database needed)."""
    rule_set = _load(path)
    enabled = sum(rule.enabled for rule in rule_set.rules)
    click.echo(f"{path}: {len(rule_set.rules)} rules valid ({enabled} enabled)")
    for rule in rule_set.rules:
        state = "" if rule.enabled else "  (disabled)"
        click.echo(f"  {rule.id:<32} on {', '.join(rule.types)}{state}")


@rules.command("apply")
@click.argument("path", metavar="FILE")
@_workspace
@one_line_errors
def apply_command(path: str, workspace: str) -> None:
    """Make FILE the workspace's rule set: all or nothing, a new version per change.

    Rules no longer in FILE are disabled (kept, with their history), not deleted.
    """
    from personalization.rules import apply_rule_set

    rule_set = _load(path)
    runtime = load_runtime(migrate=True)
    with runtime.db.write() as session:
        result = apply_rule_set(session, workspace, rule_set, source=path)
    click.echo(f"{path}: {result.summary()}")
    for change, items in (
        ("created", result.created),
        ("updated", result.updated),
        ("disabled", result.disabled),
    ):
        for rule_id, version in sorted(items.items()):
            click.echo(f"  {rule_id:<32} v{version:<4} {change}")


@rules.command("test")
@click.argument("path", metavar="FILE")
@click.option("--since", default="30d", show_default=True, help="a period (30d, 12h) or a date")
@click.option("--until", default=None, help="an ISO date or time (default: now)")
@click.option("--sample", default=5, show_default=True, type=click.IntRange(0, 100))
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
@_workspace
@one_line_errors
def test_command(
    path: str, since: str, until: str | None, sample: int, as_json: bool, workspace: str
) -> None:
    """Replay the event log against FILE's rules without side effects: what would happen.

    Counts firings, profiles, messages (queued or suppressed) and points per rule, with a
    sample of rendered messages. Nothing is written: FILE need not be applied.
    """
    import orjson

    from personalization.loyalty import LoyaltyConfig
    from personalization.rules.rehearse import rehearse
    from workers.rules_period import period_start

    rule_set = _load(path)
    try:
        start, end = period_start(since, "--since"), period_start(until, "--until")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    runtime = load_runtime(migrate=True)
    settings = runtime.settings
    enabled = [rule for rule in rule_set.rules if rule.enabled]
    with runtime.db.read() as session:
        report = rehearse(
            session,
            workspace,
            enabled,
            since=start,
            until=end,
            sample=sample,
            loyalty_config=LoyaltyConfig.load(settings.loyalty_config),
            default_region=settings.default_region,
            channel_caps=dict(settings.channel_caps),
        )
    view = report.view()
    if as_json:
        click.echo(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(
        f"{path}: {len(enabled)} rules over {report.events:,} events since "
        f"{start.isoformat(timespec='seconds')}; nothing written"
    )
    for rule in view["rules"]:
        messages = ", ".join(f"{n} {status}" for status, n in rule["messages"].items())
        held = ", ".join(f"{n} {why}" for why, n in rule["held"].items())
        click.echo(
            f"  {rule['rule_id']:<32} fired {rule['fired']:>6,} for {rule['profiles']:,} profiles"
            + (f"; messages: {messages}" if messages else "")
            + (f"; points +{rule['points_awarded']:,}" if rule["points_awarded"] else "")
            + (f" -{rule['points_deducted']:,}" if rule["points_deducted"] else "")
            + (f"; held: {held}" if held else "")
        )
        for message in rule["sample_messages"]:
            subject = f" {message['subject']!r}" if message.get("subject") else ""
            click.echo(f"      {message['kind']} to {message['to']}{subject}")


@rules.command("list")
@_workspace
@one_line_errors
def list_command(workspace: str) -> None:
    """The stored rules, highest priority first (disabled ones marked)."""
    from personalization.rules import list_rules

    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        items = list_rules(session, workspace)
    if not items:
        click.echo("no rules")
    for item in items:
        trigger = ", ".join(item["definition"]["trigger"]["types"])
        state = "enabled " if item["enabled"] else "disabled"
        click.echo(
            f"{item['id']:<32} v{item['version']:<4} {state} p{item['priority']:<5} "
            f"{trigger:<28} {item['name']}"
        )
