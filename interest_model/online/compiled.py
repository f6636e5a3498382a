"""The user encoding compiled ahead of time for serving (torch.export, then AOTInductor).

Why: eager torch releases and retakes the GIL around every operation. In a serving process the
encoding runs in a worker thread beside an event loop that holds the GIL about half the time,
and each hand-over costs CPU and waits. Measured in one process (README, "Serving speed"): 16
histories of 20 events cost 79 µs of CPU per user alone and 419 µs beside a busy Python thread,
eager; compiled, 41 and 43 µs. The compiled encoder is one native call with the same numbers as
``InterestModel.last_user_vector`` (to 1e-7; ``tests/test_online.py`` compares them).

Compiling needs a C++ compiler on the serving node and takes seconds (about 12 s for the demo's
model on 2 cores); a model that cannot be exported or compiled is served eagerly, with a
warning saying why.
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

log = logging.getLogger(__name__)

MAX_BATCH = 4096  # the largest batch the compiled encoder accepts (bigger ones run eagerly)


class _LastUserVector(nn.Module):
    """``InterestModel.last_user_vector`` from the user encoder's inputs (the gather from the
    catalog's vectors stays outside: the live catalog grows)."""

    def __init__(self, model):
        super().__init__()
        self.user = model.user

    def forward(self, vecs, mask, scenario, events):
        return F.normalize(self.user.last(vecs, mask, scenario, events), dim=-1)


def compile_user_encoder(model) -> tuple[Callable | None, str]:
    """(a callable, what happened): the callable takes (vecs [B, L, D] float, mask [B, L] bool,
    scenarios [B, L], events [B, L]) and gives [B, D]; it is None when the model cannot be
    compiled here, and the text says why. L is at most the model's history length and at least
    2 (pad shorter histories: padding is masked)."""
    module = _LastUserVector(model).eval()
    dim, max_len = model.user.cfg.dim, model.user.cfg.max_len
    started = time.perf_counter()
    try:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        length = torch.export.Dim("length", min=2, max=max(2, max_len))
        example = (torch.randn(2, 3, dim), torch.ones(2, 3, dtype=torch.bool),
                   torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
        shapes = tuple({0: batch, 1: length} for _ in example)
        with torch.no_grad(), tempfile.TemporaryDirectory(prefix="interest-encoder-") as folder:
            program = torch.export.export(module, example, dynamic_shapes=shapes)
            package = torch._inductor.aoti_compile_and_package(program, package_path=str(Path(folder) / "encoder.pt2"))
            runner = torch._inductor.aoti_load_package(package)  # loaded: the package file may go
    except Exception as exc:  # no compiler, an operation export does not support, a history length < 3, ...
        status = f"eager: not compiled ({type(exc).__name__}: {str(exc)[:300]})"
        log.warning("user encoder %s", status)
        return None, status
    return runner, f"compiled in {time.perf_counter() - started:.1f} s"
