"""Model registry: chosen models as numbered versions under ``<root>/<name>/<version>/``.

A version directory is a self-contained exported model (``load_model`` reads it as is) plus
``card.json``: its metrics, the config of the trial that produced it, the hash of the data
manifest, the code version and when it was registered. ``<root>/<name>/latest.json`` names the
newest complete version; it is written after the version's files, so readers never see a partial
version. ``root`` is a local path or a pyarrow URI (s3://, gs://, a shared filesystem).

    interest registry list [--root registry]
    interest registry show NAME[:VERSION]
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import subprocess
import tempfile
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from interest_model import io

CARD = "card.json"
LATEST = "latest.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RegistryError(ValueError):
    pass


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name``, ``name:latest`` -> (name, None); ``name:3`` -> (name, 3)."""
    name, _, version = ref.partition(":")
    check_name(name)
    if version in ("", "latest"):
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise RegistryError(f"bad version {version!r} in {ref!r}: expected a number >= 1 or 'latest'")
    return name, int(version)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise RegistryError(f"bad model name {name!r}: letters, digits, '.', '_' and '-' only")
    return name


def code_version() -> str:
    """The package version, with the git commit (and '-dirty') when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        base = version("interest-transfer")
    except PackageNotFoundError:
        base = "0+unknown"
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return base
    return f"{base}+g{commit}{'-dirty' if dirty else ''}"


def versions(root: str, name: str) -> list[int]:
    fs, path = io.filesystem(io.join(root, check_name(name)))
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    found = []
    for info in infos:
        base = info.base_name
        if info.type == pafs.FileType.Directory and base.isdigit() and io.exists(io.join(root, f"{name}/{base}/{CARD}")):
            found.append(int(base))
    return sorted(found)


def register(root: str, name: str, model_dir: str, card: dict) -> dict:
    """Copy the exported model at ``model_dir`` into the next version of ``name`` with ``card``
    (metrics, trial config, data manifest hash, ...); point ``latest`` at it. Returns the card."""
    check_name(name)
    if not io.exists(io.join(model_dir, "config.json")):
        raise RegistryError(f"no exported model at {model_dir}")
    fs, name_path = io.filesystem(io.join(root, name))
    fs.create_dir(name_path, recursive=True)
    staging = f"{name_path}/.staging-{uuid.uuid4().hex[:12]}"
    _copy(model_dir, fs, staging)
    taken = set(versions(root, name))
    for _ in range(100):
        version = max(taken | {0}) + 1
        target = f"{name_path}/{version}"
        if fs.get_file_info(target).type != pafs.FileType.NotFound:
            taken.add(version)  # taken by a concurrent registration since the listing
            continue
        full = {"name": name, "version": version, "registered_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "code_version": code_version(), "source_model_dir": str(model_dir), **card}
        with fs.open_output_stream(f"{staging}/{CARD}") as f:
            f.write(json.dumps(full, indent=2, sort_keys=True, default=str).encode())
        fs.move(staging, target)  # one rename on a filesystem: the version appears complete
        io.write_json(io.join(root, f"{name}/{LATEST}"), {"version": max(versions(root, name))})
        return full
    raise RegistryError(f"could not allocate a version of {name} in {root}")


def _copy(model_dir: str, fs: pafs.FileSystem, dest: str) -> None:
    src_fs, src = io.filesystem(model_dir)
    fs.create_dir(dest, recursive=True)
    pafs.copy_files(src, dest, source_filesystem=src_fs, destination_filesystem=fs)


def resolve(root: str, ref: str) -> tuple[str, int]:
    """(URI of the version directory, version) for ``name[:version|latest]``."""
    name, version = parse_ref(ref)
    if version is None:
        pointer = io.join(root, f"{name}/{LATEST}")
        if not io.exists(pointer):
            known = [m["name"] for m in list_models(root)]
            raise RegistryError(f"no model {name!r} in {root} (have {known})")
        version = int(io.read_json(pointer)["version"])
    uri = io.join(root, f"{name}/{version}")
    if not io.exists(io.join(uri, CARD)):
        raise RegistryError(f"{name} has no version {version} in {root} (have {versions(root, name)})")
    return uri, version


def show(root: str, ref: str) -> dict:
    uri, _ = resolve(root, ref)
    return {**io.read_json(io.join(uri, CARD)), "path": uri}


def list_models(root: str) -> list[dict]:
    """[{name, versions, latest}] for every model in the registry."""
    fs, path = io.filesystem(root)
    out = []
    for info in sorted(fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)), key=lambda i: i.base_name):
        if info.type != pafs.FileType.Directory or not NAME_RE.match(info.base_name):
            continue
        found = versions(root, info.base_name)
        if found:
            pointer = io.join(root, f"{info.base_name}/{LATEST}")
            latest = io.read_json(pointer)["version"] if io.exists(pointer) else None
            out.append({"name": info.base_name, "versions": found, "latest": latest})
    return out


def local_model_dir(root: str, ref: str, cache_dir: str | None = None) -> str:
    """A local directory holding the version (the registry's own when local, else a copy)."""
    uri, version = resolve(root, ref)
    local = io.local_path(uri)
    if local is not None:
        return local
    name = parse_ref(ref)[0]
    dest = Path(cache_dir or tempfile.gettempdir()) / "interest-registry" / name / str(version)
    if not (dest / CARD).exists():
        fs, path = io.filesystem(uri)
        pafs.copy_files(path, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return str(dest)
