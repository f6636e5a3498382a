"""Typed, frozen job configs loaded from YAML with dotted command-line overrides.

Every job has one config class derived from :class:`JobConfig`. A config is read from a YAML
file, patched with ``--set a.b.c=value`` overrides (values parsed as YAML scalars, list items
addressed by index: ``sources.0.items=...``), then validated once; any unknown key or wrong type
is a clear error naming the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

T = TypeVar("T", bound="JobConfig")


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid job config."""


class Frozen(BaseModel):
    """Base for every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # Settings added after runs were recorded under a config hash: they enter the hash only when
    # set to something other than their default, so those runs stay valid (a rerun keeps them).
    HASH_WHEN_SET: ClassVar[tuple[str, ...]] = ()


def _hash_view(section: BaseModel, data: dict) -> dict:
    """``data`` (the section's dump) less the HASH_WHEN_SET fields at their defaults, recursively."""
    fields = type(section).model_fields
    for name, field in fields.items():
        value = getattr(section, name)
        if name in getattr(section, "HASH_WHEN_SET", ()) and value == field.default:
            data.pop(name, None)
        elif isinstance(value, BaseModel) and isinstance(data.get(name), dict):
            _hash_view(value, data[name])
    return data


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(data: dict, dotted: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``dotted == "a.b.c"``; list items by index."""
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_index(node, key, dotted)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {'.'.join(keys[:i])!r} is not a mapping")
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        node = nxt
    last = keys[-1]
    if isinstance(node, list):
        node[_index(node, last, dotted)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {dotted!r}: parent is not a mapping or list")


def _index(node: list, key: str, dotted: str) -> int:
    try:
        idx = int(key)
        node[idx]
        return idx
    except (ValueError, IndexError):
        raise ConfigError(f"override {dotted!r}: {key!r} is not a valid index into a list of {len(node)}")


def parse_overrides(items: Iterable[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, text = item.split("=", 1)
        out.append((key.strip(), _parse_scalar(text)))
    return out


class JobConfig(Frozen):
    """Base class of the per-job configs."""

    # Fields that say where results go, not what they are: left out of config_hash.
    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("output_dir",)

    @classmethod
    def load(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
        data: dict = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
            data = loaded
        for key, value in parse_overrides(overrides):
            apply_override(data, key, value)
        return cls.from_dict(data, origin=str(path) if path else "<overrides>")

    @classmethod
    def from_dict(cls: type[T], data: dict, origin: str = "<dict>") -> T:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            lines = [f"invalid {cls.__name__} in {origin}:"]
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "<root>"
                lines.append(f"  {where}: {err['msg']}")
            raise ConfigError("\n".join(lines)) from None

    def to_public_dict(self) -> dict:
        """The config as plain data with secrets redacted (safe to write next to outputs)."""
        return _redact(self.model_dump(mode="python"))

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the redacted config, less HASH_EXCLUDE."""
        public = {k: v for k, v in _hash_view(self, self.to_public_dict()).items() if k not in self.HASH_EXCLUDE}
        blob = json.dumps(public, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**redacted**"
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value
