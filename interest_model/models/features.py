"""Cached item text features. With a frozen text encoder the item vectors never change, so they
are computed once per catalog (``ray_jobs/embed.py``: Ray Data batch inference on a pool of
encoder actors) and cached under a key of model + pooling + length + the item texts themselves
(which carry the text template)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from interest_model.config import Frozen
from interest_model.models.item_encoder import ItemEncoderConfig, resolve_model_path


class EmbedConfig(Frozen):
    """Where features are cached and how the batch inference that makes them is sized."""

    cache_dir: str = ".cache/item_features"  # keyed by model + pooling + item texts
    batch_size: int = 64
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    # A catalog of fewer items is encoded in the job's own process when no GPU is asked for and
    # the encoder's weights are small (LOCAL_MAX_WEIGHT_BYTES): starting a pool of actors that
    # each load the encoder costs more than encoding it (docs/training.md). 0: always the pool.
    local_below: int = 2000


# A larger encoder always goes to the pool: the driver may run on a small head node.
LOCAL_MAX_WEIGHT_BYTES = 512 * 2**20


def weight_bytes(model: str) -> int | None:
    """The size of a local model folder's weight files; None for a hub id (unknown here)."""
    path = Path(resolve_model_path(model))
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin", "*.pt") for f in path.glob(pattern))


def encode_locally(n_items: int, cfg: ItemEncoderConfig, embed: EmbedConfig) -> bool:
    """Whether ``n_items`` texts are encoded in this process rather than by a pool of actors."""
    if n_items >= embed.local_below or embed.gpus_per_actor > 0:
        return False
    size = weight_bytes(cfg.model)
    return size is not None and size <= LOCAL_MAX_WEIGHT_BYTES


def cache_key(texts: list[str], cfg: ItemEncoderConfig) -> str:
    h = hashlib.sha256()
    path = resolve_model_path(cfg.model)
    ident = {"model": cfg.model, "pooling": cfg.pooling, "max_length": cfg.max_length,
             "projection_dim": cfg.projection_dim, "dtype": cfg.torch_dtype, "padding_side": cfg.padding_side}
    config_file = Path(path) / "config.json"
    if config_file.is_file():
        # A local model is the files themselves, however the path is spelled: its architecture
        # and its weight files (a re-export changes their size or modification time).
        ident["model"] = str(Path(path).resolve())
        ident["config"] = config_file.read_text()
        weights = sorted(Path(path).glob("*.safetensors"))
        ident["weights"] = [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]
    h.update(json.dumps(ident, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def cache_path(texts: list[str], cfg: ItemEncoderConfig, embed: EmbedConfig) -> Path:
    return Path(embed.cache_dir) / f"{cache_key(texts, cfg)}.npy"


def load_cached(path: Path) -> np.ndarray | None:
    return np.load(path, allow_pickle=False) if path.is_file() else None


def save_cached(path: Path, features: np.ndarray) -> None:
    """Written whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, features, allow_pickle=False)
    tmp.replace(path)
