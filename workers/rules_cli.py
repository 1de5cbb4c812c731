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
