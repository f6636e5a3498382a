"""Item text features by Ray Data batch inference (a pool of encoder actors, CPU or GPU),
cached on disk (``interest_model/models/features.py``: the key and the cache files)."""

from __future__ import annotations

import logging

import numpy as np

from interest_model.models.features import EmbedConfig, cache_path, encode_locally, load_cached, save_cached
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


def _local_batches(texts: list[str], cfg: ItemEncoderConfig, batch_size: int):
    encoder = _EncodeActor(cfg.model_dump(mode="json"))
    for start in range(0, len(texts), batch_size):
        part = texts[start:start + batch_size]
        yield encoder({"index": np.arange(start + 1, start + 1 + len(part)), "text": part})


def item_features(texts: list[str], cfg: ItemEncoderConfig, embed: EmbedConfig) -> np.ndarray:
    """[len(texts) + 1, dim] float32 features; row 0 (padding) is zeros."""
    import ray

    cache = cache_path(texts, cfg, embed)
    cached = load_cached(cache)
    if cached is not None:
        log.info("item features: cache hit %s", cache)
        return cached
    if encode_locally(len(texts), cfg, embed):
        log.info("item features: encoding %d items with %s in this process", len(texts), cfg.model)
        batches = _local_batches(texts, cfg, embed.batch_size)
    else:
        log.info("item features: encoding %d items with %s on %d actor(s)", len(texts), cfg.model, embed.actors)
        ds = ray.data.from_items([{"index": i + 1, "text": t} for i, t in enumerate(texts)]).map_batches(
            _EncodeActor, fn_constructor_kwargs={"encoder_config": cfg.model_dump(mode="json")},
            batch_size=embed.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=embed.actors),
            num_cpus=embed.cpus_per_actor, num_gpus=embed.gpus_per_actor or None)
        batches = ds.iter_batches(batch_size=None, batch_format="numpy")
    index, vectors = [], []
    with CONSOLE.stage(f"item features: {len(texts):,} items"), CONSOLE.bar(len(texts), "encoding", "item") as bar:
        for batch in batches:
            index.append(batch["index"])
            vectors.append(batch["vector"])
            bar.update(len(batch["index"]))
    index = np.concatenate(index)
    vectors = np.concatenate(vectors)
    out = np.zeros((len(texts) + 1, vectors.shape[1]), dtype=np.float32)
    out[index] = vectors
    if np.count_nonzero(np.abs(out[1:]).sum(1)) != len(texts):
        raise RuntimeError("item features: some items were not encoded")
    save_cached(cache, out)
    return out
