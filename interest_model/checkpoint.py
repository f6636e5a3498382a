"""The exported model directory and the one API everything downstream uses.

    model_dir/
      config.json          format, model config, scenarios, training summary
      model.safetensors    interest model weights and buffers (cached item text features included)
      catalog.json         item ids, titles, texts, categories, scenario membership
      item_encoder/        the text encoder (config + safetensors) and its tokenizer, so new items
                           can be encoded from text
      interests.json       the category-interest head (``interest_model/interests.py``), when
                           the catalog has categories

It loads with torch, transformers and safetensors only (no Ray, no DeepSpeed) and never unpickles.

    from interest_model import load_model
    model = load_model("outputs/demo/model")
    model.recommend(["toy story (1995)", "heat (1995)"], k=10, scenario="ml-100k")
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from interest_model.catalog import Catalog
from interest_model.events import EVENT_TYPES
from interest_model.interests import InterestHead
from interest_model.models.item_encoder import ItemEncoder, ItemEncoderConfig, load_tokenizer, resolve_model_path
from interest_model.models.model import InterestModel, ModelConfig
from interest_model.online.ranker import Ranker

FORMAT = "interest-model"
FORMAT_VERSION = 1


def export_model(directory: str | Path, model: InterestModel, catalog: Catalog, state_dict: dict | None = None,
                 tokenizer=None, extra: dict | None = None, encoder_dir: str | Path | None = None,
                 interests: InterestHead | None = None) -> Path:
    """Write a self-contained model directory. ``state_dict`` (e.g. consolidated from a ZeRO
    checkpoint) defaults to the model's own. The text encoder is the model's when it trains one;
    for a frozen one, ``encoder_dir``'s (a model directory whose encoder made the features: its
    files are copied), else the configured one, so the directory can always encode new items.
    The tokenizer: ``tokenizer``, else ``encoder_dir``'s, else the configured model's."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.state_dict()
    weights = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if not k.startswith("item_encoder.")}
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": FORMAT})
    enc_cfg = model.cfg.item_encoder
    enc_dir = directory / "item_encoder"
    source = None if encoder_dir is None else Path(encoder_dir) / "item_encoder"
    if model.item_encoder is None and source is not None:
        shutil.copytree(source, enc_dir, dirs_exist_ok=True)
    else:
        encoder = model.item_encoder or ItemEncoder.from_config(enc_cfg)
        if model.item_encoder is not None and state_dict is not None:
            encoder.load_state_dict({k[len("item_encoder."):]: v for k, v in state.items()
                                     if k.startswith("item_encoder.")})
        encoder.backbone.save_pretrained(enc_dir, safe_serialization=True)
        if encoder.projection is not None:
            save_file({k: v.contiguous() for k, v in encoder.projection.state_dict().items()},
                      str(enc_dir / "projection.safetensors"))
        if tokenizer is None:
            tokenizer = load_tokenizer(str(source) if source is not None else resolve_model_path(enc_cfg.model))
        tokenizer.save_pretrained(enc_dir)
    (directory / "catalog.json").write_text(catalog.to_json(), encoding="utf-8")
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model.cfg.model_dump(mode="json"),
        "num_items": model.num_items, "text_dim": model.item_text.shape[1],
        "scenarios": catalog.scenarios, "text_trainable": model.item_encoder is not None,
        **(extra or {}),
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    if interests is not None:
        interests.save(directory)
    return directory


