"""Benchmark the training step with a trainable text encoder: our DeepSpeed strategy against a
plain single-process PyTorch loop on the same model and data, one variant (lever) at a time.

The plain baseline is what a careful engineer writes by hand: fp32 master weights, torch autocast
to bf16, fused AdamW (GPU), SDPA attention. Every variant runs the InterestModel forward (item
encoder over the text tokens of every item a step touches, user encoder, sampled softmax with
logQ) and backward. Item texts have varied lengths (stored padded to --text-len, as the catalog
keeps them); tokens/s counts real text tokens. Prints samples/s, tokens/s, MFU, peak memory and
each variant's ratio to the plain loop run in the same command (goal: DeepSpeed >= 0.95).

    python benchmarks/bench_train_step.py                        # CPU: a tiny BERT-style encoder
    python benchmarks/bench_train_step.py --preset qwen2-1.5b    # GPU: random-init 1.5B decoder
    python benchmarks/bench_train_step.py --variants plain,ds-autocast-z2 --json out.jsonl

benchmarks/gpu/run.sh runs each variant in a process of its own (clean memory figures).
"""

from __future__ import annotations

import argparse
import json
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
    "tiny-qwen2": ("qwen2", 64, 2, 4, 2, 128),
    "qwen2-0.5b": ("qwen2", 896, 24, 14, 2, 4864),
    "qwen2-1.5b": ("qwen2", 1536, 28, 12, 2, 8960),
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16

# Each lever against the plain loop. "loop": plain or ds (our DeepSpeedStrategy); "precision":
# DeepSpeedConfig.precision (autocast: fp32 weights + torch.autocast, as the plain loop; bf16:
# bf16 weights with fp32 master copies); "padded": every text costs --text-len tokens (what the
# encoder's dropping of padding columns saves); "attn": the attention kernel; "ckpt": activation
# checkpointing of the encoder; "zero" and the ZeRO comm settings as in DeepSpeedConfig.
VARIANTS: dict[str, dict] = {
    "plain": {"loop": "plain"},
    "plain-padded": {"loop": "plain", "padded": True},
    "plain-eager": {"loop": "plain", "attn": "eager"},
    "ds-bf16-z2": {"loop": "ds", "precision": "bf16", "zero": 2},
    "ds-autocast-z2": {"loop": "ds", "precision": "autocast", "zero": 2},
    "ds-autocast-z2-overlap": {"loop": "ds", "precision": "autocast", "zero": 2, "overlap_comm": True,
                               "contiguous_gradients": True},
    "ds-autocast-z2-ckpt": {"loop": "ds", "precision": "autocast", "zero": 2, "ckpt": True},
    "ds-autocast-z3": {"loop": "ds", "precision": "autocast", "zero": 3},
}
DEFAULT_VARIANTS = "plain,ds-autocast-z2"


def build_encoder(preset: str, vocab: int, attn: str | None) -> ItemEncoder:
    from transformers import BertConfig, BertModel, Qwen2Config, Qwen2Model

    arch, hidden, layers, heads, kv, inter = PRESETS[preset]
    kwargs = {"attn_implementation": attn} if attn else {}
    if arch == "bert":
        backbone = BertModel(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                        num_attention_heads=heads, intermediate_size=inter, **kwargs))
        pooling = "mean"
    else:
        backbone = Qwen2Model(Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                          num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=inter,
                                          max_position_embeddings=512, **kwargs))
        pooling = "last"
    return ItemEncoder(backbone, pooling)


def text_lengths(args) -> torch.Tensor:
    """Every item's text length: from a quarter of --text-len to all of it (seeded)."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(max(1, args.text_len // 4), args.text_len + 1, (args.items + 1,), generator=g)


def item_texts(args) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask of every item, right-padded to --text-len (with --padded every token
    counts as text: the cost of encoding the padding too)."""
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(1000, args.vocab, (args.items + 1, args.text_len), generator=g)
    lengths = torch.full_like(args.lengths, args.text_len) if args.padded else args.lengths
    mask = (torch.arange(args.text_len)[None, :] < lengths[:, None]).long()
    return tokens * mask, mask


def make_model(args, device, seed: int = 0) -> tuple[InterestModel, int]:
    torch.manual_seed(seed)
    with device:  # built where it runs: a 1.5B random init on CPU alone takes minutes
        encoder = build_encoder(args.preset, args.vocab, args.attn)
        if args.ckpt:
            encoder.backbone.gradient_checkpointing_enable()
        cfg = ModelConfig(user_encoder=UserEncoderConfig(dim=256, layers=2, heads=4, dropout=0.0, max_len=args.seq_len),
                          loss="sampled", num_negatives=args.negatives)
        model = InterestModel(cfg, args.items + 1, 1, encoder.output_dim, item_encoder=encoder)
    tokens, mask = item_texts(args)
    model.set_catalog(torch.ones(1, args.items + 1, dtype=torch.bool), item_tokens=tokens, item_token_mask=mask)
    params = sum(p.numel() for p in encoder.backbone.parameters()) - encoder.backbone.get_input_embeddings().weight.numel()
    return model.to(device), params


