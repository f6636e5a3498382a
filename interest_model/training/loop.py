"""The parts of training that do not depend on the launcher: build the model for a catalog,
move a batch, one optimization step, validation by full ranking."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from interest_model import metrics
from interest_model.evaluation.scoring import ranks_for
from interest_model.catalog import Catalog
from interest_model.models.item_encoder import ItemEncoder, load_tokenizer, resolve_model_path
from interest_model.models.model import InterestModel, ModelConfig

BATCH_KEYS = ("items", "events", "targets", "target", "scenario")


def catalog_tokens(catalog: Catalog, cfg: ModelConfig, tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask of every catalog text (row 0 = padding), for a trainable encoder."""
    enc = cfg.item_encoder
    tok = tokenizer or load_tokenizer(resolve_model_path(enc.model), enc.padding_side)
    out = tok(catalog.texts, padding="max_length", truncation=True, max_length=enc.max_length, return_tensors="np")
    ids = np.zeros((catalog.size, enc.max_length), dtype=np.int64)
    mask = np.zeros_like(ids)
    ids[1:], mask[1:] = out["input_ids"], out["attention_mask"]
    mask[0, 0] = 1  # keep the padding row well-defined for the encoder
    return ids, mask


def build_model(cfg: ModelConfig, catalog: Catalog, features: np.ndarray | None = None,
                tokens: tuple[np.ndarray, np.ndarray] | None = None, encoder: ItemEncoder | None = None) -> InterestModel:
    """Frozen text encoder: ``features`` [N+1, text_dim] from the cache. Trainable: ``tokens``
    (and ``encoder``, default: loaded from the config)."""
    if not cfg.use_text:  # ID-only: no text features at all
        features = np.zeros((catalog.size, 1), dtype=np.float32)
    if cfg.item_encoder.freeze or not cfg.use_text:
        if features is None:
            raise ValueError("a frozen text encoder needs the cached item features")
        model = InterestModel(cfg, catalog.size, len(catalog.scenarios), features.shape[1])
        model.set_catalog(torch.from_numpy(catalog.scenario_items), item_text=torch.from_numpy(features))
        return model
    if encoder is None:
        encoder = ItemEncoder.from_config(cfg.item_encoder)
    else:
        encoder.configure(cfg.item_encoder)
    model = InterestModel(cfg, catalog.size, len(catalog.scenarios), encoder.output_dim, item_encoder=encoder)
    ids, mask = tokens if tokens is not None else catalog_tokens(catalog, cfg)
    model.set_catalog(torch.from_numpy(catalog.scenario_items), item_tokens=torch.from_numpy(ids),
                      item_token_mask=torch.from_numpy(mask))
    return model


def to_device(batch: dict, device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(batch[k]).to(device=device, dtype=torch.long) for k in (*BATCH_KEYS, "seen")
            if k in batch}


@torch.no_grad()
def evaluate(model: InterestModel, batches: Iterable[dict], device, exclude_history: bool = True,
             ks=(10, 20)) -> dict[str, float]:
    """Full ranking over each row's scenario catalog; returns metric sums and the count."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    catalog_vecs = model.item_vectors()
    for raw in batches:
        b = to_device(raw, device)
        if b["target"].numel() == 0:
            continue
        scores = model.scores(b["items"], b["events"], b["scenario"], catalog=catalog_vecs)
        ranks = ranks_for(scores, b, model.scenario_items, exclude_history)
        for k, v in metrics.summarize(ranks, ks).items():
            sums[k] = sums.get(k, 0.0) + v
    model.train(was_training)
    return sums
