"""Transfer strategies: from a pretrained model directory to a model for target scenarios.

    zero_shot  no target training: target items are encoded from text, the user encoder is reused
    zero_shot_counts  zero_shot plus the target's item counts: a popularity prior from the target's
               training interactions, its weight chosen on validation (no gradient step either)
    full       every parameter trains, the text encoder included (its tokens run each step)
    adapter    text encoder frozen; the user encoder and a MoE adaptor with whitening train (and
               the item-id embeddings of a text + ID model, the dynamics score of a model with
               popularity dynamics)
    lora       LoRA (peft) on the text encoder, plus the user encoder and the item projection

Weights move by name. Scenario embeddings of target scenarios unknown to the pretrained model
start at the mean of the known ones; item-id embeddings (if any) move for shared items. Catalog
buffers (text features, counts, popularity-dynamics features) are the target's own.
"""

from __future__ import annotations

import re
from typing import Literal

import torch

from pydantic import Field

from interest_model import metrics
from interest_model.catalog import Catalog
from interest_model.checkpoint import read_export
from interest_model.evaluation.scoring import ranks_for
from interest_model.config import Frozen
from interest_model.models.build import ItemInputs, build_model
from interest_model.models.model import InterestModel, ModelConfig
from interest_model.training.batches import inputs, to_device

Strategy = Literal["zero_shot", "zero_shot_counts", "full", "adapter", "lora"]
TRAINING_FREE = ("zero_shot", "zero_shot_counts")
CATALOG_BUFFERS = ("item_text", "item_tokens", "item_token_mask", "scenario_items", "item_prior", "prior_weight",
                   "dyn_table", "dyn_origin")
# Weights of the popularity prior tried on validation (0: pure zero-shot). Scores are cosines over
# a temperature (about +-14 at 0.07) and the prior is log(1 + count) (about 0-8): the grid runs
# from a light touch to a prior that outweighs the user encoder.
PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


class AdapterConfig(Frozen):
    experts: int = 8


class LoraConfig(Frozen):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None  # default: every attention/MLP linear of the encoder


class TransferSpec(Frozen):
    init_from: str  # an exported model directory (the output of pretrain)
    strategy: Strategy = "adapter"
    adapter: AdapterConfig = AdapterConfig()
    lora: LoraConfig = LoraConfig()
    # Settings a transfer may change (None keeps the pretrained model's): what tuning searches.
    temperature: float | None = Field(None, gt=0)
    dropout: float | None = Field(None, ge=0, lt=1)  # the user encoder's
    max_len: int | None = Field(None, ge=2)  # history length read; at most the pretrained one
    frozen_layers: int | None = Field(None, ge=0)  # full/lora: text encoder embeddings + first N layers stay frozen


def model_config_for(base: ModelConfig, spec: TransferSpec) -> ModelConfig:
    """The pretrained model's config, changed as the strategy and the spec's settings need."""
    user = {k: v for k, v in (("dropout", spec.dropout), ("max_len", spec.max_len)) if v is not None}
    if spec.max_len is not None and spec.max_len > base.user_encoder.max_len:
        raise ValueError(f"max_len {spec.max_len} exceeds the pretrained model's {base.user_encoder.max_len}")
    base = base.model_copy(update={"user_encoder": base.user_encoder.model_copy(update=user),
                                   **({"temperature": spec.temperature} if spec.temperature is not None else {})})
    if not base.use_text:
        if spec.strategy in ("adapter", "lora"):
            raise ValueError(f"strategy {spec.strategy!r} adapts the text encoder; this model has no text")
        return base
    if spec.strategy == "adapter":
        return base.model_copy(update={"adaptor_experts": spec.adapter.experts,
                                       "item_encoder": base.item_encoder.model_copy(update={"freeze": True})})
    if spec.strategy in ("full", "lora"):
        return base.model_copy(update={"item_encoder": base.item_encoder.model_copy(update={"freeze": False})})
    return base


def load_pretrained(spec: TransferSpec):
    """(model config for the strategy, pretrained catalog, pretrained weights)."""
    _, base_cfg, catalog, weights = read_export(spec.init_from)
    return model_config_for(base_cfg, spec), catalog, weights


def build_transfer_model(spec: TransferSpec, cfg: ModelConfig, src_catalog: Catalog, weights: dict,
                         catalog: Catalog, inputs: ItemInputs) -> InterestModel:
    """A model over the target ``catalog`` initialized from the pretrained ``weights``, with
    exactly the strategy's parameters trainable. A trainable text encoder starts from the
    pretrained model's (``inputs.encoder_dir``: ``spec.init_from``)."""
    model = build_model(cfg, catalog, inputs)
    load_weights(model, weights, src_catalog, catalog)
    set_trainable(model, spec)
    return model


