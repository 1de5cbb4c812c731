"""Integer parameters (ids, paging cursors) bounded as the database can hold them.

Why: SQLite and PostgreSQL keep ids in 64-bit integers; a larger number in a query
(``?after=99999999999999999999``) made the driver raise, a 500 (found by Schemathesis).
Declared with these bounds, FastAPI refuses it first (400 problem+json naming the
parameter) and the OpenAPI document states the range.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

BIGINT_MAX = 2**63 - 1

#: a paging cursor: the id after (or before) which a page starts
Cursor = Annotated[int, Query(ge=0, le=BIGINT_MAX)]
OptionalCursor = Annotated[int | None, Query(ge=0, le=BIGINT_MAX)]
#: a row id in the path
RowId = Annotated[int, Path(ge=0, le=BIGINT_MAX)]

__all__ = ["BIGINT_MAX", "Cursor", "OptionalCursor", "RowId"]
