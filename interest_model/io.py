"""Paths and URIs: every input and output location may be a local path or any URI pyarrow's
filesystems understand (s3://, gs://, hdfs://, file://)."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import posixpath
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


def read_first_line(fs: pafs.FileSystem, path: str, limit: int = 1 << 20) -> bytes | None:
    with fs.open_input_stream(path) as f:
        head = f.read(limit)
    if not head:
        return None
    return head.split(b"\n", 1)[0]


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
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


def is_remote(uri: str | Path) -> bool:
    """A URI (s3://, gs://, file://, ...) rather than a plain path."""
    return _is_uri(str(uri))


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
