"""Training steps against catalog size: steps/s of one training step (forward, backward, clipping,
optimizer step) of the ID, text and text + ID models at each catalog size, with the sampled
softmax (in-batch plus uniform negatives, logQ-corrected; the id table's gradients sparse, so
the optimizer updates the rows a step read) and, where it fits, the full softmax. Everything runs
in this one process; each figure is also given as a ratio to the smallest catalog's, same model
and loss (goal: at least 0.5 at 1M items against 4K).

    python benchmarks/bench_catalog.py --items 4000 100000 1000000 --out outputs/bench/catalog

Text features are random vectors of the embedded encoder's width (the text tower reads cached
features, as training with a frozen encoder does); histories and targets are uniform over the
catalog. Writes catalog.json and catalog.md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interest_model.models.model import InterestModel, ModelConfig  # noqa: E402
from interest_model.training.optim import clip_grad_norm, make_optimizer  # noqa: E402

KINDS = {"id": (True, False), "text": (False, True), "text+id": (True, True)}


def steps_per_s(kind: str, items: int, loss: str, args) -> float:
    use_ids, use_text = KINDS[kind]
    torch.manual_seed(0)
    model = InterestModel(ModelConfig(use_item_ids=use_ids, use_text=use_text, loss=loss,
                                      num_negatives=args.negatives), items + 1, 1, args.text_dim)
    if use_text:
        model.item_text = torch.randn(items + 1, args.text_dim)
    opt = make_optimizer(model, 1e-3, 0.01)
    hist = torch.randint(1, items + 1, (args.batch, args.seq_len))
    targets = torch.randint(1, items + 1, (args.batch, args.seq_len))
    events, scenario = torch.ones_like(hist), torch.zeros(args.batch, dtype=torch.long)

    def step() -> None:
        loss_value = model(hist, events, scenario, targets)
        opt.zero_grad(set_to_none=True)
        loss_value.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    return args.steps / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, nargs="+", default=[4_000, 100_000, 1_000_000])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--full-max-items", type=int, default=100_000, help="the full softmax up to this catalog")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--negatives", type=int, default=512)
    p.add_argument("--text-dim", type=int, default=384)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="outputs/bench/catalog")
    args = p.parse_args()
    rows = []
    for kind in args.kinds:
        for loss in ("sampled", "full"):
            base = None
            for items in sorted(args.items):
                if loss == "full" and items > args.full_max_items:
                    continue
                rate = steps_per_s(kind, items, loss, args)
                base = base or rate
                rows.append({"model": kind, "loss": loss, "items": items, "steps_per_s": round(rate, 3),
                             "vs_smallest": round(rate / base, 2)})
                print(f"{kind:<8}{loss:<9}{items:>10,}  {rate:7.2f} steps/s  {rate / base:5.2f}x", flush=True)
    md = ["| model | loss | items | steps/s | vs the smallest catalog |", "|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['loss']} | {r['items']:,} | {r['steps_per_s']:.2f} | {r['vs_smallest']:.2f}x |"
           for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "catalog.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    (out / "catalog.md").write_text("\n".join(md) + "\n")
    print("\n" + "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
