"""More ``ecrm`` commands: ``demo`` and ``bench`` (kept apart from process start-up)."""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    """Attach these commands to the ``ecrm`` group."""
