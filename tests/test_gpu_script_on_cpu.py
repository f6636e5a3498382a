"""benchmarks/gpu/run.sh, the prepared GPU check, in its tiny CPU mode against this session's
cluster: both parts run and report, the DeepSpeed levers and both ways of fine-tuning a decoder
item encoder through `interest pretrain` included (the GPU figures come from a GPU machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from interest_model import load_model
from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_the_gpu_check_runs_every_part_in_tiny_mode(ray_cluster, tiny_prepared, tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
           "PREPARED": str(tiny_prepared),
           "PYTHON": sys.executable}
    done = subprocess.run(["bash", "benchmarks/gpu/run.sh", "--tiny"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "tiny" and results["device"] == "CPU"

    steps = {r["variant"]: r for r in results["train_step"]}
    assert set(steps) == {"plain", "ds-autocast-z2", "ds-autocast-z3"}
    assert all("error" not in r and r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 for r in steps.values())
    md = (out / "results.md").read_text()
    assert "| tiny-qwen2 | plain |" in md and "1.00x |" in md and "| tiny-qwen2 | lora |" in md

    # interest pretrain through Ray Train: the decoder encoder fine-tuned in full, then with LoRA.
    runs = {r["mode"]: r for r in results["pretrain"]}
    assert set(runs) == {"full", "lora"} and all("error" not in r for r in runs.values()), results["pretrain"]
    assert all(r["steps"] == 2 and r["loss"] == r["loss"] for r in runs.values())  # max_steps; a finite loss
    assert runs["lora"]["trainable"] < runs["full"]["trainable"]
    from safetensors.torch import load_file

    initial = load_file(str(out / "work/encoder/model.safetensors"))
    key = "layers.0.self_attn.q_proj.weight"
    for mode in ("full", "lora"):
        model = load_model(out / "work" / mode / "model")  # LoRA merged in: a plain model directory
        assert model.config["text_trainable"] and model.model.loss_kind() == "sampled"
        assert not torch.equal(initial[key], model.encoder.backbone.state_dict()[key])  # the tuned encoder
        assert len(model.recommend(model.catalog.item_ids[:2], k=3)) == 3
    assert load_model(out / "work/lora/model").config["training"]["encoder_lora"]["r"] == 16
