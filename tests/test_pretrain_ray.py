"""Distributed pretraining on Ray Train with DeepSpeed, on the tiny synthetic data."""

import pytest

from interest_model import load_model
from ray_jobs.pretrain import run_pretrain
from tests.conftest import pretrain_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def check_two_worker_run(out: dict) -> None:
    """A run on two workers lowered its loss, validated every user on every worker and exported a
    model consolidated from the ZeRO shards that recommends."""
    losses = [m["train_loss"] for m in sorted(out["history"], key=lambda m: m["epoch"])]
    assert losses[-1] < losses[0]
    assert out["best"]["val_count"] == 40  # every source-scenario user validated, on every worker
    model = load_model(out["export_dir"])
    assert model.config["training"]["best"]["epoch"] == out["best"]["epoch"]
    recs = model.recommend(model.catalog.item_ids[:3], k=5, scenario="shop-a")
    assert len(recs) == 5 and not {r["item_id"] for r in recs} & set(model.catalog.item_ids[:3])


def fails_once(build, marker: str, at_step: int):
    """``build`` (a job's model builder), but on the last of two workers the model's training
    forward raises once, at its ``at_step``-th call, as a worker that dies mid-step would
    (``marker`` records that it did; a restarted worker finds it and trains on). A closure:
    Ray ships it to the workers by value."""

    def build_failing(*args, **kwargs):
        import os

        import ray.train

        model = build(*args, **kwargs)
        try:
            rank = ray.train.get_context().get_world_rank()
        except Exception:  # the driver's own copy  # noqa: BLE001
            return model
        if rank != 1 or os.path.exists(marker):
            return model
        forward, calls = model.forward, [0]

        def forward_or_fail(*a, **k):
            if model.training:
                calls[0] += 1
                if calls[0] == at_step:
                    with open(marker, "w") as f:
                        f.write(f"worker {rank} failed at step {at_step}\n")
                    raise RuntimeError(f"injected fault: worker {rank} at step {at_step}")
            return forward(*a, **k)

        model.forward = forward_or_fail
        return model

    return build_failing


def test_a_failed_worker_of_a_zero3_run_resumes_from_the_last_checkpoint(ray_cluster, tiny_prepared, tmp_path,
                                                                          monkeypatch):
    # 40 sequences, 2 workers (ZeRO-3: parameters, gradients and optimizer states sharded), batch
    # 16: 2 steps per epoch. A worker fails in step 5 (epoch 2), after the checkpoint of epoch 1
    # (step 4): the run restarts there from the sharded checkpoint and does steps 5-6 only.
    import ray_jobs.pretrain

    marker = tmp_path / "failed"
    monkeypatch.setattr(ray_jobs.pretrain, "pretrain_model", fails_once(ray_jobs.pretrain.pretrain_model, str(marker), 5))
    cfg = pretrain_config(tiny_prepared, tmp_path, "scaling.num_workers=2", "deepspeed.zero_stage=3",
                          "train.epochs=3", "run.name=drill", "run.max_failures=1")
    out = run_pretrain(cfg)
    last = out["last"]
    assert marker.exists()  # it did fail
    assert last["epoch"] == 2 and last["step"] == 6
    assert last["start_step"] == 4 and last["steps_this_run"] == 2
    assert [h["epoch"] for h in out["history"]] == [0, 1, 2]  # the curve spans the restart
    check_two_worker_run(out)


def test_rerunning_the_same_run_resumes(ray_cluster, tiny_prepared, tmp_path):
    first = run_pretrain(pretrain_config(tiny_prepared, tmp_path, "train.epochs=1", "run.name=again"))
    assert first["last"]["step"] == 3 and first["last"]["start_step"] == 0  # 40 / 16 -> 3 steps/epoch
    second = run_pretrain(pretrain_config(tiny_prepared, tmp_path, "train.epochs=2", "run.name=again"))
    assert second["last"]["epoch"] == 1
    assert second["last"]["start_step"] == 3 and second["last"]["steps_this_run"] == 3


def test_missing_prepared_data_is_a_clear_error(ray_cluster, tmp_path):
    with pytest.raises(FileNotFoundError, match="run `interest prepare` first"):
        run_pretrain(pretrain_config(tmp_path / "nothing", tmp_path))


