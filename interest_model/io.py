"""Paths and URIs: every input and output location may be a local path or any URI pyarrow's
filesystems understand (s3://, gs://, hdfs://, file://)."""

from __future__ import annotations

import bz2
import contextlib
import fnmatch
import gzip
import json
import lzma
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs


def _is_uri(path: str) -> bool:
    return "://" in path


def join(root: str, path: str) -> str:
    """``path`` if absolute or a URI, else ``root/path`` (a relative root resolves from the cwd)."""
    if _is_uri(path) or Path(path).is_absolute():
        return path
    if _is_uri(root):
        return root.rstrip("/") + "/" + path
    return str((Path(root) / path).resolve())


def filesystem(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or URI; local paths become absolute."""
    if _is_uri(uri_or_path):
        return pafs.FileSystem.from_uri(uri_or_path)
    return pafs.LocalFileSystem(), str(Path(uri_or_path).resolve())


def expand(root: str, patterns: list[str]) -> tuple[pafs.FileSystem | None, list[str]]:
    """Resolve paths and globs (``*``, ``?``, ``**``) against root; sorted, de-duplicated.
    Raises FileNotFoundError naming every pattern that matched nothing."""
    fs_: pafs.FileSystem | None = None
    found: list[str] = []
    missing: list[str] = []
    for pattern in patterns:
        fs, path = filesystem(join(root, pattern))
        fs_ = fs_ or fs
        if any(ch in path for ch in "*?["):
            base = path
            while any(ch in base for ch in "*?["):
                base = posixpath.dirname(base)
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            hits = sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path))
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
                hits = sorted(i.path for i in infos if i.type == pafs.FileType.File)
            else:
                hits = [path] if info.type == pafs.FileType.File else []
        if not hits:
            missing.append(join(root, pattern))
        found.extend(hits)
    if missing:
        raise FileNotFoundError("no input file matches: " + ", ".join(missing))
    return fs_, sorted(dict.fromkeys(found))


# Compressed text input, by file name suffix (Python's own codecs: they notice a truncated file).
COMPRESSION = {".gz": gzip, ".bz2": bz2, ".xz": lzma}


def compression(path: str):
    """The codec module of a compressed input file by its suffix (``events.csv.gz``), else None."""
    return next((codec for suffix, codec in COMPRESSION.items() if path.lower().endswith(suffix)), None)


def _unreadable(path: str, codec, exc: Exception) -> ValueError:
    return ValueError(f"{path}: not readable as {codec.__name__} data ({exc}); is the file complete?")


def decompress(data: bytes, path: str) -> bytes:
    """A file's bytes, decompressed when its name says so; unreadable or truncated data is a
    ValueError naming the file."""
    codec = compression(path)
    if codec is None:
        return data
    try:
        return codec.decompress(data)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
        raise _unreadable(path, codec, exc) from None


def read_head(fs: pafs.FileSystem, path: str, limit: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes from the start of a file, decompressed."""
    codec = compression(path)
    with fs.open_input_stream(path, compression=None) as f:  # raw bytes: we decompress
        if codec is None:
            return f.read(limit)
        try:
            with codec.open(f, "rb") as g:
                return g.read(limit)
        except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
            raise _unreadable(path, codec, exc) from None


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path, compression=None) as f:  # raw bytes: we decompress
        return f.read()


def write_json(uri: str, obj: Any) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(uri: str) -> Any:
    fs, path = filesystem(uri)
    return json.loads(read_bytes(fs, path))


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def remove(uri: str) -> None:
    """Delete a file or a directory tree if it exists."""
    fs, path = filesystem(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def split_lines(data: bytes, path: str, first_line: int, lines_per_block: int):
    """Split a file's bytes into blocks of (path, line_no, line); blank lines are not records."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    block_lines: list[bytes] = []
    block_nos: list[int] = []
    for i, line in enumerate(lines, start=1):
        if i < first_line or not line.strip():
            continue
        block_lines.append(line)
        block_nos.append(i)
        if len(block_lines) >= lines_per_block:
            yield {"path": [path] * len(block_lines), "line_no": block_nos, "line": block_lines}
            block_lines, block_nos = [], []
    if block_lines:
        yield {"path": [path] * len(block_lines), "line_no": block_nos, "line": block_lines}


STAGING = ".staging-"


def begin_staged_dir(uri: str) -> str:
    """Where a job writes an output folder that must never look complete before it is.

    Local: a fresh sibling ``<name>.staging-<id>`` (left-overs of crashed runs are removed),
    moved over ``uri`` by :func:`finish_staged_dir` in two renames. Remote object stores have no
    rename: the job writes into ``uri`` itself after deleting its ``manifest.json``, which it
    writes last, so a folder without one is incomplete."""
    if is_remote(uri):
        remove(join(uri, "manifest.json"))
        return uri
    final = Path(uri).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f"{final.name}{STAGING}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staged = tempfile.mkdtemp(prefix=f"{final.name}{STAGING}", dir=final.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staged, 0o777 & ~umask)  # as a plain mkdir would make it (mkdtemp's is private)
    return staged


def finish_staged_dir(staged: str, uri: str) -> None:
    """Swap a finished staging folder in for ``uri`` (a no-op for remote URIs)."""
    if is_remote(uri):
        return
    final = Path(uri).resolve()
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{final.name}{STAGING}old-", dir=final.parent))
        old.rmdir()
        final.rename(old)
    Path(staged).rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_remote(uri: str | Path) -> bool:
    """A URI (s3://, gs://, file://, ...) rather than a plain path."""
    return _is_uri(str(uri))


def local_path(uri: str | Path) -> str | None:
    """The absolute local path of a plain path or a file:// URI; None for other URIs."""
    text = str(uri)
    if text.startswith("file://"):
        return filesystem(text)[1]
    return None if is_remote(text) else str(Path(text).resolve())


def absolute(uri: str | Path) -> str:
    """A URI as given, a local path made absolute (Ray's storage paths, a registry root)."""
    return str(uri) if is_remote(uri) else str(Path(uri).resolve())


@contextlib.contextmanager
def local_output(uri: str | Path):
    """A local directory to write files into; for a URI (s3://, gs://, file://, ...) they are
    written to a temporary directory and uploaded to ``uri`` on exit."""
    if not is_remote(uri):
        path = Path(filesystem(str(uri))[1])
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
        upload_dir(tmp, str(uri))


def upload_dir(local: str, uri: str) -> None:
    """Copy a local directory tree to a URI (or another local path)."""
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(Path(local).resolve()), path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


@contextlib.contextmanager
def local_input(uri: str | Path):
    """A local directory holding the tree at ``uri``: the path itself when local, else a
    temporary copy (removed on exit)."""
    local = local_path(uri)
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory() as tmp:
        fs, path = filesystem(str(uri))
        pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield tmp
