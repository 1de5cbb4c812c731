"""Process start-up helpers shared by the ``ecrm`` commands.

Why children are tied to the parent: ``ecrm run`` and ``ecrm demo`` start worker and API
processes (each gets a core; threads would share one under the GIL), and each child asks
the kernel for ``SIGKILL`` when its parent dies (``PR_SET_PDEATHSIG``), so killing the
parent, even with ``kill -9``, never leaves orphans that keep working on the data.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from pipeline import HubError, load_settings
from workers.runtime import Runtime, build_runtime, set_runtime

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(func: F) -> F:
    """Turn a HubError into ``ecrm: <reason>`` on stderr and exit status 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HubError as exc:
            click.echo(f"ecrm: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def load_runtime(migrate: bool = False) -> Runtime:
    """Build this process's runtime; ``migrate`` applies pending migrations first."""
    runtime = build_runtime(load_settings())
    set_runtime(runtime)
    if migrate:
        from sqlalchemy.exc import OperationalError

        from pipeline.schema import ensure_workspaces, upgrade

        try:
            upgrade(runtime.db)
            ensure_workspaces(runtime.db, set(runtime.settings.write_keys.values()))
        except OperationalError as exc:
            where = runtime.settings.masked()["ECRM_DATABASE_URL"]
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise HubError(f"cannot use the database {where}: {reason}") from None
    return runtime


def _die_with_parent() -> None:
    """Child side of ``ecrm run``: get SIGKILL when the parent dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """Start ``ecrm ARGS`` as a child tied to this process's life."""
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args], preexec_fn=_die_with_parent
    )


def supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait until Ctrl-C/SIGTERM or a child exits, then stop all children cleanly."""
    stopping = False

    def _stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                code = child.returncode or 1
                stopping = True
        time.sleep(0.2)
    stop_children(children)
    return code


def stop_children(children: list[subprocess.Popen[bytes]], grace: float = 20) -> None:
    """SIGTERM each child, wait up to ``grace`` seconds, then SIGKILL what is left."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
