"""The benchmark's choice of the best of ours and the best SASRec-CE (both on validation) and the
table that compares them, on made-up validation and test figures (no training)."""

from interest_model.benchmark_models import best_ours, best_sasrec, ensemble_pairs, ours_models
from interest_model.benchmark_summary import best_ours_rows, summary
from interest_model.experiments import BenchmarkConfig
from tests.conftest import CONFIGS


def _cfg(*overrides):
    return BenchmarkConfig.load(None, [
        "data.prepared=unused", f"pretrain.config={CONFIGS / 'pretrain_tiny.yaml'}",
        f"transfer.config={CONFIGS / 'transfer_tiny.yaml'}", f"evaluate.config={CONFIGS / 'evaluate_demo.yaml'}",
        *overrides])


def _entry(value, ratios=None):
    return {"all": {"ndcg@10": {"value": value, "ci95": [value - 0.01, value + 0.01]}, "recall@10": {"value": 0.3},
                    "ndcg@10_ratio": ratios or {}}}


def test_best_of_ours_counts_every_arm_and_the_ensemble_and_never_a_sasrec():
    cfg = _cfg("strategies=[zero_shot, adapter]", "fractions=[1.0, 0.1]", "text_id=true", "ensemble=true")
    valid = {"zero_shot": 0.05, "adapter": 0.10, "adapter+ids": 0.12, "adapter@0.1": 0.07, "adapter+ids@0.1": 0.06,
             "sasrec": 0.13, "sasrec_transfer": 0.125, "sasrec@0.1": 0.05, "sasrec_transfer@0.1": 0.08,
             "ensemble": 0.14}
    info = {m: {"kind": "ID-only (SASRec-CE)" if m.startswith("sasrec") else "text", "val_ndcg@10": v}
            for m, v in valid.items()}
    info["popularity"] = {"kind": "baseline", "val_ndcg@10": None}
    assert set(ours_models(cfg, info, 0.1)) == {"zero_shot", "adapter@0.1", "adapter+ids@0.1"}  # no ensemble@0.1 run
    assert best_ours(cfg, info, 1.0) == "ensemble" and best_sasrec(cfg, info, 1.0) == "sasrec"
    assert best_ours(cfg, info, 0.1) == "adapter@0.1" and best_sasrec(cfg, info, 0.1) == "sasrec_transfer@0.1"
    # the ensembles pair the best transfer (not zero-shot) with the best SASRec-CE
    assert ensemble_pairs(cfg, info) == {"ensemble": ("adapter+ids", "sasrec"),
                                         "ensemble@0.1": ("adapter@0.1", "sasrec_transfer@0.1")}

    results = {m: _entry(v) for m, v in valid.items()}
    results["ensemble"] = _entry(0.15, {"sasrec": {"value": 1.07, "ci95": [1.02, 1.12]}})
    results["adapter@0.1"] = _entry(0.07, {"sasrec_transfer@0.1": {"value": 0.96, "ci95": [0.9, 1.03]}})
    rows = best_ours_rows(results, info, cfg)
    assert [(r["fraction"], r["ours"], r["sasrec"]) for r in rows] == [
        (1.0, "ensemble", "sasrec"), (0.1, "adapter@0.1", "sasrec_transfer@0.1")]
    assert rows[0]["valid"] == {"ours": 0.14, "sasrec": 0.13} and rows[0]["ratio"]["value"] == 1.07
    table = summary(results, info, cfg)
    assert "### Best of ours against the best SASRec-CE" in table
    assert "| 100% | ensemble (text) | 0.1400 | 0.1500 [0.1400, 0.1600] | sasrec | 0.1300 |" in table
    assert table.rstrip().endswith("| 0.96x [0.90, 1.03] |")


def test_in_domain_best_of_ours_is_a_text_model_or_ensemble():
    cfg = _cfg("transfer=null", "data.scenarios=[ml-1m]", "models={text: [], sasrec: [model.use_text=false]}")
    info = {"text": {"kind": "text", "val_ndcg@10": 0.10}, "sasrec": {"kind": "ID-only (SASRec-CE)", "val_ndcg@10": 0.16},
            "ensemble:text": {"kind": "ensemble: 0.20 x text + 0.80 x sasrec", "val_ndcg@10": 0.165},
            "popularity": {"kind": "baseline"}}
    assert best_ours(cfg, info, 1.0) == "ensemble:text" and best_sasrec(cfg, info, 1.0) == "sasrec"
    results = {m: _entry(0.1) for m in info}
    assert "| 100% | ensemble:text (ensemble: 0.20 x text + 0.80 x sasrec) | 0.1650 |" in summary(results, info, cfg)


def test_with_merged_histories_only_the_sasrec_columns_are_the_merged_models():
    cfg = _cfg("strategies=[adapter]", "fractions=[1.0]", "histories=[merged]")
    valid = {"adapter+merged": 0.12, "sasrec+merged": 0.11, "sasrec_transfer+merged": 0.13}
    info = {m: {"kind": "ID-only (SASRec-CE)" if m.startswith("sasrec") else "text", "val_ndcg@10": v}
            for m, v in valid.items()}
    results = {"adapter+merged": _entry(0.12), "sasrec+merged": _entry(0.11), "sasrec_transfer+merged": _entry(0.13)}
    row = next(line for line in summary(results, info, cfg).splitlines() if line.startswith("| 100% | adapter+merged"))
    assert "n/a" not in row
    assert "| 0.1100 [0.1000, 0.1200] | 0.1300 [0.1200, 0.1400] |" in row
