"""The benchmark job on the synthetic data: every arm trains once, SASRec-CE baselines included,
and one report compares them (ratios matched on the target fraction, the fraction plot); the
transfer form runs on cross-scenario histories (tests/conftest.py:tiny_genres)."""

import json

import pytest

from interest_model import load_model
from interest_model.experiments import BenchmarkConfig
from ray_jobs.benchmark import is_done, plan, run_benchmark
from ray_jobs.transfer import run_transfer
from tests.conftest import CONFIGS, transfer_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_benchmark_trains_every_arm_and_reports_against_sasrec(tiny_genres, ray_cluster, tmp_path):
    """S2's shape (shared users, disjoint catalogs), every target-side model on merged histories."""
    from interest_model.online.model import OnlineModel

    cache = f"embed.cache_dir={tmp_path.parent}/item-features"
    cfg = BenchmarkConfig.load(None, [
        f"data.prepared={tiny_genres}", f"out_dir={tmp_path}", "strategies=[zero_shot, adapter]",
        "fractions=[0.5]", "histories=[merged]",
        f"pretrain.config={CONFIGS / 'pretrain_tiny.yaml'}",
        # every model with popularity dynamics: the Ray path of the features (pretrain, transfer with
        # the target's counts, merged histories, SASRec-CE, evaluation, serving)
        f"pretrain.set=[train.epochs=1, {cache}, model.item_dynamics=true]",
        f"transfer.config={CONFIGS / 'transfer_tiny.yaml'}", f"transfer.set=[train.epochs=1, {cache}]",
        f"evaluate.config={CONFIGS / 'evaluate_demo.yaml'}", f"evaluate.set=[bootstrap=100, {cache}]",
        "ensemble=true"])
    out = run_benchmark(cfg)
    models = {"zero_shot+merged", "adapter+merged@0.5", "sasrec+merged@0.5", "sasrec_transfer+merged@0.5"}
    assert set(out["results"]) == models | {"ensemble@0.5", "popularity", "recent_popularity", "text_similarity"}
    # The best transfer with the best SASRec-CE (both on validation), compared with SASRec-CE at 0.5.
    assert out["info"]["ensemble@0.5"]["kind"].startswith("ensemble: ") and "x adapter+merged@0.5 + " in \
        out["info"]["ensemble@0.5"]["kind"] and out["info"]["ensemble@0.5"]["fraction"] == 0.5
    assert "sasrec+merged@0.5" in out["results"]["ensemble@0.5"]["all"]["ndcg@10_ratio"]
    assert "ensemble / best SASRec-CE" in out["summary"]
    info = out["info"]
    assert info["adapter+merged@0.5"]["fraction"] == 0.5
    assert info["zero_shot+merged"]["fraction"] == 1.0  # no training, but it reads every user's recent shares
    assert info["sasrec+merged@0.5"]["kind"].startswith("ID-only")
    assert info["sasrec+merged@0.5"]["strategy"] == "trained on stories"
    assert info["sasrec_transfer+merged@0.5"]["strategy"] == "full"
    assert all(info[m]["histories"] == "merged" for m in models)
    users = {res["all"]["users"] for res in out["results"].values()}
    assert len(users) == 1 and min(users) > 0  # every model and baseline ranked on the same rows

    # A merged model's catalog holds the context scenario's items (inputs); it records its context.
    adapter = load_model(f"{tmp_path}/models/adapter+merged@0.5")
    assert adapter.catalog.scenarios == ["stories", "thrills"]
    assert adapter.config["training"]["histories"] == "merged" and adapter.config["training"]["context"] == ["thrills"]
    # SASRec transferred through item ids: the context items are the source's own, they keep rows.
    tuned = load_model(f"{tmp_path}/models/sasrec_transfer+merged@0.5")
    assert set(tuned.config["training"]["trainable_parameters"]) == {"item_ids", "user", "dynamics"}
    source = load_model(f"{tmp_path}/models/sasrec_source")
    assert set(source.catalog.item_ids) <= set(tuned.catalog.item_ids)
    with pytest.raises(ValueError, match="no text"):
        run_transfer(transfer_config(tiny_genres, tmp_path / "models/sasrec_source", tmp_path / "a",
                                     "transfer.strategy=adapter"))
    with pytest.raises(ValueError, match="also predicted"):
        run_transfer(transfer_config(tiny_genres, tmp_path / "models/pretrained", tmp_path / "x",
                                     "data.history=merged", "data.context=[stories]"))

    # The report compares each model with SASRec-CE trained on the same share of target users.
    md = open(out["paths"]["report"]).read()
    res = out["results"]
    ratio = res["adapter+merged@0.5"]["all"]["ndcg@10"]["value"] / res["sasrec+merged@0.5"]["all"]["ndcg@10"]["value"]
    row = next(line for line in md.splitlines() if line.startswith(f"| adapter+merged@0.5 | {min(users)} |"))
    assert f"{ratio:.2f}x" in row
    assert "## Summary" in md and "| 50% |" in md and "(vs sasrec" in md
    assert ("| zero_shot+merged | item texts + recent item shares of its training events (popularity dynamics); "
            "histories merged with the other scenarios |") in md
    assert all(info[m]["kind"].endswith("+ popularity dynamics") for m in models)
    assert load_model(f"{tmp_path}/models/zero_shot+merged").model.dyn_table.shape[2] == adapter.catalog.size
    assert "fraction_plot" not in out["paths"]  # one fraction: nothing to plot (see test_evaluation)
    metrics = json.loads(open(out["paths"]["metrics"]).read())
    assert metrics["references"] == ["popularity", "recent_popularity", "sasrec", "sasrec+merged",
                                     "sasrec_transfer+merged"]
    assert metrics["models"]["sasrec+merged@0.5"]["fraction"] == 0.5
    # Interest prediction for every model against the three baselines; interest transfer across
    # scenarios for the merged models, on the users each did not train on (zero-shot: all).
    assert set(metrics["interests"]["methods"]) == models | {"prior", "history", "recent"}
    assert metrics["interests"]["ratios"]["adapter+merged@0.5"]["prior"]["log_loss"]["value"] > 0
    # (This data's two scenarios share no user: the report says so; test_examples.py has the rows.)
    cross = metrics["cross_scenario_interests"]
    assert set(cross) == models
    assert all("no user has events in another scenario" in c["note"] for c in cross.values())
    assert "## Interest transfer across scenarios: adapter+merged@0.5" in md and "## Interest prediction" in md
    assert json.loads(open(f"{tmp_path}/evaluation/benchmark.json").read())["stage_seconds"]

    # MLflow: one benchmark run; each stage and the evaluation a child run, with its parameters,
    # validation curve by epoch, metrics and report.
    from interest_model import tracking

    client = tracking.client()
    parent = client.search_runs([tracking.experiment_id("benchmark")], f"attributes.run_name = '{tmp_path.name}'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.params["strategies"] == '["zero_shot", "adapter"]'
    children = client.search_runs([tracking.experiment_id(e) for e in ("pretrain", "transfer", "evaluate")],
                                  f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'")
    stages = [r for r in children if r.data.tags["interest.job"] in ("pretrain", "transfer")]
    assert len(stages) == 6 and len(children) == 7
    adapter_run = next(r for r in stages if r.info.run_name.endswith("-adapter+merged@0.5"))
    assert adapter_run.data.params["transfer.strategy"] == "adapter"
    curve = client.get_metric_history(adapter_run.info.run_id, "val_ndcg_at_10")
    assert [m.step for m in curve] == [0]  # one epoch
    evaluation = next(r for r in children if r.data.tags["interest.job"] == "evaluate")
    assert evaluation.data.metrics["adapter_merged_at_0.5.all.ndcg_at_10"] == pytest.approx(
        res["adapter+merged@0.5"]["all"]["ndcg@10"]["value"])
    assert {"evaluation/report.md", "evaluation/metrics.json"} <= {
        f.path for f in client.list_artifacts(evaluation.info.run_id, "evaluation")}

    # A rerun trains nothing: every stage's export matches its config.
    stages, _ = plan(cfg)
    assert len(stages) == 6 and all(is_done(stage) for _, _, stage in stages)

    # Serving: a history in the context scenario answers in the target scenario.
    online = OnlineModel(f"{tmp_path}/models/adapter+merged@0.5")
    thrill = next(i for i, s in zip(adapter.catalog.item_ids, adapter.catalog.scenario_items[1, 1:]) if s)
    answer = online.recommend_batch([{"history": [{"item_id": thrill, "scenario": "thrills"}], "scenario": "stories",
                                      "k": 3}])[0]
    stories = {i for i, s in zip(adapter.catalog.item_ids, adapter.catalog.scenario_items[0, 1:]) if s}
    assert len(answer["items"]) == 3 and {r["item_id"] for r in answer["items"]} <= stories


def test_benchmark_plans_every_target_side_model_on_each_history(tiny_prepared):
    cfg = BenchmarkConfig.load(CONFIGS / "benchmark_s2.yaml", [f"data.prepared={tiny_prepared}", "fractions=[1.0]"])
    assert cfg.histories == ["target", "merged"]
    stages, evaluate = plan(cfg)
    names = {name: stage for name, _, stage in stages}
    for name in ("adapter", "sasrec", "sasrec_transfer", "zero_shot"):
        assert names[name].data.history == "target" and names[f"{name}+merged"].data.history == "merged"
    assert names["pretrained"].data.history == names["sasrec_source"].data.history == "target"  # the source's own
    assert evaluate.references == ["popularity", "recent_popularity", "sasrec", "sasrec_transfer", "sasrec+merged",
                                   "sasrec_transfer+merged"]
    # Text + ID fusion: a second pretraining, with item ids, and every strategy transferred from it.
    ids = {name: stage for name, _, stage in plan(cfg.model_copy(update={"text_id": True}))[0]}
    assert ids["pretrained+ids"].model.use_item_ids and not ids["pretrained"].model.use_item_ids
    assert ids["adapter+ids+merged"].transfer.init_from.endswith("models/pretrained+ids")
    assert "pretrained+ids" not in plan(cfg.model_copy(update={"text_id": True}))[1].models
    # Popularity dynamics: the same, with model.item_dynamics.
    dyn = {name: stage for name, _, stage in plan(cfg.model_copy(update={"dynamics": True}))[0]}
    assert dyn["pretrained+dyn"].model.item_dynamics and not dyn["pretrained"].model.item_dynamics
    assert dyn["zero_shot+dyn"].transfer.init_from.endswith("models/pretrained+dyn")
    assert not dyn["sasrec"].model.item_dynamics and dyn["sasrec+dyn+merged"].model.item_dynamics
    assert dyn["sasrec_transfer+dyn"].transfer.init_from.endswith("models/sasrec_source+dyn")
    evaluated = plan(cfg.model_copy(update={"dynamics": True}))[1].models
    assert "sasrec+dyn" in evaluated and "sasrec_source+dyn" not in evaluated
    both = {name for name, _, _ in plan(cfg.model_copy(update={"dynamics": True, "text_id": True}))[0]}
    assert {"pretrained+ids+dyn", "adapter+ids+dyn+merged"} <= both
    # A variant: one more pretraining of ours (here another pooling), every strategy transferred
    # from it; SASRec-CE, which reads no text, once.
    var = {name: stage for name, _, stage in plan(cfg.model_copy(update={"variants": {"cls": [
        "model.item_encoder.pooling=cls"]}}))[0]}
    assert var["pretrained+cls"].model.item_encoder.pooling == "cls" and var["pretrained"].model.item_encoder.pooling == "mean"
    assert var["adapter+cls+merged"].transfer.init_from.endswith("models/pretrained+cls")
    assert not any(name.startswith("sasrec") and "+cls" in name for name in var)
    with pytest.raises(ValueError, match="taken"):
        BenchmarkConfig.load(CONFIGS / "benchmark_s2.yaml", ["variants={ids: [model.use_item_ids=true]}"])


def test_in_domain_benchmark_compares_item_representations_on_their_own_scenario(tiny_prepared, ray_cluster,
                                                                                  tmp_path):
    cache = f"embed.cache_dir={tmp_path.parent}/item-features"
    cfg = BenchmarkConfig.load(CONFIGS / "benchmark_ml1m.yaml", [
        f"data.prepared={tiny_prepared}", "data.scenarios=[shop-a]", f"out_dir={tmp_path}",
        f"pretrain.config={CONFIGS / 'pretrain_tiny.yaml'}", f"pretrain.set=[train.epochs=1, {cache}]",
        "models={text: [], sasrec: [model.use_text=false, model.use_item_ids=true]}",
        f"evaluate.set=[bootstrap=50, {cache}]", "ensemble=true"])
    out = run_benchmark(cfg)
    assert set(out["results"]) == {"text", "sasrec", "ensemble:text", "popularity", "recent_popularity",
                                   "text_similarity"}
    # The ensemble of text with SASRec-CE: text's weight the best of the validation search.
    chosen = json.loads(open(f"{tmp_path}/evaluation/benchmark.json").read())["ensembles"]["ensemble:text"]
    by_weight = chosen["valid_ndcg_by_weight"]
    assert len(by_weight) == 7 and chosen["members"] == ["text", "sasrec"]
    # ours is in every ensemble: its weight the best of 0.2 ... 1 (0, SASRec-CE alone, only recorded)
    assert chosen["weights"][0] > 0 and by_weight[f"{chosen['weights'][0]:g}"] == max(
        v for w, v in by_weight.items() if w != "0")
    best = json.loads(open(f"{tmp_path}/evaluation/benchmark.json").read())["best_ours"]
    assert [(r["fraction"], r["sasrec"]) for r in best] == [(1.0, "sasrec")] and best[0]["ours"] in {"text", "ensemble:text"}
    assert "### Best of ours against the best SASRec-CE" in out["summary"]
    assert out["info"]["ensemble:text"]["kind"] == f"ensemble: {chosen['weights'][0]:.2f} x text + " \
        f"{chosen['weights'][1]:.2f} x sasrec"
    assert "| ensemble:text | ensemble: " in out["summary"]
    assert (tmp_path / "evaluation_valid" / "report.md").exists()
    assert out["info"]["sasrec"]["strategy"] == "trained on shop-a" and out["info"]["text"]["epochs"] == 1
    row = next(line for line in out["summary"].splitlines() if line.startswith("| text |"))
    res = out["results"]
    assert f"{res['text']['all']['ndcg@10']['value'] / res['sasrec']['all']['ndcg@10']['value']:.2f}x" in row
    # Learning curves of every trained model: in metrics.json and as a plot.
    metrics = json.loads(open(out["paths"]["metrics"]).read())
    assert [h["epoch"] for h in metrics["curves"]["sasrec"]] == [0] and "val_ndcg@10" in metrics["curves"]["text"][0]
    assert "curves_plot" in out["paths"] and metrics["scenarios"] == ["shop-a"]
    with pytest.raises(ValueError, match="either transfer"):
        BenchmarkConfig.load(CONFIGS / "benchmark_ml1m.yaml", [f"transfer.config={CONFIGS / 'transfer_tiny.yaml'}"])
