"""Helpers that write small input files and run the pipeline on them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from interest_model.data.config import PrepareConfig
from interest_model.data.engine import PandasEngine
from interest_model.data.pipeline import run_prepare


def write(path: Path, text: str | bytes, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        if crlf:
            text = text.replace("\n", "\r\n")
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def config(root: Path, out: Path, sources: list[dict], scenarios: list[dict] | None = None, **extra) -> PrepareConfig:
    data = {
        "input": {"root": str(root), "sources": sources},
        "scenarios": scenarios or [{"name": s["name"], "role": "source" if i == 0 else "target",
                                    "source": s["name"]} for i, s in enumerate(sources)],
        "pseudonymize": {"key": "test-key"},
        "kcore": {"user_k": 0, "item_k": 0},
        "output_dir": str(out),
        **extra,
    }
    return PrepareConfig.from_dict(data)


def run(cfg: PrepareConfig) -> dict:
    return run_prepare(cfg, PandasEngine())


def table(out: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(out / name)
