"""Model registry: chosen models as versions of registered models in MLflow's Model Registry.

A version's artifacts are a self-contained exported model (``load_model`` reads them as they are)
plus ``card.json``: its metrics, the config of the trial that produced it, the hash of the data
manifest, the code version and when it was registered. They are logged to an MLflow run first and
the version is created after, so a reader never sees a partial version. Aliases (``champion``)
name the version to serve.

Where the registry lives (``root``; ``tracking.store_uri``): an MLflow tracking URI (a team's
server, ``http(s)://``, ``databricks``, ``sqlite:///``), or a local folder with the MLflow store in
``<folder>/mlruns`` (the default, ``./registry``, or ``$MLFLOW_TRACKING_URI`` when set; nothing to
start). A reference is ``name``, ``name:latest``, ``name:VERSION`` or ``name@ALIAS``.

    interest registry list [--root registry]
    interest registry show NAME[:VERSION|@ALIAS]
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from interest_model import io, tracking

CARD = "card.json"
ARTIFACT = "model"  # the run's artifact folder that holds the version
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class Ref:
    name: str
    version: int | None = None  # None: the latest, unless an alias
    alias: str | None = None


def parse_ref(ref: str) -> Ref:
    """``name``, ``name:latest``, ``name:3``, ``name@champion``."""
    if "@" in ref:
        name, _, alias = ref.partition("@")
        if not ALIAS_RE.match(alias) or alias.lower() == "latest":
            raise RegistryError(f"bad alias {alias!r} in {ref!r}: letters, digits, '_' and '-', not 'latest'")
        return Ref(check_name(name), alias=alias)
    name, _, version = ref.partition(":")
    check_name(name)
    if version in ("", "latest"):
        return Ref(name)
    if not version.isdigit() or int(version) < 1:
        raise RegistryError(f"bad version {version!r} in {ref!r}: expected a number >= 1 or 'latest'")
    return Ref(name, int(version))


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


def _known(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def versions(root: str | None, name: str) -> list[int]:
    client = tracking.client(root)
    if not _known(client, check_name(name)):
        return []
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'") if v.status == "READY")


def register(root: str | None, name: str, model_dir: str, card: dict, alias: str | None = None,
             experiment: str | None = None) -> dict:
    """Log the exported model at ``model_dir`` with ``card`` (metrics, trial config, data manifest
    hash, ...) to a run of ``experiment`` (default: the model's name), then make it the next
    version of ``name``; point ``alias`` at it. Returns the card."""
    from mlflow.exceptions import MlflowException

    check_name(name)
    if alias is not None:
        parse_ref(f"{name}@{alias}")
    if not io.exists(io.join(model_dir, "config.json")):
        raise RegistryError(f"no exported model at {model_dir}")
    client = tracking.client(root)
    full = {"name": name, "registered_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "code_version": code_version(), "source_model_dir": str(model_dir), **card}
    with tracking.Run(experiment or name, f"register {name}", root=root, params=card.get("trial_config"),
                      tags={"interest.registered_model": name}) as run:
        run.log_metrics(tracking.flat_metrics(card.get("metrics", {})))
        with io.local_input(model_dir) as local, tempfile.TemporaryDirectory() as tmp:
            run.log_artifacts(local, ARTIFACT)
            Path(tmp, CARD).write_text(_json(full), encoding="utf-8")
            run.log_artifacts(tmp, ARTIFACT)
        source = f"{run.artifact_uri}/{ARTIFACT}"
    if not _known(client, name):
        try:
            client.create_registered_model(name, description="interest model chosen by `interest tune`")
        except MlflowException:
            if not _known(client, name):  # not a concurrent creation: a real failure
                raise
    made = client.create_model_version(name, source, run_id=run.id,
                                       tags={"code_version": full["code_version"]})
    full["version"] = int(made.version)
    if alias is not None:
        client.set_registered_model_alias(name, alias, made.version)
    return full


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True, default=str)


def resolve(root: str | None, ref: str) -> tuple[str, int]:
    """(artifact URI of the version, version) for a reference."""
    from mlflow.exceptions import MlflowException

    r = parse_ref(ref)
    client = tracking.client(root)
    if not _known(client, r.name):
        known = [m["name"] for m in list_models(root)]
        raise RegistryError(f"no model {r.name!r} in {tracking.store_uri(root)} (have {known})")
    if r.alias is not None:
        try:
            mv = client.get_model_version_by_alias(r.name, r.alias)
        except MlflowException:
            aliases = sorted(client.get_registered_model(r.name).aliases)
            raise RegistryError(f"{r.name} has no alias {r.alias!r} (has {aliases})") from None
        return mv.source, int(mv.version)
    have = versions(root, r.name)
    version = r.version if r.version is not None else (max(have) if have else None)
    if version not in have:
        raise RegistryError(f"{r.name} has no version {version} in {tracking.store_uri(root)} (have {have})")
    return client.get_model_version(r.name, str(version)).source, version


def set_alias(root: str | None, ref: str, alias: str) -> None:
    """Point ``alias`` at the version ``ref`` names."""
    r = parse_ref(ref)
    _, version = resolve(root, ref)
    parse_ref(f"{r.name}@{alias}")
    tracking.client(root).set_registered_model_alias(r.name, alias, str(version))


def show(root: str | None, ref: str) -> dict:
    """The version's card, with its path, aliases and run."""
    import json

    uri, version = resolve(root, ref)
    name = parse_ref(ref).name
    client = tracking.client(root)
    mv = client.get_model_version(name, str(version))
    local = io.local_path(uri)
    if local is not None:
        card = json.loads(Path(local, CARD).read_text(encoding="utf-8"))
    else:
        from mlflow.artifacts import download_artifacts

        with tempfile.TemporaryDirectory() as tmp:
            card = json.loads(Path(download_artifacts(artifact_uri=f"{uri}/{CARD}", dst_path=tmp,
                                                      tracking_uri=tracking.store_uri(root))).read_text())
    aliases = sorted(a for a, v in client.get_registered_model(name).aliases.items() if int(v) == version)
    return {**card, "version": version, "path": uri, "aliases": aliases, "run_id": mv.run_id}


def list_models(root: str | None) -> list[dict]:
    """[{name, versions, latest, aliases}] for every registered model."""
    client = tracking.client(root)
    out = []
    for m in sorted(client.search_registered_models(), key=lambda m: m.name):
        found = versions(root, m.name)
        if found:
            out.append({"name": m.name, "versions": found, "latest": max(found),
                        "aliases": {a: int(v) for a, v in sorted(m.aliases.items())}})
    return out


def local_model_dir(root: str | None, ref: str, cache_dir: str | None = None) -> str:
    """A local directory holding the version (the store's own folder when local, else a copy)."""
    uri, version = resolve(root, ref)
    local = io.local_path(uri)
    if local is not None:
        return local
    from mlflow.artifacts import download_artifacts

    dest = Path(cache_dir or tempfile.gettempdir()) / "interest-registry" / parse_ref(ref).name / str(version)
    if not (dest / ARTIFACT / CARD).exists():
        download_artifacts(artifact_uri=uri, dst_path=str(dest), tracking_uri=tracking.store_uri(root))
    return str(dest / ARTIFACT)


def item_store(root: str | None, name: str) -> str | None:
    """Where the endpoint keeps the items added to ``name`` by text: ``<folder>/items/<name>``
    for a local registry; a remote one has none by default (``item_store`` in the configs)."""
    folder = tracking.local_folder(root)
    return None if folder is None else os.path.join(folder, "items", name)


@dataclass(frozen=True)
class Checkout:
    """A registered version ready to load: its label (``name:version``), local directory and the
    endpoint's item store."""

    label: str
    model_dir: str
    item_store: str | None


def checkout(root: str | None, ref: str, item_store_override: str | None = None) -> Checkout:
    name = parse_ref(ref).name
    _, version = resolve(root, ref)
    return Checkout(f"{name}:{version}", local_model_dir(root, f"{name}:{version}"),
                    item_store_override or item_store(root, name))
