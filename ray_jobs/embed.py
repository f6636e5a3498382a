"""Item text features by Ray Data batch inference, cached on disk.

With a frozen text encoder the item vectors never change, so they are computed once for the
catalog (a pool of encoder actors, CPU or GPU) and cached under a key of model + pooling +
length + the item texts themselves (which carry the text template).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from interest_model.models.item_encoder import ItemEncoderConfig, resolve_model_path
from interest_model.training.config import EmbedConfig

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


def item_features(texts: list[str], cfg: ItemEncoderConfig, embed: EmbedConfig) -> np.ndarray:
    """[len(texts) + 1, dim] float32 features; row 0 (padding) is zeros."""
    import ray

    key = cache_key(texts, cfg)
    cache = Path(embed.cache_dir) / f"{key}.npy"
    if cache.is_file():
        log.info("item features: cache hit %s", cache)
        return np.load(cache, allow_pickle=False)
    log.info("item features: encoding %d items with %s on %d actor(s)", len(texts), cfg.model, embed.actors)
    ds = ray.data.from_items([{"index": i + 1, "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(_EncodeActor, fn_constructor_kwargs={"encoder_config": cfg.model_dump(mode="json")},
                        batch_size=embed.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=embed.actors),
                        num_cpus=embed.cpus_per_actor, num_gpus=embed.gpus_per_actor or None)
    index, vectors = [], []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        index.append(batch["index"])
        vectors.append(batch["vector"])
    index = np.concatenate(index)
    vectors = np.concatenate(vectors)
    out = np.zeros((len(texts) + 1, vectors.shape[1]), dtype=np.float32)
    out[index] = vectors
    if np.count_nonzero(np.abs(out[1:]).sum(1)) != len(texts):
        raise RuntimeError("item features: some items were not encoded")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, out, allow_pickle=False)
    tmp.replace(cache)
    return out
