"""``ecrm keys``: write keys kept in the database, one per source; create, list, revoke.

The same functions as ``/v1/write-keys``. A key is printed once, when created; a revoked
key stops working in every running API process within ``ECRM_KEY_REFRESH_SECONDS``.
Keys in ``ECRM_WRITE_KEYS`` are not listed here: they change with the environment.
"""

from __future__ import annotations

import json

import click

from workers.process import load_runtime, one_line_errors

_workspace = click.option("--workspace", default="default", show_default=True)


@click.group()
def keys() -> None:
    """Write keys for ingestion: create, list, revoke."""


@keys.command("create")
@click.argument("name")
@_workspace
@one_line_errors
def create_command(name: str, workspace: str) -> None:
    """Create a write key for the source NAME (e.g. pos-store-12); prints the key once."""
    from pipeline import utcnow
    from pipeline.write_keys import create_key

    runtime = load_runtime(migrate=False)
    with runtime.db.write() as session:
        created = create_key(session, workspace, name, utcnow())
    click.echo(f"{created.view['id']}  {created.view['name']}  {created.key}")
    click.echo("keep the key now: it is stored only as a hash and cannot be shown again", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@_workspace
@one_line_errors
def list_command(as_json: bool, workspace: str) -> None:
    """The workspace's write keys (never their secrets), revoked ones marked."""
    from pipeline.write_keys import list_keys

    runtime = load_runtime(migrate=False)
    with runtime.db.read() as session:
        views = list_keys(session, workspace)
    if as_json:
        click.echo(json.dumps(views, indent=2, default=str))
        return
    for view in views:
        state = f"revoked {view['revoked_at']:%Y-%m-%d %H:%M}" if view["revoked_at"] else "active"
        click.echo(f"{view['id']:>5}  {view['prefix']}…  {view['name']:<30} {state}")


@keys.command("revoke")
@click.argument("key_id", type=click.IntRange(0, 2**63 - 1))
@_workspace
@one_line_errors
def revoke_command(key_id: int, workspace: str) -> None:
    """Revoke the key KEY_ID: ingestion with it is refused from now on."""
    from pipeline import ValidationError, utcnow
    from pipeline.write_keys import revoke_key

    runtime = load_runtime(migrate=False)
    try:
        with runtime.db.write() as session:
            view = revoke_key(session, workspace, key_id, utcnow())
    except KeyError:
        raise ValidationError("key_id", f"no write key {key_id} in workspace {workspace}") from None
    click.echo(f"{view['id']}  {view['name']}  revoked {view['revoked_at']:%Y-%m-%d %H:%M:%S}")
