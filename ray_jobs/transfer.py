"""``interest transfer``: adapt a pretrained model to the target scenarios (zero_shot, full,
adapter or lora; optionally on a seeded fraction of the target users) on Ray Train, and export it.

    python -m ray_jobs.transfer --config ray_jobs/configs/transfer_demo.yaml
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Sequence

from interest_model.checkpoint import load_item_encoder
from interest_model.training.config import TransferConfig
from interest_model.training.loop import catalog_tokens
from interest_model.transfer import build_transfer_model, load_pretrained, trainable_counts
from ray_jobs.common import run_main, start_job
from ray_jobs.pretrain import (best_line, catalog_for, choose_scenarios, examples, export, fit_and_export, load_prepared,
                              provenance)

log = logging.getLogger("interest.transfer")


def merge_lora(model):
    """Fold LoRA weights into the text encoder so the export is a plain model."""
    backbone = model.item_encoder.backbone
    if hasattr(backbone, "merge_and_unload"):
        model.item_encoder.backbone = backbone.merge_and_unload()
    return model


def run_transfer(cfg: TransferConfig, callbacks=()) -> dict:
    from ray_jobs.embed import item_features

    spec = cfg.transfer
    model_cfg, src_catalog, weights = load_pretrained(spec)
    manifest, items = load_prepared(cfg.data.prepared)
    scenarios = choose_scenarios(cfg, manifest, "target")
    catalog = catalog_for(cfg, items, scenarios)
    features = tokens = None
    if not model_cfg.use_text:
        pass  # ID-only model (SASRec): shared items keep their embeddings, new ones start fresh
    elif model_cfg.item_encoder.freeze:
        # Target items are encoded by the pretrained model's own text encoder.
        enc_cfg = model_cfg.item_encoder.model_copy(update={"model": f"{spec.init_from}/item_encoder"})
        features = item_features(catalog.texts, enc_cfg, cfg.embed)
    else:
        _, tokenizer = load_item_encoder(spec.init_from, model_cfg.item_encoder)
        tokens = catalog_tokens(catalog, model_cfg, tokenizer=tokenizer)
    builder = partial(build_transfer_model, spec, model_cfg, src_catalog, weights, catalog,
                      features=features, tokens=tokens)
    counts = trainable_counts(builder())
    log.info("transfer %s -> %s, strategy %s, trainable parameters %s", spec.init_from, scenarios,
             spec.strategy, counts)
    extra = {"training": {"transfer": spec.model_dump(mode="json"), "scenarios": scenarios,
                          "trainable_parameters": counts}}
    if spec.strategy == "zero_shot":
        extra["training"].update(provenance(cfg, manifest))
        export(cfg.export_dir, builder(), catalog, extra, encoder_dir=spec.init_from)
        return {"best": {}, "last": {}, "export_dir": cfg.export_dir, "history": [], "trainable": counts}
    train_ds, valid_ds = examples(cfg, catalog, scenarios, model_cfg.user_encoder.max_len)
    out = fit_and_export(cfg, builder, catalog, train_ds, valid_ds, manifest, extra,
                         finalize_model=merge_lora if spec.strategy == "lora" else None, encoder_dir=spec.init_from,
                         callbacks=callbacks)
    return {**out, "trainable": counts}


def main(argv: Sequence[str] | None = None) -> int:
    cfg = start_job(argv, "interest transfer", __doc__.splitlines()[0], TransferConfig)
    out = run_transfer(cfg)
    if out["best"]:
        print(best_line(out["best"]))
    print(f"strategy {cfg.transfer.strategy}: trainable parameters {out['trainable']}")
    print(f"model exported to {out['export_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
