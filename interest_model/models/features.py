"""Cached item text features. With a frozen text encoder the item vectors never change, so they
are computed once per catalog (``ray_jobs/embed.py``: Ray Data batch inference on a pool of
encoder actors) and cached under a key of model + pooling + length + the item texts themselves
(which carry the text template).

An encoding in progress keeps each finished chunk of items as a file of its own beside the cache
file (:class:`Parts`): a run that stops (a killed job, a lost node) resumes from the chunks it
has, and the parts are joined into the cache file through a memory map, so the job holds at most
the chunks in flight, never the whole table twice."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np

from interest_model.config import Frozen, JobConfig
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
    # Items per saved part of an encoding in progress (what a stopped run keeps).
    chunk_items: int = 4096

    HASH_WHEN_SET: ClassVar[tuple[str, ...]] = ("chunk_items",)


class EmbedJobConfig(JobConfig):
    """``interest embed``: the features of a catalog's texts, into the cache ahead of the jobs
    that read them (with the same texts, encoder and cache folder they hit it)."""

    # A prepared dataset's folder (its items' texts, as the training jobs build the catalog) or a
    # Parquet file or folder with a ``text`` column (its rows in order).
    items: str
    # Of a prepared dataset: the scenarios whose catalog to encode, as the job that will read it
    # names them (pretrain: its source scenarios and context); default every scenario.
    scenarios: list[str] | None = None
    text_encoder: ItemEncoderConfig = ItemEncoderConfig()
    embed: EmbedConfig = EmbedConfig()


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


def load_cached(path: Path, mmap: bool = False) -> np.ndarray | None:
    if not path.is_file():
        return None
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


class Parts:
    """The finished chunks of one encoding in progress: ``<cache>.parts/part-K.npy`` holds the
    vectors of items ``K * chunk + 1 ..`` (row 0 of the features is padding). Each part is written
    whole or not at all; the folder is named by the cache key, so only the same texts, encoder and
    chunk size resume from it."""

    def __init__(self, cache: Path, n_items: int, chunk: int):
        if chunk < 1:
            raise ValueError(f"chunk_items must be >= 1, got {chunk}")
        self.folder = cache.with_name(f"{cache.stem}.c{chunk}.parts")
        self.n_items, self.chunk = n_items, chunk
        self.count = -(-n_items // chunk)

    def rows(self, k: int) -> range:
        """The feature rows (1-based item indexes) of chunk ``k``."""
        return range(k * self.chunk + 1, min((k + 1) * self.chunk, self.n_items) + 1)

    def _file(self, k: int) -> Path:
        return self.folder / f"part-{k:06d}.npy"

    def done(self) -> list[int]:
        return [k for k in range(self.count) if self._file(k).is_file()]

    def save(self, k: int, vectors: np.ndarray) -> None:
        if len(vectors) != len(self.rows(k)):
            raise ValueError(f"chunk {k}: {len(vectors)} vectors for {len(self.rows(k))} items")
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._file(k).with_suffix(".tmp.npy")
        np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        tmp.replace(self._file(k))

    def join(self, cache: Path) -> None:
        """Write the cache file from every part (a chunk at a time, through a memory map), then
        drop the parts."""
        missing = [k for k in range(self.count) if not self._file(k).is_file()]
        if missing:
            raise RuntimeError(f"item features: {len(missing)} of {self.count} chunks were not encoded")
        dim = np.load(self._file(0), mmap_mode="r").shape[1]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n_items + 1, dim))
        out[0] = 0
        for k in range(self.count):
            r = self.rows(k)
            out[r.start:r.stop] = np.load(self._file(k))
        out.flush()
        del out
        tmp.replace(cache)
        shutil.rmtree(self.folder, ignore_errors=True)
