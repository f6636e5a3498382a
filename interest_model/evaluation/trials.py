"""A hyperparameter search's trials, as a report reads them: the best completed trial on
validation (test metrics never enter the choice), the trials table, and the plot of validation
NDCG@10 against each parameter. Rows: one dict per trial (``trial``, ``params``, ``best``,
``epochs``, ``status``, ``model``, ``error``), as ``ray_jobs/tune.py`` collects them."""

from __future__ import annotations

from interest_model import io


class SearchFailed(RuntimeError):
    """No trial of a family completed: nothing to choose."""


def chosen(arm: str, rows: list[dict]) -> dict:
    """The best completed trial by validation NDCG@10 (test metrics never enter the choice)."""
    done = [r for r in rows if r["model"]]
    if not done:
        errors = [r["error"] for r in rows if r.get("error")]
        raise SearchFailed(f"no {arm} trial completed ({len(errors)} of {len(rows)} failed"
                           + (f"; first error: {errors[0]})" if errors else ")"))
    return max(done, key=lambda r: r["best"])


def trials_markdown(arm: str, rows: list[dict]) -> str:
    keys = sorted({k for r in rows for k in r["params"]})
    head = ["trial", *keys, "val NDCG@10", "epochs", "status"]
    lines = [f"### Trials: {arm}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [_short(r["params"].get(k)) for k in keys]
        lines.append("| " + " | ".join([str(r["trial"]), *vals, f"{r['best']:.4f}", str(r["epochs"]), r["status"]]) + " |")
    return "\n".join(lines) + "\n"


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def plot_params(rows_by_arm: dict[str, list[dict]], out_dir: str) -> str | None:
    """``out_dir``/tune_params.png: validation NDCG@10 against each numeric parameter (log axis
    for spans over 10x), the parameters ordered by how strongly they rank with the metric
    (|Spearman|). ``out_dir`` may be a URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    panels = []
    for arm, rows in rows_by_arm.items():
        df = pd.DataFrame([{**r["params"], "_metric": r["best"]} for r in rows if r["best"] == r["best"]])
        for key in [c for c in df.columns if c != "_metric"]:
            x = pd.to_numeric(df[key], errors="coerce")
            if x.notna().sum() >= 2 and x.nunique() > 1:
                panels.append((abs(x.corr(df["_metric"], method="spearman")), arm, key, x, df["_metric"]))
            elif df[key].nunique() > 1:  # categorical: metric per value
                panels.append((0.0, arm, key, df[key].astype(str), df["_metric"]))
    if not panels:
        return None
    panels.sort(key=lambda p: -(p[0] if p[0] == p[0] else 0))
    panels = panels[:6]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (rho, arm, key, x, y) in zip(axes[0], panels):
        ax.scatter(x, y, s=18)
        if x.dtype.kind == "f" and x.min() > 0 and x.max() / x.min() > 10:
            ax.set_xscale("log")
        ax.set_title(f"{arm}: {key}" + (f" (|rho| {rho:.2f})" if rho == rho and rho else ""), fontsize=8)
        ax.set_ylabel("best val NDCG@10", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    with io.local_output(out_dir) as local:
        fig.savefig(local / "tune_params.png", dpi=120)
    plt.close(fig)
    return io.join(out_dir, "tune_params.png")

