"""Items added by text while serving, shared by every replica: append-only JSON lines at
``<root>/items.jsonl`` on a local or shared filesystem, one writer at a time under a file lock.
Every reader applies the records appended since its last read, so all replicas, and a restarted
one, agree on the catalog."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from interest_model import io


class ItemStore:
    def __init__(self, root: str | os.PathLike):
        local = io.local_path(root)
        if local is None:
            raise ValueError(f"item store {root}: needs a local or shared filesystem path, not an object store URI")
        self.path = Path(local) / "items.jsonl"
        self.offset = 0

    def append(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        with open(self.path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def pending(self) -> bool:
        """Whether records were appended since the last ``read_new``."""
        try:
            return self.path.stat().st_size > self.offset
        except FileNotFoundError:
            return False

    def read_new(self) -> list[dict]:
        """Records appended since the last call (whole lines only)."""
        if not self.pending():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]
