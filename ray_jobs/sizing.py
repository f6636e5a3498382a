"""``interest sizing``: memory of full fine-tuning per text encoder size, from DeepSpeed's own
estimators, for the sizing guide (docs/cluster.md).

    interest sizing [--gpus 1 8] [--nodes 1]

Model states only (weights, gradients, Adam states under mixed precision): activations come on
top and depend on batch, text length and gradient checkpointing. The encoders are built from
their published shapes on the meta device, so nothing is downloaded or allocated.
"""

from __future__ import annotations

import argparse
from typing import Sequence

# name -> (transformers config class, its published shape)
ENCODERS = {
    "all-MiniLM-L6-v2 (0.02B)": ("BertConfig", dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                                    intermediate_size=1536)),
    "BGE/E5-base (0.1B)": ("BertConfig", {}),
    "Qwen2.5-0.5B": ("Qwen2Config", dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2)),
    "Qwen2.5-1.5B": ("Qwen2Config", dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2)),
    "Qwen2.5-7B": ("Qwen2Config", dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4)),
}
GIB = 1 << 30


def meta_model(kind: str, shape: dict):
    import torch
    import transformers

    cfg = getattr(transformers, kind)(**shape)
    with torch.device("meta"):
        return transformers.AutoModel.from_config(cfg)


def table(gpus: list[int], nodes: int = 1) -> list[dict]:
    from interest_model.training.deepspeed_strategy import estimate_model_states

    rows = []
    for name, (kind, shape) in ENCODERS.items():
        model = meta_model(kind, shape)
        for g in gpus:
            est = estimate_model_states(model, g, nodes)
            rows.append({"encoder": name, "params": est["params"]["total"], "gpus": g * nodes, **{
                f"{k}_{side}": v / GIB for k in ("zero2", "zero3", "zero3_offload") for side, v in est[k].items()}})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="interest sizing", description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 8], help="GPUs per node")
    p.add_argument("--nodes", type=int, default=1)
    args = p.parse_args(argv)
    print("| encoder | params | GPUs | ZeRO-2 GiB/GPU | ZeRO-3 GiB/GPU | ZeRO-3 + optimizer offload GiB/GPU "
          "(CPU GiB/node) |\n|---|---|---|---|---|---|")
    for r in table(args.gpus, args.nodes):
        print(f"| {r['encoder']} | {r['params'] / 1e9:.2f}B | {r['gpus']} | {r['zero2_gpu']:.1f} | {r['zero3_gpu']:.1f} "
              f"| {r['zero3_offload_gpu']:.1f} ({r['zero3_offload_cpu']:.0f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
