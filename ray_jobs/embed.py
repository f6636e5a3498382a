"""Item text features by Ray Data batch inference (a pool of encoder actors, CPU or GPU),
cached on disk (``interest_model/models/features.py``: the key, the cache file and the parts of an
encoding in progress), and ``interest embed``, the job that fills the cache ahead of training.

    python -m ray_jobs.embed --config ray_jobs/configs/embed_demo.yaml

The items go through in chunks (``embed.chunk_items``); every finished chunk is saved at once,
so a run that stops resumes with the chunks it has, and the driver holds only the chunks in
flight until the parts are joined into the cache file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from interest_model.models.features import (EmbedConfig, EmbedJobConfig, Parts, cache_path, encode_locally,
                                            load_cached)
from interest_model.models.item_encoder import ItemEncoderConfig, resolve_model_path
from ray_jobs.console import CONSOLE

log = logging.getLogger("interest.embed")


class _EncodeActor:
    def __init__(self, encoder_config: dict):
        import torch

        from interest_model.models.item_encoder import ItemEncoder, load_tokenizer

        self.cfg = ItemEncoderConfig.model_validate(encoder_config)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = ItemEncoder.from_config(self.cfg).to(self.device)
        self.tokenizer = load_tokenizer(resolve_model_path(self.cfg.model), self.cfg.padding_side)

    def __call__(self, batch: dict) -> dict:
        vecs = self.encoder.encode(list(batch["text"]), self.tokenizer, self.cfg.max_length,
                                   batch_size=len(batch["text"]), device=self.device)
        return {"index": batch["index"], "vector": vecs.numpy().astype(np.float32)}


def _local_batches(texts: Sequence[str], chunks: list[range], cfg: ItemEncoderConfig,
                   batch_size: int) -> Iterator[dict]:
    encoder = _EncodeActor(cfg.model_dump(mode="json"))
    for rows in chunks:
        for start in range(rows.start, rows.stop, batch_size):
            index = np.arange(start, min(start + batch_size, rows.stop))
            yield encoder({"index": index, "text": [texts[i - 1] for i in index]})


def _pool_batches(texts: Sequence[str], chunks: list[range], cfg: ItemEncoderConfig,
                  embed: EmbedConfig) -> Iterator[dict]:
    """The chunks through a pool of encoder actors, in Ray Data blocks of at most a chunk and at
    least 8 per actor (fewer, larger blocks leave actors idle at the end: 3 blocks on 2 actors,
    one runs alone; smaller ones cost a task each); batches come back in any order."""
    import pyarrow as pa
    import ray.data

    from ray_jobs.common import data_context

    data_context()
    todo = sum(len(r) for r in chunks)
    rows = min(embed.chunk_items, max(embed.batch_size, -(-todo // (8 * embed.actors))))
    blocks = [pa.table({"index": np.arange(start, min(start + rows, r.stop)),
                        "text": [texts[i - 1] for i in range(start, min(start + rows, r.stop))]})
              for r in chunks for start in range(r.start, r.stop, rows)]
    ds = ray.data.from_arrow(blocks).map_batches(
        _EncodeActor, fn_constructor_kwargs={"encoder_config": cfg.model_dump(mode="json")},
        batch_size=embed.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=embed.actors),
        num_cpus=embed.cpus_per_actor, num_gpus=embed.gpus_per_actor or None)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


class _Collector:
    """Vectors arriving in any order, saved a chunk at a time as soon as the chunk is whole."""

    def __init__(self, parts: Parts):
        self.parts, self.open = parts, {}  # chunk -> (vectors, rows filled)

    def add(self, index: np.ndarray, vectors: np.ndarray) -> None:
        chunk_of = (index - 1) // self.parts.chunk
        for k in np.unique(chunk_of):
            at = chunk_of == k
            rows = self.parts.rows(int(k))
            buf, filled = self.open.get(int(k), (None, 0))
            if buf is None:
                buf = np.zeros((len(rows), vectors.shape[1]), dtype=np.float32)
            buf[index[at] - rows.start] = vectors[at]
            filled += int(at.sum())
            if filled == len(rows):
                self.parts.save(int(k), buf)
                self.open.pop(int(k), None)
            else:
                self.open[int(k)] = (buf, filled)


def item_features(texts: Sequence[str], cfg: ItemEncoderConfig, embed: EmbedConfig) -> np.ndarray:
    """[len(texts) + 1, dim] float32 features; row 0 (padding) is zeros."""
    cache = encode_to_cache(texts, cfg, embed)
    return load_cached(cache)


def encode_to_cache(texts: Sequence[str], cfg: ItemEncoderConfig, embed: EmbedConfig) -> Path:
    """The cache file of these texts' features, encoded first where it is missing (resuming from
    the parts a stopped run left)."""
    cache = cache_path(texts, cfg, embed)
    if cache.is_file():
        log.info("item features: cache hit %s", cache)
        return cache
    if not texts:
        raise ValueError("item features: no item texts")
    parts = Parts(cache, len(texts), embed.chunk_items)
    done = set(parts.done())
    chunks = [parts.rows(k) for k in range(parts.count) if k not in done]
    kept = sum(len(parts.rows(k)) for k in done)
    if done:
        log.info("item features: resuming, %d of %d items already encoded in %s", kept, len(texts), parts.folder)
    if not chunks:  # stopped after its last chunk, before the join
        batches: Iterator[dict] = iter(())
    elif encode_locally(len(texts), cfg, embed):
        log.info("item features: encoding %d items with %s in this process", len(texts) - kept, cfg.model)
        batches = _local_batches(texts, chunks, cfg, embed.batch_size)
    else:
        log.info("item features: encoding %d items with %s on %d actor(s)", len(texts) - kept, cfg.model, embed.actors)
        batches = _pool_batches(texts, chunks, cfg, embed)
    collector = _Collector(parts)
    with CONSOLE.stage(f"item features: {len(texts):,} items"), \
            CONSOLE.bar(len(texts), "encoding", "item", initial=kept) as bar:
        for batch in batches:
            collector.add(batch["index"], batch["vector"])
            bar.update(len(batch["index"]))
    if collector.open:
        raise RuntimeError(f"item features: {len(collector.open)} chunks came back incomplete")
    parts.join(cache)
    return cache


def run_embed(cfg: EmbedJobConfig) -> dict:
    from interest_model.data.prepared import item_texts

    texts = item_texts(cfg.items, cfg.scenarios)
    t0 = time.perf_counter()
    cache = encode_to_cache(texts, cfg.text_encoder, cfg.embed)
    seconds = time.perf_counter() - t0
    shape = load_cached(cache, mmap=True).shape
    return {"cache": str(cache), "items": len(texts), "dim": shape[1], "seconds": round(seconds, 2)}


def check(cfg: EmbedJobConfig) -> None:
    """The items' errors a user can fix, before a cluster starts."""
    from interest_model import io

    if not io.exists(cfg.items):
        raise FileNotFoundError(f"no items at {cfg.items} (a prepared dataset's folder, or Parquet with a `text` column)")


def main(argv: Sequence[str] | None = None) -> int:
    from ray_jobs.common import job_session

    with job_session(argv, "interest embed", __doc__.splitlines()[0], EmbedJobConfig, check=check) as cfg:
        with CONSOLE.stage("embed"):
            r = run_embed(cfg)
        CONSOLE.out(f"{r['items']:,} items x {r['dim']} features in {r['seconds']:.1f} s: {r['cache']}")
    return 0


if __name__ == "__main__":
    from ray_jobs.common import run_main

    raise SystemExit(run_main(main, None))
