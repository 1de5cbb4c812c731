"""What an import run leaves for the next one: the checkpoint and the reject file.

Why apart from the importer: both are small files with their own crash rules. The
checkpoint is replaced atomically and only ever written after the database commit it
describes, so it may lag but never lead; the reject file is cut back to the size the
checkpoint recorded, so a resumed run lists each refused row once.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from pipeline import HubError


@dataclass
class Checkpoint:
    """The last line of a file that is committed (or rejected), kept across runs."""

    path: Path
    line: int = 0
    rejects_size: int = 0
    complete: bool = False

    @classmethod
    def load(cls, state_dir: Path, source: Path, scope: str, *, kind: str) -> Checkpoint:
        """The checkpoint of this file (path, size, mtime) read with this ``scope``.

        ``kind`` names the importer (``pos``, ``calls``): it prefixes the file name, so
        two importers can never read each other's checkpoint.
        """
        stat = source.stat()
        identity = f"{source.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{scope}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        path = state_dir / f"{kind}-{digest}.json"
        try:
            data = orjson.loads(path.read_bytes())
            return cls(path, int(data["line"]), int(data["rejects_size"]), bool(data["complete"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls(path)  # none yet, or torn by a crash: start over (dedupe keeps it safe)

    def save(self, line: int, rejects_size: int, *, complete: bool = False) -> None:
        self.line, self.rejects_size, self.complete = line, rejects_size, complete
        state = {"line": line, "rejects_size": rejects_size, "complete": complete}
        temporary = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(orjson.dumps(state))
            os.replace(temporary, self.path)  # atomic: a crash leaves the old one or this one
        except OSError as exc:
            raise HubError(f"cannot write the checkpoint {self.path}: {exc.strerror}") from None


class RejectFile:
    """``line,field,reason`` for every refused record (the values are never copied)."""

    def __init__(self, path: Path, *, keep_bytes: int) -> None:
        self.path = path
        self._handle: IO[str] | None = None
        self._writer: Any = None
        if keep_bytes > 0 and path.exists():
            with path.open("r+b") as handle:
                handle.truncate(keep_bytes)
        elif path.exists():
            path.unlink()

    def write(self, line: int, field_name: str, reason: str) -> None:
        try:
            if self._writer is None:
                fresh = not self.path.exists() or self.path.stat().st_size == 0
                self._handle = self.path.open("a", encoding="utf-8", newline="")
                self._writer = csv.writer(self._handle)
                if fresh:
                    self._writer.writerow(["line", "field", "reason"])
            self._writer.writerow([line, field_name, reason])
        except OSError as exc:
            raise HubError(
                f"cannot write the reject file {self.path}: {exc.strerror or exc} (see --rejects)"
            ) from None

    def size(self) -> int:
        if self._handle is not None:
            self._handle.flush()
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = self._writer = None


__all__ = ["Checkpoint", "RejectFile"]
