"""The endpoint's forward pass: users' interest vectors, their scores over the live catalog and
each request's best rows, in one call, eager or compiled ahead of time (torch.export, then
AOTInductor).

Why one call, compiled: eager torch releases and retakes the GIL around every operation, and
in a serving replica, whose event loop wants the GIL about half the time, each hand-over costs
CPU and waits: beside a busy Python thread the eager pass cost several times its CPU alone, the
compiled one about the same (docs/serving_speed.md has the figures). A compiled call keeps the
GIL from start to end, so everything a batch needs is inside it (the scoring, the item bias, the
request masks, the top-k): beside a busy Python thread any torch operation after it cost far more
than alone. And since
it keeps the GIL, the replica runs such a batch on its event loop (``one_compiled_call`` in
``online/model.py``; ``serving/batcher.py``). Same numbers as the model's own functions
(``InterestModel.last_user_vector``, ``logits``; ``tests/test_online.py``).

Compiling needs a C++ compiler on the serving node and takes seconds (about 12 s for the demo's
model on 2 cores); a model that cannot be exported or compiled is served eagerly, with a
warning saying why. The compiled call reads its inputs as contiguous tensors (it does not check
strides): pass nothing sliced across its rows.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from interest_model.models.model import logits

log = logging.getLogger(__name__)

MAX_BATCH = 4096  # the largest batch the compiled ranker accepts (bigger ones run eagerly)


class Ranker(nn.Module):
    """``forward(items, events, scenarios, table, allowed, bias, targets, top) -> (users, best, rows, allowed_rows)``:

    items, events, scenarios [B, L]   right-padded histories, items as rows of ``table``
    table [T, D]                      the vectors history rows point at: the catalog's rows first
    allowed [B, R] bool               what each request may get among the catalog's first R rows
    bias [S, R]                       the model's item bias per scenario (zeros if it has none)
    targets [B]                       each request's scenario
    top [k]                           how many rows to return per request: its length (a shape,
                                      so one compiled ranker serves every k <= R)

    users [B, D] are ``InterestModel.last_user_vector``; best, rows [B, k] each request's k best
    scores, best first, and their rows among the first R of ``table``: scores are ``logits`` in
    the request's scenario, -inf where not allowed; allowed_rows [B] how many rows each request
    may get (its answer's length is at most that). (The gather from ``table`` is inside: the
    live catalog grows, so the table is an input, not a weight.)"""

    def __init__(self, model):
        super().__init__()
        self.user = model.user  # the user encoder only: the text encoder stays out of the compiled graph
        self.temperature = float(model.cfg.temperature)

    def forward(self, items, events, scenarios, table, allowed, bias, targets, top):
        users = F.normalize(self.user.last(*self.user.inputs(table[items], items, events, scenarios)), dim=-1)
        scores = logits(users, table[: allowed.shape[1]], self.temperature, bias[targets])
        best, rows = torch.topk(scores.masked_fill(~allowed, float("-inf")), top.shape[0], dim=1)
        return users, best, rows, allowed.sum(1)


class Compiled:
    """The compiled ranker, called as its loader's ``boxed_run``: positional tensors in, the
    outputs in order out. ``AOTICompiledModel.__call__`` parses its call spec (JSON) and walks the
    inputs and outputs as pytrees on every call, a noticeable share of a small batch's pass
    (docs/serving_speed.md)."""

    def __init__(self, loader):
        self.loader = loader

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return self.loader.boxed_run(list(tensors))  # a fresh list: boxed_run empties it


def compile_ranker(ranker: Ranker) -> tuple[Callable | None, str]:
    """(the ranker compiled, what happened); None when it cannot be compiled here, and the text
    says why. The compiled ranker takes histories of length 2 up to the model's history length
    (pad shorter ones: padding is masked), at most ``MAX_BATCH`` of them, R >= 2 rows and
    1 <= k <= R."""
    ranker = ranker.eval()
    dim, max_len = ranker.user.cfg.dim, ranker.user.cfg.max_len
    started = time.perf_counter()
    try:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        length = torch.export.Dim("length", min=2, max=max(2, max_len))
        table = torch.export.Dim("table", min=2)
        rows = torch.export.Dim("rows", min=2)
        scenarios = torch.export.Dim("scenarios", min=1)
        top = torch.export.Dim("k", min=1)
        example = (*(torch.zeros(2, 3, dtype=torch.long) for _ in range(3)),  # three tensors: export ties aliases
                   torch.randn(5, dim), torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 4),
                   torch.zeros(2, dtype=torch.long), torch.zeros(3))
        history = {0: batch, 1: length}
        shapes = (history, history, history, {0: table}, {0: batch, 1: rows}, {0: scenarios, 1: rows}, {0: batch},
                  {0: top})
        with torch.no_grad(), tempfile.TemporaryDirectory(prefix="interest-ranker-") as folder:
            program = torch.export.export(ranker, example, dynamic_shapes=shapes)
            package = torch._inductor.aoti_compile_and_package(program, package_path=str(Path(folder) / "ranker.pt2"))
            runner = torch._inductor.aoti_load_package(package)  # loaded: the package file may go
            runner = Compiled(runner.loader) if hasattr(runner, "loader") else runner
    except Exception as exc:  # no compiler, an operation export does not support, a history length < 3, ...
        status = f"eager: not compiled ({type(exc).__name__}: {str(exc)[:300]})"
        log.warning("ranker %s", status)
        return None, status
    return runner, f"compiled in {time.perf_counter() - started:.1f} s"
