"""A model for a catalog, and what it needs of the catalog's text, prepared once per job.

Three item representations (``ModelConfig.use_text`` / ``use_item_ids`` / the text encoder's
``freeze``) need three kinds of input: nothing (ID-only), cached text features (a frozen
encoder), or the catalog's tokens and an encoder to train. :class:`ItemInputs` carries whichever
applies; a job makes it once (``ray_jobs/trainer.py:item_inputs``) and every model it builds,
on the driver or on a worker, starts from it. A trainable encoder travels as the folder it loads
from, not as weights: every worker reads it (a shared filesystem or the model's hub id), which
scales to encoders far larger than Ray's object store should carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from interest_model.catalog import Catalog
from interest_model.checkpoint import load_item_encoder
from interest_model.models.dynamics import Dynamics
from interest_model.models.item_encoder import ItemEncoder, load_tokenizer, resolve_model_path
from interest_model.models.model import InterestModel, ModelConfig


@dataclass
class ItemInputs:
    features: np.ndarray | None = None  # [N+1, text_dim] (frozen encoder)
    tokens: tuple[np.ndarray, np.ndarray] | None = None  # ids, mask [N+1, max_length] (trainable encoder)
    # A model directory whose item_encoder/ holds the trainable encoder's starting weights (a
    # transfer's pretrained model); None: the configured encoder (ItemEncoderConfig.model).
    encoder_dir: str | None = None
    # Popularity-dynamics features of the job's scenarios (a model with item_dynamics)
    dynamics: Dynamics | None = None

    def encoder(self, cfg: ModelConfig) -> ItemEncoder:
        if self.encoder_dir is None:
            return ItemEncoder.from_config(cfg.item_encoder)
        encoder, _ = load_item_encoder(self.encoder_dir, cfg.item_encoder)
        encoder.configure(cfg.item_encoder)
        return encoder


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


def build_model(cfg: ModelConfig, catalog: Catalog, inputs: ItemInputs | None = None) -> InterestModel:
    """A fresh model over ``catalog``. Frozen text encoder: ``inputs.features``; trainable:
    ``inputs.tokens`` (default: tokenized here) and the encoder ``inputs`` names; popularity
    dynamics: ``inputs.dynamics``."""
    inputs = inputs or ItemInputs()
    if cfg.item_dynamics and inputs.dynamics is None:
        raise ValueError("a model with item_dynamics needs the popularity-dynamics features of its scenarios")
    model = _build(cfg, catalog, inputs)
    if cfg.item_dynamics:
        model.set_dynamics(torch.from_numpy(inputs.dynamics.table), torch.from_numpy(inputs.dynamics.origin))
    return model


def _build(cfg: ModelConfig, catalog: Catalog, inputs: ItemInputs) -> InterestModel:
    if not cfg.use_text:  # ID-only: no text features at all
        features = np.zeros((catalog.size, 1), dtype=np.float32)
    else:
        features = inputs.features
    if cfg.item_encoder.freeze or not cfg.use_text:
        if features is None:
            raise ValueError("a frozen text encoder needs the cached item features")
        model = InterestModel(cfg, catalog.size, len(catalog.scenarios), features.shape[1])
        model.set_catalog(torch.from_numpy(catalog.scenario_items), item_text=torch.from_numpy(features))
        return model
    encoder = inputs.encoder(cfg)
    model = InterestModel(cfg, catalog.size, len(catalog.scenarios), encoder.output_dim, item_encoder=encoder)
    ids, mask = inputs.tokens if inputs.tokens is not None else catalog_tokens(catalog, cfg)
    model.set_catalog(torch.from_numpy(catalog.scenario_items), item_tokens=torch.from_numpy(ids),
                      item_token_mask=torch.from_numpy(mask))
    return model