def test_item_features_by_batch_inference_are_cached(ray_cluster, tmp_path):
    import numpy as np

    from interest_model.models.item_encoder import ItemEncoder, ItemEncoderConfig, load_tokenizer
    from interest_model.models.features import EmbedConfig, cache_key, encode_locally
    from ray_jobs.embed import item_features
    from tests.models import tiny_model_dir

    path = tiny_model_dir(tmp_path, "bert")
    cfg = ItemEncoderConfig(model=str(path), max_length=16)
    # Chunks of 4 items over 2 actors, batches of 3: vectors arrive in any order.
    embed = EmbedConfig(cache_dir=str(tmp_path / "cache"), batch_size=3, actors=2, cpus_per_actor=0.5, local_below=0,
                        chunk_items=4)
    texts = [f"Title: item {i}; Genres: g{i % 3}" for i in range(10)]
    assert encode_locally(len(texts), cfg, embed.model_copy(update={"local_below": 11}))
    assert not encode_locally(len(texts), cfg, embed)
    feats = item_features(texts, cfg, embed)
    assert feats.shape == (11, 32) and not feats[0].any()
    direct = ItemEncoder.from_config(cfg).encode(texts, load_tokenizer(str(path)), max_length=16)
    assert np.allclose(feats[1:], direct.numpy(), atol=1e-5)  # in catalog order despite 2 actors
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npy"  # the parts joined and removed
    assert np.array_equal(item_features(texts, cfg, embed), feats)  # from the cache
    # A small catalog of a small encoder: in this process, the same features.
    local = item_features(texts, cfg, embed.model_copy(update={"local_below": 11, "cache_dir": str(tmp_path / "l")}))
    assert np.allclose(local, feats, atol=1e-5)
    assert cache_key(texts[:-1] + ["changed"], cfg) != cache_key(texts, cfg)
    assert cache_key(texts, cfg.model_copy(update={"pooling": "cls"})) != cache_key(texts, cfg)


def test_item_features_resume_from_the_chunks_a_stopped_run_saved(tmp_path):
    import numpy as np

    from interest_model.models.features import EmbedConfig, Parts, cache_path
    from interest_model.models.item_encoder import ItemEncoderConfig
    from ray_jobs.embed import item_features
    from tests.models import tiny_model_dir

    cfg = ItemEncoderConfig(model=str(tiny_model_dir(tmp_path, "bert")), max_length=16)
    embed = EmbedConfig(cache_dir=str(tmp_path / "cache"), batch_size=4, local_below=100, chunk_items=3)
    texts = [f"Title: item {i}; Genres: g{i % 3}" for i in range(10)]
    fresh = item_features(texts, cfg, embed.model_copy(update={"cache_dir": str(tmp_path / "fresh")}))
    # A run stopped after chunks 0 and 2 (items 1-3 and 7-9): marked vectors, so a rerun that
    # encoded them again would show.
    parts = Parts(cache_path(texts, cfg, embed), len(texts), 3)
    parts.save(0, np.full((3, 32), 7.0, dtype=np.float32))
    parts.save(2, fresh[7:10])
    assert parts.done() == [0, 2] and list(parts.rows(3)) == [10]
    feats = item_features(texts, cfg, embed)
    assert (feats[1:4] == 7.0).all()  # kept, not encoded again
    assert np.allclose(feats[4:], fresh[4:], atol=1e-5) and not feats[0].any()
    assert not parts.folder.exists()
    # Stopped after its last chunk, before the join: nothing left to encode, the parts joined.
    full = Parts(cache_path(texts, cfg, embed), len(texts), 3)
    cache_path(texts, cfg, embed).unlink()
    for k in range(full.count):
        full.save(k, feats[list(full.rows(k))])
    assert np.array_equal(item_features(texts, cfg, embed), feats)
    with pytest.raises(ValueError, match="3 items"):
        parts.save(1, np.zeros((2, 32), dtype=np.float32))


def test_embed_job_fills_the_cache_the_training_jobs_read(ray_cluster, tiny_prepared, tmp_path, capsys):
    from interest_model.data.prepared import PreparedData, item_texts
    from interest_model.models.features import EmbedConfig, cache_path
    from interest_model.models.item_encoder import ItemEncoderConfig
    from ray_jobs import cli
    from tests.models import tiny_model_dir

    model = tiny_model_dir(tmp_path, "bert")
    args = ["--set", f"items={tiny_prepared}", "--set", "scenarios=[shop-a]", "--set", f"text_encoder.model={model}",
            "--set", "text_encoder.max_length=16", "--set", f"embed.cache_dir={tmp_path / 'cache'}"]
    assert cli.main(["embed", "--config", "ray_jobs/configs/embed_demo.yaml", *args]) == 0
    texts = PreparedData(str(tiny_prepared)).catalog(["shop-a"]).texts
    assert item_texts(str(tiny_prepared), ["shop-a"]) == texts
    cache = cache_path(texts, ItemEncoderConfig(model=str(model), max_length=16, pooling="mean"),
                       EmbedConfig(cache_dir=str(tmp_path / "cache")))
    assert cache.is_file() and f"{len(texts):,} items x 32 features" in capsys.readouterr().out
    assert cli.main(["embed", "--config", "ray_jobs/configs/embed_demo.yaml", *args[:2],
                     "--set", "scenarios=[nowhere]"]) == 2
    assert "nowhere" in capsys.readouterr().err