def load_weights(model: InterestModel, weights: dict, src: Catalog, dst: Catalog) -> None:
    own = model.state_dict()
    moved = {}
    for name, value in weights.items():
        if name in CATALOG_BUFFERS or name.startswith("item_encoder.") or name not in own:
            continue
        if name == "user.scenario.weight":
            value = _scenario_rows(value, src.scenarios, dst.scenarios)
        elif name == "item_ids.weight":
            value = _item_rows(own[name].clone(), value, src, dst)
        elif name == "user.position.weight":
            value = value[: own[name].shape[0]]  # a shorter history reads the first positions
        if value.shape != own[name].shape:
            raise ValueError(f"pretrained {name} has shape {tuple(value.shape)}, the model {tuple(own[name].shape)}")
        moved[name] = value
    model.load_state_dict(moved, strict=False)


def _scenario_rows(table: torch.Tensor, src: list[str], dst: list[str]) -> torch.Tensor:
    mean = table[: len(src)].mean(0)
    return torch.stack([table[src.index(s)] if s in src else mean for s in dst])


def _item_rows(fresh: torch.Tensor, table: torch.Tensor, src: Catalog, dst: Catalog) -> torch.Tensor:
    for item, idx in dst.vocab.items():
        j = src.vocab.get(item)
        if j is not None:
            fresh[idx] = table[j]
    return fresh


def set_trainable(model: InterestModel, spec: TransferSpec) -> None:
    strategy = spec.strategy
    if strategy == "lora":
        add_lora(model, spec.lora)
    frozen = _frozen_encoder_layers(model, spec.frozen_layers) if spec.frozen_layers else set()
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
        elif strategy in TRAINING_FREE:
            p.requires_grad_(False)
        elif strategy == "full":
            p.requires_grad_(True)
        elif strategy == "adapter":  # a text + ID model's id embeddings and its dynamics score train too
            p.requires_grad_(name.startswith(("user.", "adaptor.", "item_ids.", "dynamics.")))
        elif strategy == "lora":
            p.requires_grad_("lora_" in name or name.startswith(("user.", "text_proj.", "dynamics.")))


LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def _frozen_encoder_layers(model: InterestModel, n: int) -> set[str]:
    """Names of the text encoder's embedding parameters and those of its first ``n`` layers."""
    names = set()
    for name, _ in model.named_parameters():
        if not name.startswith("item_encoder."):
            continue
        layer = LAYER_INDEX.search(name)
        if (layer and int(layer.group(1)) < n) or (not layer and "embed" in name):
            names.add(name)
    return names


def add_lora(model: InterestModel, lc: LoraConfig) -> InterestModel:
    """LoRA (peft) on the text encoder: its own weights freeze, the low-rank ones train (the rest
    of the model keeps its settings)."""
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model

    if model.item_encoder is None:
        raise ValueError("LoRA needs a trainable text encoder (model.item_encoder.freeze: false)")
    targets = lc.target_modules or _linear_names(model.item_encoder.backbone)
    model.item_encoder.backbone = get_peft_model(
        model.item_encoder.backbone, PeftLora(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                              target_modules=targets))
    return model


def merge_lora(model: InterestModel) -> InterestModel:
    """Fold LoRA weights into the text encoder, so the export is a plain model."""
    backbone = model.item_encoder.backbone if model.item_encoder is not None else None
    if hasattr(backbone, "merge_and_unload"):
        model.item_encoder.backbone = backbone.merge_and_unload()
    return model


def _linear_names(backbone: torch.nn.Module) -> list[str]:
    """Every linear layer of the encoder that pooling uses (a BERT pooler head is not)."""
    return [n for n, m in backbone.named_modules() if isinstance(m, torch.nn.Linear) and "pooler" not in n]


def trainable_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable parameters per top-level module (for reports and tests)."""
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            top = name.split(".")[0]
            out[top] = out.get(top, 0) + p.numel()
    return out


@torch.no_grad()
def choose_prior_weight(model: InterestModel, counts: torch.Tensor, valid_batches, exclude_history: bool = True,
                        weights=PRIOR_WEIGHTS) -> tuple[float, dict[float, float]]:
    """The popularity-prior weight with the best validation NDCG@10 (``counts`` [S, N+1]: the
    target's training interactions), set on ``model``; returns (weight, {weight: NDCG@10}). One
    pass over the validation rows: the user scores once per batch, every weight ranked on them."""
    model.eval()
    model.set_prior(counts, 0.0)
    prior = model.item_prior
    catalog = model.item_vectors()
    sums = {w: 0.0 for w in weights}
    n = 0
    for raw in valid_batches:
        b = to_device(raw, "cpu")
        if b["target"].numel() == 0:
            continue
        items, events, scen = inputs(b)
        base = model.scores(items, events, b["scenario"], catalog=catalog, event_scenarios=scen, time=b.get("time"))
        for w in weights:
            ranks = ranks_for(base + w * prior[b["scenario"]], b, model.scenario_items, exclude_history)
            sums[w] += float(metrics.ndcg_at(ranks, 10).sum())
        n += len(b["target"])
    table = {w: s / max(n, 1) for w, s in sums.items()}
    best = max(weights, key=lambda w: (table[w], -w))  # ties: the lighter prior
    model.set_prior(counts, best)
    return best, table
