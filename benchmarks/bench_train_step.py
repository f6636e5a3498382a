"""Benchmark the training step with a trainable text encoder: our DeepSpeed strategy against a
plain single-process PyTorch loop on the same model and data, in one process.

The plain baseline is what a careful engineer writes by hand: fp32 master weights, torch autocast
to bf16 on GPU, fused AdamW. Both run the InterestModel forward (item encoder over the text tokens
of every item a step touches, user encoder, sampled softmax with logQ) and backward. Prints
samples/s, text tokens/s, MFU and the ratio DeepSpeed / plain (goal >= 0.95).

    python benchmarks/bench_train_step.py                       # CPU: a tiny BERT-style encoder
    python benchmarks/bench_train_step.py --preset qwen2-1.5b   # GPU: random-init 1.5B decoder
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interest_model.models.item_encoder import ItemEncoder  # noqa: E402
from interest_model.models.model import InterestModel, ModelConfig  # noqa: E402
from interest_model.models.user_encoder import UserEncoderConfig  # noqa: E402
from interest_model.training.config import DeepSpeedConfig  # noqa: E402
from interest_model.training.deepspeed_strategy import DeepSpeedStrategy  # noqa: E402

PRESETS = {
    # name: (architecture, hidden, layers, heads, kv heads, intermediate)
    "tiny-bert": ("bert", 64, 2, 2, 2, 256),
    "qwen2-0.5b": ("qwen2", 896, 24, 14, 2, 4864),
    "qwen2-1.5b": ("qwen2", 1536, 28, 12, 2, 8960),
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def build_encoder(preset: str, vocab: int, attn: str | None) -> ItemEncoder:
    from transformers import BertConfig, BertModel, Qwen2Config, Qwen2Model

    arch, hidden, layers, heads, kv, inter = PRESETS[preset]
    if arch == "bert":
        backbone = BertModel(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                        num_attention_heads=heads, intermediate_size=inter))
        pooling = "mean"
    else:
        kwargs = {"attn_implementation": attn} if attn else {}
        backbone = Qwen2Model(Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                          num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=inter,
                                          max_position_embeddings=512, **kwargs))
        pooling = "last"
    return ItemEncoder(backbone, pooling)


def make_model(args, seed: int = 0) -> tuple[InterestModel, int]:
    torch.manual_seed(seed)
    encoder = build_encoder(args.preset, args.vocab, "sdpa" if args.gpu else None)
    if args.gradient_checkpointing:
        encoder.backbone.activation_checkpointing_enable()
    cfg = ModelConfig(user_encoder=UserEncoderConfig(dim=256, layers=2, heads=4, dropout=0.0, max_len=args.seq_len),
                      loss="sampled", num_negatives=args.negatives)
    model = InterestModel(cfg, args.items + 1, 1, encoder.output_dim, item_encoder=encoder)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1000, args.vocab, (args.items + 1, args.text_len), generator=g)
    model.set_catalog(torch.ones(1, args.items + 1, dtype=torch.bool), item_tokens=tokens,
                      item_token_mask=torch.ones_like(tokens))
    params = sum(p.numel() for p in encoder.backbone.parameters()) - encoder.backbone.get_input_embeddings().weight.numel()
    return model, params


def batches(args, device):
    g = torch.Generator().manual_seed(2)
    for _ in range(args.warmup + args.steps):
        seq = torch.randint(1, args.items + 1, (args.batch, args.seq_len + 1), generator=g)
        yield {"items": seq[:, :-1].to(device), "targets": seq[:, 1:].to(device),
               "events": torch.zeros(args.batch, args.seq_len, dtype=torch.long, device=device),
               "scenario": torch.zeros(args.batch, dtype=torch.long, device=device)}


def encoded_items(batch, args) -> int:
    """Distinct items whose text the step encodes (history + targets + negatives, approx.)."""
    return int(torch.unique(torch.cat([batch["items"].flatten(), batch["targets"].flatten()])).numel()) + args.negatives


def run(args, step_fn, device) -> dict:
    times, tokens, samples = [], 0, 0
    for i, b in enumerate(batches(args, device)):
        if args.gpu:
            torch.cuda.synchronize()
        t = time.perf_counter()
        step_fn(b)
        if args.gpu:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            tokens += encoded_items(b, args) * args.text_len
            samples += args.batch
    total = sum(times)
    return {"samples_per_s": samples / total, "tokens_per_s": tokens / total, "step_s": float(np.median(times))}


def plain(args, device):
    model, params = make_model(args)
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=args.gpu)

    def step(b):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.gpu):
            loss = model(b["items"], b["events"], b["scenario"], b["targets"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run(args, step, device), params


def deepspeed_run(args, device):
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(29500 + os.getpid() % 1000)}.items():
        os.environ.setdefault(k, v)
    model, params = make_model(args)
    strategy = DeepSpeedStrategy(DeepSpeedConfig(zero_stage=args.zero_stage, precision="bf16" if args.gpu else "fp32"),
                                 args.batch, use_gpu=args.gpu)
    engine = strategy.setup(model.to(device), lr=1e-4, weight_decay=0.0, total_steps=10_000, warmup_steps=0)

    def step(b):
        loss = engine(b["items"], b["events"], b["scenario"], b["targets"])
        strategy.backward_and_step(loss)

    return run(args, step, device), params


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None, choices=sorted(PRESETS))
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=8)
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--negatives", type=int, default=128)
    p.add_argument("--vocab", type=int, default=32_000)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--zero-stage", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true")
    args = p.parse_args()
    args.gpu = torch.cuda.is_available()
    args.preset = args.preset or ("qwen2-1.5b" if args.gpu else "tiny-bert")
    args.batch = args.batch or (16 if args.gpu else 4)
    args.steps = args.steps or (20 if args.gpu else 5)
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if args.gpu else "cpu")
    device = torch.device("cuda" if args.gpu else "cpu")
    base, params = plain(args, device)
    if args.gpu:
        torch.cuda.empty_cache()
    ds, _ = deepspeed_run(args, device)
    name = torch.cuda.get_device_name() if args.gpu else "CPU"
    peak = next((tf for key, tf in PEAK_TFLOPS.items() if key in name), None)
    print(f"device {name}; encoder {args.preset} ({params / 1e6:.1f}M non-embedding params); batch {args.batch} "
          f"users x {args.seq_len} events, texts of {args.text_len} tokens, ZeRO-{args.zero_stage}")
    print(f"{'loop':<26}{'samples/s':>12}{'tokens/s':>14}{'MFU':>8}")
    for label, r in (("plain PyTorch (autocast)", base), ("DeepSpeed strategy", ds)):
        mfu = 6 * params * r["tokens_per_s"] / (peak * 1e12) if peak else float("nan")
        print(f"{label:<26}{r['samples_per_s']:>12.1f}{r['tokens_per_s']:>14,.0f}{mfu:>8.3f}")
    print(f"ratio DeepSpeed / plain (tokens/s): {ds['tokens_per_s'] / base['tokens_per_s']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
