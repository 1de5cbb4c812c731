"""``ecrm profiles``: GDPR erasure and export of a person, on the hub's host.

The same functions as ``DELETE /v1/profiles/{id}`` and ``GET /v1/profiles/{id}/export``
(:mod:`workers.api_privacy`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import IO

import click

from workers.process import load_runtime, one_line_errors

_workspace = click.option("--workspace", default="default", show_default=True)


@click.group()
def profiles() -> None:
    """Profiles: GDPR erasure and export."""


@profiles.command("erase")
@click.argument("profile_id")
@click.option("--reason", help="Why (kept in the erasure's audit, scrubbed of the person).")
@click.option("--yes", is_flag=True, help="Erase without asking (it cannot be undone).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_workspace
@one_line_errors
def erase_command(
    profile_id: str, reason: str | None, yes: bool, as_json: bool, workspace: str
) -> None:
    """Erase the personal data of PROFILE_ID (a merged-away id erases its survivor)."""
    from identity.erasure import ProfileNotFound
    from identity.export import find_person
    from pipeline import HubError
    from workers.api_privacy import erase

    if reason is not None and len(reason) > 500:
        raise HubError("--reason: at most 500 characters")
    runtime = load_runtime(migrate=True)
    with runtime.db.read() as session:
        person = find_person(session, workspace, profile_id)
    if person is None:
        raise HubError(f"no profile {profile_id!r} in workspace {workspace!r}")
    if not yes:
        if not sys.stdin.isatty():
            raise HubError("erasure cannot be undone: add --yes to confirm")
        rows = len(person.profile_ids)
        click.confirm(
            f"erase {person.profile_id} ({rows} profile row(s)) in {workspace!r}? "
            "Its personal data cannot be recovered",
            abort=True,
        )
    try:
        view = erase(runtime, workspace, profile_id, requested_by="cli", reason=reason)
    except ProfileNotFound:
        raise HubError(f"no profile {profile_id!r} in workspace {workspace!r}") from None
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    state = "already erased; nothing more" if view["erasure_id"] is None else "erased"
    click.echo(f"{view['profile_id']}  {state}  (erasure {view['first_erasure_id']})")
    counts = "  ".join(f"{name} {count}" for name, count in view["counts"].items() if count)
    click.echo(f"  {counts or 'nothing left to erase'}")


@profiles.command("export")
@click.argument("profile_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the JSON to this file (default: standard output).",
)
@_workspace
@one_line_errors
def export_command(profile_id: str, output: str | None, workspace: str) -> None:
    """Everything held about PROFILE_ID's person, as one JSON document."""
    from pipeline import HubError
    from workers.api_privacy import export_stream

    runtime = load_runtime(migrate=True)
    chunks = export_stream(runtime, workspace, profile_id)
    if chunks is None:
        raise HubError(f"no profile {profile_id!r} in workspace {workspace!r}")
    if output is None:
        _write(chunks, sys.stdout.buffer)
        return
    try:
        with open(output, "wb") as out:
            _write(chunks, out)
    except OSError as exc:
        raise HubError(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"exported {profile_id} to {output}", err=True)


def _write(chunks: Iterable[bytes], out: IO[bytes]) -> None:
    for chunk in chunks:
        out.write(chunk)
    out.write(b"\n")
    out.flush()


__all__ = ["profiles"]
