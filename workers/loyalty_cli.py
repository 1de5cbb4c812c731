"""``ecrm loyalty``: a profile's points and tier, awards, reward redemptions, expiry.

The same domain functions the API serves (``/v1/profiles/{id}/loyalty``); errors (an
unknown profile or reward, too few points) print one line and exit with status 2.
"""

from __future__ import annotations

import json

import click

from workers.process import load_runtime, one_line_errors

_workspace = click.option("--workspace", default="default", show_default=True)
_key = click.option("--key", help="Idempotency key: the same key never writes twice.")


@click.group()
def loyalty() -> None:
    """Loyalty points: balance, award, redeem, expire."""


@loyalty.command("balance")
@click.argument("profile_id")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(0, 500))
@click.option("--json", "as_json", is_flag=True, help="Print the whole summary as JSON.")
@_workspace
@one_line_errors
def balance_command(profile_id: str, limit: int, as_json: bool, workspace: str) -> None:
    """PROFILE_ID's points, tier, rewards and latest ledger entries."""
    from personalization.loyalty import LoyaltyConfig, summary

    runtime = load_runtime(migrate=False)
    config = LoyaltyConfig.load(runtime.settings.loyalty_config)
    with runtime.db.read() as session:
        view = summary(session, workspace, profile_id, config=config, limit=max(limit, 1))
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(f"{view['profile_id']}  {view['balance']} points  tier {view['tier'] or '-'}")
    if view["next_expiry"]:
        expiry = view["next_expiry"]
        click.echo(f"  next expiry: {expiry['points']} points on {expiry['at']}")
    for entry in view["entries"][:limit]:
        click.echo(
            f"  {entry['created_at']}  {entry['kind']:<6} {entry['points']:>+8}  "
            f"{entry['reason']}  ({entry['source']})"
        )


@loyalty.command("award")
@click.argument("profile_id")
@click.argument("points", type=int)
@click.option("--reason", required=True, help="Why (kept on the ledger entry).")
@_key
@_workspace
@one_line_errors
def award_command(
    profile_id: str, points: int, reason: str, key: str | None, workspace: str
) -> None:
    """Award POINTS to PROFILE_ID (they expire by the programme's policy)."""
    from personalization.loyalty import LoyaltyConfig, award

    runtime = load_runtime(migrate=False)
    config = LoyaltyConfig.load(runtime.settings.loyalty_config)
    with runtime.db.write() as session:
        posted = award(
            session,
            workspace,
            profile_id,
            points,
            reason=reason,
            source="cli",
            key=key,
            config=config,
        )
    _report(posted.created, posted.entry["points"], posted.balance, posted.tier)


@loyalty.command("redeem")
@click.argument("profile_id")
@click.argument("reward")
@_key
@_workspace
@one_line_errors
def redeem_command(profile_id: str, reward: str, key: str | None, workspace: str) -> None:
    """Redeem REWARD (its id in the catalogue) for PROFILE_ID."""
    from personalization.loyalty import LoyaltyConfig, redeem_reward

    runtime = load_runtime(migrate=False)
    config = LoyaltyConfig.load(runtime.settings.loyalty_config)
    with runtime.db.write() as session:
        posted = redeem_reward(
            session, workspace, profile_id, reward, source="cli", key=key, config=config
        )
    _report(posted.created, posted.entry["points"], posted.balance, posted.tier)


@loyalty.command("expire")
@one_line_errors
def expire_command() -> None:
    """Expire every workspace's points whose date has come (what the scheduler does hourly)."""
    from workers.loyalty_tasks import expire_everywhere

    run = expire_everywhere(load_runtime(migrate=False))
    click.echo(f"expired {run.points} points in {run.entries} entries ({run.profiles} profiles)")


def _report(created: bool, points: int, balance: int, tier: str | None) -> None:
    done = "" if created else " (already done: same key)"
    click.echo(f"{points:+} points{done}; balance {balance}, tier {tier or '-'}")