def batches(args, device):
    g = torch.Generator().manual_seed(2)
    for _ in range(args.warmup + args.steps):
        seq = torch.randint(1, args.items + 1, (args.batch, args.seq_len + 1), generator=g)
        yield {"items": seq[:, :-1].to(device), "targets": seq[:, 1:].to(device),
               "events": torch.zeros(args.batch, args.seq_len, dtype=torch.long, device=device),
               "scenario": torch.zeros(args.batch, dtype=torch.long, device=device)}


def text_tokens(batch, args) -> int:
    """Real text tokens the step encodes: distinct history and target items (the sampled
    negatives add about --negatives more items of the same mean length)."""
    items = torch.unique(torch.cat([batch["items"].flatten(), batch["targets"].flatten()])).cpu()
    return int(float(args.lengths[items].float().mean()) * (items.numel() + args.negatives))


def timed(args, step_fn, device) -> dict:
    gpu = device.type == "cuda"
    times, tokens, samples = [], 0, 0
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    for i, b in enumerate(batches(args, device)):
        if gpu:
            torch.cuda.synchronize()
        t = time.perf_counter()
        step_fn(b)
        if gpu:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            tokens += text_tokens(b, args)
            samples += args.batch
    total = sum(times)
    return {"samples_per_s": samples / total, "tokens_per_s": tokens / total, "step_s": float(np.median(times)),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None}


def plain(args, device) -> tuple[dict, int]:
    model, params = make_model(args, device)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=device.type == "cuda")

    def step(b):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(b["items"], b["events"], b["scenario"], b["targets"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(args, step, device), params


def deepspeed_loop(args, device) -> tuple[dict, int]:
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(29500 + os.getpid() % 1000)}.items():
        os.environ.setdefault(k, v)
    model, params = make_model(args, device)
    gpu = device.type == "cuda"
    ds = DeepSpeedConfig(zero_stage=args.zero, precision=args.precision, overlap_comm=args.overlap_comm,
                         contiguous_gradients=args.contiguous_gradients)
    strategy = DeepSpeedStrategy(ds, args.batch, use_gpu=gpu)
    engine = strategy.setup(model, lr=1e-4, weight_decay=0.0, total_steps=10_000, warmup_steps=0)

    def step(b):
        loss = engine(b["items"], b["events"], b["scenario"], b["targets"])
        strategy.backward_and_step(loss)

    return timed(args, step, device), params


def run_variant(name: str, base: argparse.Namespace, device: torch.device) -> dict:
    spec = {"padded": False, "attn": "sdpa" if device.type == "cuda" else None, "ckpt": False, "zero": 2,
            "precision": "autocast", "overlap_comm": None, "contiguous_gradients": None, **VARIANTS[name]}
    args = argparse.Namespace(**{**vars(base), **spec})
    args.lengths = text_lengths(args)
    result, params = (plain if spec["loop"] == "plain" else deepspeed_loop)(args, device)
    name_of_device = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    peak = next((tf for key, tf in PEAK_TFLOPS.items() if key in name_of_device), None)
    # Model FLOPs: 6 x non-embedding parameters per text token (recomputation not counted).
    mfu = 6 * params * result["tokens_per_s"] / (peak * 1e12) if peak else None
    return {"variant": name, "preset": base.preset, "device": name_of_device, "params_non_embedding": params,
            "batch": base.batch, "seq_len": base.seq_len, "text_len": base.text_len, "steps": base.steps,
            **result, "mfu": mfu, "spec": spec}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    """Markdown: one row per variant, with its ratio to the plain loop of the same preset."""
    base = {r["preset"]: r["tokens_per_s"] for r in rows if r["variant"] == "plain"}
    out = ["| encoder | variant | samples/s | tokens/s | MFU | peak GiB | vs plain |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["tokens_per_s"] / base[r["preset"]] if r["preset"] in base else None
        out.append(f"| {r['preset']} | {r['variant']} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:,.0f} | "
                   f"{_fmt(r['mfu'], '.3f')} | {_fmt(r['peak_gib'], '.1f')} | "
                   f"{'-' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None, choices=sorted(PRESETS))
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=8)
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--negatives", type=int, default=128)
    p.add_argument("--vocab", type=int, default=32_000)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None, help="append one JSON line per variant to this file")
    args = p.parse_args(argv)
    gpu = torch.cuda.is_available()
    args.preset = args.preset or ("qwen2-1.5b" if gpu else "tiny-bert")
    args.batch = args.batch or (16 if gpu else 4)
    args.steps = args.steps or (20 if gpu else 5)
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if gpu else "cpu")
    device = torch.device("cuda" if gpu else "cpu")
    rows = []
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name not in VARIANTS:
            p.error(f"unknown variant {name!r} (one of {', '.join(VARIANTS)})")
        rows.append(run_variant(name, args, device))
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
        if gpu:
            torch.cuda.empty_cache()
    print(f"device {rows[0]['device']}; encoder {args.preset} ({rows[0]['params_non_embedding'] / 1e6:.1f}M "
          f"non-embedding params); batch {args.batch} users x {args.seq_len} events, texts up to {args.text_len} tokens")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
