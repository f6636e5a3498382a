"""The GPU check (run by benchmarks/gpu/run.sh): the training step of a large decoder item encoder,
plain PyTorch against our DeepSpeed strategy lever by lever, then ``interest pretrain`` through Ray
Train with a trainable decoder item encoder (full and LoRA) for a fixed number of steps. Every part
has its own time budget; after each part results.json and results.md under --out hold everything
measured so far (a part that fails or runs out of time says so in its row).

    python -m benchmarks.gpu.check --out $OUT --prepared data/prepared/demo   # one GPU
    python -m benchmarks.gpu.check --out /tmp/check --tiny                      # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_CONFIG = Path(__file__).with_name("pretrain_check.yaml")

# (preset, variants) in the order they run: what the goal needs first, then each lever.
GPU_STEP_PLAN = [
    ("qwen2-1.5b", ["plain", "ds-autocast-z2", "ds-bf16-z2", "ds-autocast-z3", "ds-autocast-z2-overlap",
                    "plain-padded", "plain-eager", "ds-autocast-z2-ckpt"]),
    ("qwen2-0.5b", ["plain", "ds-autocast-z2", "ds-bf16-z2", "ds-autocast-z3"]),
]
TINY_STEP_PLAN = [("tiny-qwen2", ["plain", "ds-autocast-z2", "ds-autocast-z3"])]
# The decoder item encoder pretrain trains: a Qwen2-0.5B shape, random weights (no hub here).
GPU_ENCODER = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
               "intermediate_size": 4864}
TINY_ENCODER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                "intermediate_size": 64}


def tail(text: str, n: int = 1500) -> str:
    return text[-n:].strip()


class Report:
    """results.json and results.md under ``out``, rewritten after every row."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta = out, meta
        self.parts: dict[str, list[dict]] = {"train_step": [], "pretrain": []}

    def add(self, part: str, row: dict) -> None:
        self.parts[part].append(row)
        self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps({**self.meta, **self.parts}, indent=1))
        (self.out / "results.md").write_text(self.markdown())

    def markdown(self) -> str:
        from benchmarks.bench_train_step import table

        m = self.meta
        lines = [f"# GPU check: {m['device']}", "", f"{m['started']}, mode {m['mode']}, commit {m['commit']}", ""]
        done = [r for r in self.parts["train_step"] if "error" not in r]
        failed = [r for r in self.parts["train_step"] if "error" in r]
        lines += ["## Training step: plain PyTorch against our DeepSpeed strategy", ""]
        lines += [table(done) if done else "(nothing measured)", "", goal_line(done), ""]
        lines += [f"- {r['preset']} {r['variant']}: {r['error']}" for r in failed]
        lines += ["", "## interest pretrain through Ray Train (decoder item encoder, fixed steps)", "",
                  "| encoder | fine-tuning | steps | samples/s (epoch with validation) | mean loss | validation NDCG@10 | "
                  "trainable params | wall s |", "|---|---|---|---|---|---|---|---|"]
        for r in self.parts["pretrain"]:
            if "error" in r:
                lines.append(f"| {r['encoder']} | {r['mode']} | - | - | - | - | - | {r.get('wall_s', '-')} |")
                lines.append(f"\n{r['mode']}: {r['error']}\n")
                continue
            lines.append(f"| {r['encoder']} | {r['mode']} | {r['steps']} | {r['samples_per_s']:.1f} | "
                         f"{r['loss']:.3f} | {r['val_ndcg@10']:.4f} | "
                         f"{r['trainable']:,} | {r['wall_s']:.0f} |")
        return "\n".join(lines) + "\n"


