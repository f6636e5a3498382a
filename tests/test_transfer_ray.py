"""The transfer job on Ray Train: each strategy from a pretrained export to the target platform."""

import pytest

from interest_model import load_model
from ray_jobs.transfer import run_transfer
from tests.conftest import transfer_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_zero_shot_reads_no_target_interaction_and_ranks_new_items(tiny_pretrained, tiny_prepared, tmp_path):
    out = run_transfer(transfer_config(tiny_prepared, tiny_pretrained, tmp_path, "transfer.strategy=zero_shot"))
    assert out["trainable"] == {} and out["history"] == []
    model = load_model(out["export_dir"])
    assert model.catalog.scenarios == ["shop-b"]
    source = load_model(tiny_pretrained)
    new_items = set(model.catalog.item_ids) - set(source.catalog.item_ids)
    assert new_items  # shop-b sells items the source never had
    recs = model.recommend(model.catalog.item_ids[:3], k=len(model.catalog.item_ids) - 3)
    assert new_items & {r["item_id"] for r in recs}  # ranked from their text alone
    # The user encoder is the pretrained one, unchanged.
    import torch

    a = dict(model.model.user.named_parameters())
    b = dict(source.model.user.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a if k != "scenario.weight")
    # It ships the text encoder that made its item features: the pretrained model's.
    enc_a, enc_b = model.encoder.backbone.state_dict(), source.encoder.backbone.state_dict()
    assert enc_a.keys() == enc_b.keys() and all(torch.equal(enc_a[k], enc_b[k]) for k in enc_a)


def test_adapter_transfer_trains_and_exports(tiny_pretrained, tiny_prepared, tmp_path):
    out = run_transfer(transfer_config(tiny_prepared, tiny_pretrained, tmp_path, "transfer.strategy=adapter",
                                       "run.name=adapter"))
    assert set(out["trainable"]) == {"user", "adaptor"}
    assert len(out["history"]) == 2 and out["best"]["val_count"] == 20  # every shop-b user validated
    model = load_model(out["export_dir"])
    assert model.model.adaptor is not None and model.config["training"]["transfer"]["strategy"] == "adapter"
    assert len(model.recommend(model.catalog.item_ids[:2], k=5, scenario="shop-b")) == 5


def test_few_shot_lora_transfer(tiny_pretrained, tiny_prepared, tmp_path):
    out = run_transfer(transfer_config(tiny_prepared, tiny_pretrained, tmp_path, "transfer.strategy=lora",
                                       "data.user_fraction=0.5", "transfer.lora.r=4", "run.name=lora",
                                       "train.epochs=1"))
    assert set(out["trainable"]) == {"item_encoder", "user", "text_proj"}
    assert out["trainable"]["item_encoder"] < 1_000_000  # LoRA weights only, not MiniLM's 22M
    model = load_model(out["export_dir"])  # LoRA merged: a plain encoder
    assert not any("lora" in k for k in model.encoder.state_dict())
    assert model.config["text_trainable"]
    assert model.config["training"]["user_fraction"] == 0.5
    assert len(model.recommend(model.catalog.item_ids[:2], k=3)) == 3


def test_evaluate_models_and_baselines_with_a_report(tiny_pretrained, tiny_prepared, tmp_path):
    import json

    from interest_model.evaluation.config import EvaluateConfig
    from ray_jobs.evaluate import headline, run_evaluate
    from tests.conftest import CONFIGS

    # Zero-shot + target counts of half the target users: no gradient step, the prior's weight
    # chosen on validation from the grid, the counts those users' training events only.
    zero = run_transfer(transfer_config(tiny_prepared, tiny_pretrained, tmp_path / "z",
                                        "transfer.strategy=zero_shot_counts", "data.user_fraction=0.5"))
    assert zero["trainable"] == {} and zero["history"] == []
    prior = load_model(zero["export_dir"]).config["training"]["prior"]
    assert set(prior["validation"]) == {"0", "0.25", "0.5", "1", "2", "4", "8", "16"}
    assert prior["best"] == max(prior["validation"].values()) == zero["best"]["val_ndcg@10"]
    manifest = json.loads((tiny_prepared / "manifest.json").read_text())
    assert 0 < prior["counted_interactions"] < manifest["splits"]["loo"]["shop-b"]["train"]["interactions"]
    assert float(load_model(zero["export_dir"]).model.prior_weight) == prior["weight"]

    cfg = EvaluateConfig.load(CONFIGS / "evaluate_demo.yaml", [
        f"data.prepared={tiny_prepared}", f"models={{counts: {zero['export_dir']}}}", f"out_dir={tmp_path}/eval",
        f"embed.cache_dir={tmp_path.parent}/item-features", "bootstrap=200"])
    out = run_evaluate(cfg)
    assert set(out["results"]) == {"counts", "popularity", "recent_popularity", "text_similarity"}
    paired = out["results"]["counts"]["all"]["ndcg@10_ratio"]["popularity"]  # its own interval
    assert paired["ci95"][0] <= paired["value"] <= paired["ci95"][1]
    for name, res in out["results"].items():
        assert res["all"]["users"] == 20  # every target user has a test item
        for seg in ("cold_users", "cold_items", "new_items", "multi_scenario_users"):
            assert seg in res
        e = res["all"]["ndcg@10"]
        assert e["ci95"][0] <= e["value"] <= e["ci95"][1]
    # Interest prediction: the zero-shot model carries its source's head (the target's prior from
    # its catalog's categories), measured against the baselines on the same users.
    interests = out["categories"]
    assert set(interests["methods"]) == {"counts", "prior", "history", "recent"}
    assert 0 <= interests["methods"]["counts"]["accuracy@1"]["value"] <= 1
    lo, hi = interests["ratios"]["counts"]["prior"]["macro_f1"]["ci95"]
    assert lo <= interests["ratios"]["counts"]["prior"]["macro_f1"]["value"] <= hi
    data = json.loads(open(out["paths"]["metrics"]).read())
    assert data["part"] == "test" and data["scenarios"] == ["shop-b"]
    assert "## Segment: cold_users" in open(out["paths"]["report"]).read()
    assert "counts" in headline(out)