class Recommender:
    """A loaded model: user interests and top-k recommendations from a history of item ids."""

    def __init__(self, model: InterestModel, catalog: Catalog, encoder: ItemEncoder, tokenizer, config: dict,
                 interests: InterestHead | None = None):
        self.model = model.eval()
        self.interests = interests  # None: the catalog has no categories
        self.catalog = catalog
        self.encoder = encoder.eval()
        self.tokenizer = tokenizer
        self.config = config

    def _history(self, history: Sequence[str], events: Sequence[str] | None):
        max_len = self.model.cfg.user_encoder.max_len
        unknown = [h for h in history if h not in self.catalog.vocab]
        if unknown:
            raise KeyError(f"unknown item ids: {unknown[:10]}")
        ids = [self.catalog.vocab[h] for h in history][-max_len:]
        ev = [EVENT_TYPES.index(e) for e in (events or ["rate"] * len(history))][-max_len:]
        items = torch.zeros(1, max_len, dtype=torch.long)
        evs = torch.zeros(1, max_len, dtype=torch.long)
        items[0, : len(ids)] = torch.tensor(ids)
        evs[0, : len(ev)] = torch.tensor(ev)
        return items, evs

    @torch.no_grad()
    def user_vector(self, history: Sequence[str], scenario: str | None = None,
                    events: Sequence[str] | None = None) -> torch.Tensor:
        if not history:
            raise ValueError("empty history")
        items, evs = self._history(history, events)
        scen = torch.tensor([self.catalog.scenario_index(scenario or self.catalog.scenarios[0])])
        return self.model.last_user_vector(items, evs, scen)[0]

    @torch.no_grad()
    def recommend(self, history: Sequence[str], k: int = 10, scenario: str | None = None,
                  events: Sequence[str] | None = None, exclude_seen: bool = True) -> list[dict]:
        """Top-k items of ``scenario`` (default: the model's first) for a history of item ids,
        by the endpoint's own forward pass (``online/ranker.py``: one ranking path)."""
        if not history:
            raise ValueError("empty history")
        scenario = scenario or self.catalog.scenarios[0]
        items, evs = self._history(history, events)
        s_idx = self.catalog.scenario_index(scenario)
        allowed = torch.from_numpy(self.catalog.scenario_items[s_idx]).clone()
        if exclude_seen:
            allowed[[self.catalog.vocab[h] for h in history]] = False
        bias = self.model.item_bias(torch.tensor([s_idx]))  # now: dynamics and prior, if any
        bias = torch.zeros(1, allowed.shape[0]) if bias is None else bias
        top = torch.zeros(min(k, int(allowed.sum())))
        _, best, rows, _ = Ranker(self.model)(items, evs, torch.full_like(items, s_idx), self.model.item_vectors(),
                                              allowed[None], bias, torch.zeros(1, dtype=torch.long), top)
        return [{"item_id": self.catalog.item_ids[i - 1], "title": self.catalog.titles[i - 1], "score": float(s)}
                for s, i in zip(best[0].tolist(), rows[0].tolist())]

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Text features of new items, as the cached ones were made."""
        enc = self.config["model"]["item_encoder"]
        return self.encoder.encode(list(texts), self.tokenizer, max_length=enc["max_length"])


def load_model(directory: str | Path) -> Recommender:
    from safetensors.torch import load_file

    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{directory} is not an {FORMAT} directory")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{directory}: format version {config['format_version']} is newer than this code")
    cfg = ModelConfig.model_validate(config["model"])
    catalog = Catalog.from_json((directory / "catalog.json").read_text(encoding="utf-8"))
    encoder, tokenizer = load_item_encoder(directory, cfg.item_encoder)
    model = InterestModel(cfg, config["num_items"], len(catalog.scenarios), config["text_dim"],
                          item_encoder=encoder if config.get("text_trainable") else None)
    weights = load_file(str(directory / "model.safetensors"))
    _fit_buffers(model, weights)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # An export from before the popularity prior has none (it stays off).
    missing = [m for m in missing if not m.startswith("item_encoder.") and m not in ("item_prior", "prior_weight")]
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not match the model (missing {missing}, unexpected {unexpected})")
    return Recommender(model, catalog, encoder, tokenizer, config, InterestHead.load(directory))


def load_item_encoder(directory: str | Path, cfg: ItemEncoderConfig) -> tuple[ItemEncoder, object]:
    """The text encoder and tokenizer saved in a model directory (built from config, weights
    from safetensors: no pickles, no hub)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    enc_dir = Path(directory) / "item_encoder"
    backbone = AutoModel.from_config(AutoConfig.from_pretrained(enc_dir))
    backbone.load_state_dict(load_file(str(enc_dir / "model.safetensors")), strict=False)
    encoder = ItemEncoder(backbone, cfg.pooling, cfg.projection_dim)
    if (enc_dir / "projection.safetensors").exists():
        encoder.projection.load_state_dict(load_file(str(enc_dir / "projection.safetensors")))
    return encoder, load_tokenizer(str(enc_dir), cfg.padding_side)


def read_export(directory: str | Path) -> tuple[dict, ModelConfig, Catalog, dict]:
    """(config.json, model config, catalog, weights) of a model directory."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"no exported model at {directory} (config.json missing)")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{directory} is not an {FORMAT} directory")
    catalog = Catalog.from_json((directory / "catalog.json").read_text(encoding="utf-8"))
    return config, ModelConfig.model_validate(config["model"]), catalog, load_file(str(directory / "model.safetensors"))


def _fit_buffers(model: InterestModel, weights: dict) -> None:
    """Buffers whose size depends on the catalog take the saved shape before loading."""
    for name in ("item_text", "item_tokens", "item_token_mask", "scenario_items", "item_prior", "dyn_table",
                 "dyn_origin"):
        if name in weights and hasattr(model, name) and getattr(model, name).shape != weights[name].shape:
            setattr(model, name, torch.zeros_like(weights[name]))