def goal_line(rows: list[dict]) -> str:
    """Issue 17's goal on the >= 1B encoder: the best DeepSpeed variant >= 0.95x the plain loop
    in tokens/s, at MFU >= 0.45."""
    goal = "Goal (our DeepSpeed strategy >= 0.95x plain PyTorch, MFU >= 0.45, on a >= 1B encoder)"
    big = [r for r in rows if r["params_non_embedding"] >= 1e9]
    plain = next((r for r in big if r["variant"] == "plain"), None)
    ds = [r for r in big if r["variant"].startswith("ds-")]
    if plain is None or not ds:
        return f"{goal}: not measured in this run."
    best = max(ds, key=lambda r: r["tokens_per_s"])
    ratio, mfu = best["tokens_per_s"] / plain["tokens_per_s"], best["mfu"] or 0.0
    met = ratio >= 0.95 and mfu >= 0.45
    return f"{goal}: {'met' if met else 'not met'}; best {best['variant']} at {ratio:.2f}x, MFU {mfu:.3f}."


def run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
    """(exit status, output) of ``cmd``; 124 when it ran out of time."""
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(1.0, timeout))
        return done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        return 124, out.decode(errors="replace") if isinstance(out, bytes) else out


def train_step_part(report: Report, plan, budget: float, per_variant: float, step_args: list[str],
                    one_process: bool = False) -> None:
    """Each variant in a process of its own (clean GPU memory figures); ``one_process``: each
    preset's variants in one (the tiny mode, where process start-up would dominate)."""
    deadline = time.monotonic() + budget
    jsonl = report.out / "train_step.jsonl"
    for preset, variants in plan:
        for group in ([variants] if one_process else [[v] for v in variants]):
            left = deadline - time.monotonic()
            if left < 5:
                for variant in group:
                    report.add("train_step", {"preset": preset, "variant": variant, "error": "skipped: part budget spent"})
                continue
            before = len(jsonl.read_text().splitlines()) if jsonl.exists() else 0
            rc, out = run([sys.executable, "benchmarks/bench_train_step.py", "--preset", preset, "--variants",
                           ",".join(group), "--json", str(jsonl), *step_args], min(per_variant * len(group), left))
            rows = {r["variant"]: r for r in map(json.loads, jsonl.read_text().splitlines()[before:])} if jsonl.exists() else {}
            for variant in group:
                if variant in rows:
                    report.add("train_step", rows[variant])
                else:
                    why = "out of time" if rc == 124 else f"exit {rc}"
                    report.add("train_step", {"preset": preset, "variant": variant, "error": f"{why}: {tail(out, 400)}"})
            print(f"train step {preset} {','.join(group)}: {'ok' if rc == 0 else f'failed ({rc})'}", flush=True)


def encoder_dir(root: Path, prepared: str, shape: dict) -> Path:
    """A random-init Qwen2-style encoder with a byte-level BPE tokenizer trained on the item texts
    (real text lengths without a hub download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2Model

    from interest_model.data.prepared import PreparedData

    out = root / "encoder"
    texts = PreparedData(prepared).items["text"].astype(str).tolist()
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8000, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    import torch

    torch.manual_seed(0)
    model = Qwen2Model(Qwen2Config(vocab_size=len(tok), max_position_embeddings=512, **shape))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def pretrain_part(report: Report, args, budget: float) -> None:
    deadline = time.monotonic() + budget
    shape = TINY_ENCODER if args.tiny else GPU_ENCODER
    name = "tiny-qwen2" if args.tiny else "qwen2-0.5b (random init)"
    try:
        enc = encoder_dir(report.out / "work", args.prepared, shape)
    except Exception as exc:  # noqa: BLE001 - the report says what failed; the other parts still run
        report.add("pretrain", {"encoder": name, "mode": "full", "error": f"encoder: {type(exc).__name__}: {exc}"})
        return
    for mode in ("full", "lora"):
        left = deadline - time.monotonic()
        if left < 10:
            report.add("pretrain", {"encoder": name, "mode": mode, "error": "skipped: part budget spent"})
            continue
        work = report.out / "work" / mode
        sets = [f"data.prepared={args.prepared}", f"model.item_encoder.model={enc}", f"run.name=gpu-check-{mode}",
                f"run.storage_path={work}/runs", f"export_dir={work}/model", f"embed.cache_dir={work}/features",
                f"train.max_steps={args.pretrain_steps}"]
        if mode == "lora":
            sets.append("encoder_lora={r: 16, alpha: 32}")
        if args.tiny:
            sets += ["scaling.use_gpu=false", "scaling.cpus_per_worker=1", "train.batch_size=8",
                     "model.num_negatives=16", "model.user_encoder.max_len=16", "train.eval_batch_size=64",
                     "model.item_encoder.gradient_checkpointing=true"]
        cmd = [sys.executable, "-m", "ray_jobs.pretrain", "--config", str(PRETRAIN_CONFIG)]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.monotonic()
        rc, out = run(cmd, left)
        wall = time.monotonic() - t0
        config = work / "model" / "config.json"
        if rc != 0 or not config.exists():
            why = "out of time" if rc == 124 else f"exit {rc}"
            report.add("pretrain", {"encoder": name, "mode": mode, "wall_s": round(wall), "error": f"{why}: {tail(out, 600)}"})
        else:
            training = json.loads(config.read_text())["training"]
            history = training["history"]  # one epoch: the steps, then validation
            report.add("pretrain", {
                "encoder": name, "mode": mode, "steps": history[-1]["step"], "train_seconds": training["train_seconds"],
                "samples_per_s": history[-1]["samples_per_s"],
                "loss": history[-1]["train_loss"],
                "val_ndcg@10": training["best"].get("val_ndcg@10", float("nan")),
                "trainable": sum(training["trainable_parameters"].values()), "wall_s": wall})
        print(f"pretrain {mode}: {'ok' if rc == 0 else f'failed ({rc})'} in {wall:.0f} s", flush=True)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--prepared", default=None, help="prepared data with an ML-1M source scenario (tiny: synthetic)")
    p.add_argument("--tiny", action="store_true", help="CPU, tiny models, a few steps: the script's own test")
    p.add_argument("--step-budget-s", type=float, default=None)
    p.add_argument("--pretrain-budget-s", type=float, default=None)
    p.add_argument("--pretrain-steps", type=int, default=None)
    args = p.parse_args(argv)
    out = Path(args.out)
    import torch

    gpu = torch.cuda.is_available()
    if not args.tiny and not gpu:
        p.error("no GPU here: run with --tiny for the CPU check of the script itself")
    if args.prepared is None:
        if not args.tiny:
            p.error("--prepared: prepared data with the ML-1M scenario (see benchmarks/gpu/run.sh)")
        from interest_model.data.engine import PandasEngine
        from interest_model.data.pipeline import run_prepare
        from interest_model.data.config import PrepareConfig
        from interest_model.data.synthetic import write_synthetic

        write_synthetic(out / "work" / "raw", seed=0)
        run_prepare(PrepareConfig.load(REPO / "ray_jobs/configs/tiny.yaml", [
            f"input.root={out}/work/raw", f"output_dir={out}/work/prepared"]), PandasEngine())
        args.prepared = str(out / "work" / "prepared")
    args.pretrain_steps = args.pretrain_steps or (2 if args.tiny else 40)
    meta = {"device": torch.cuda.get_device_name() if gpu else "CPU", "mode": "tiny" if args.tiny else "gpu",
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": commit(),
            "torch": torch.__version__}
    report = Report(out, meta)
    report.write()
    if args.tiny:
        train_step_part(report, TINY_STEP_PLAN, args.step_budget_s or 120, 60,
                        ["--items", "300", "--steps", "2", "--warmup", "1", "--batch", "4"], one_process=True)
    else:
        train_step_part(report, GPU_STEP_PLAN, args.step_budget_s or 250, 75, [])
    pretrain_part(report, args, args.pretrain_budget_s or (150 if args.tiny else 200))
    print(report.markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
