"""Every DeepSpeed call of the project, behind one object: config, initialize, backward/step,
save/load, and consolidation of a (possibly ZeRO-sharded) checkpoint into one fp32 state dict.

Works under any launcher that has set up torch.distributed (Ray Train does); on CPU it uses
gloo and a plain torch AdamW (DeepSpeed's fused/CPU Adam would JIT-compile first).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

from interest_model.training.config import DeepSpeedConfig
from interest_model.training.loop import batch_loss
from interest_model.training.optim import Schedule, clip_grad_norm, make_optimizer, make_scheduler, sparse_parameters


def import_deepspeed():
    """DeepSpeed, imported with MLflow hidden: its autotuner imports MLflow whenever it is
    installed, which is most of DeepSpeed's import time in every training worker (the results
    page has the figures), and this project never autotunes. A later ``import mlflow`` in the
    same process works as usual."""
    if "deepspeed" in sys.modules or "mlflow" in sys.modules:
        import deepspeed

        return deepspeed
    sys.modules["mlflow"] = None  # type: ignore[assignment]  # `import mlflow` raises ImportError
    try:
        import deepspeed
    finally:
        if "mlflow" in sys.modules and sys.modules["mlflow"] is None:
            del sys.modules["mlflow"]
    return deepspeed


class DeepSpeedStrategy:
    TAG = "ckpt"

    def __init__(self, cfg: DeepSpeedConfig, micro_batch_size: int, use_gpu: bool):
        self.cfg = cfg
        self.micro_batch_size = micro_batch_size
        self.use_gpu = use_gpu
        self.engine = None
        self.own_clipping = False

    @property
    def bf16(self) -> bool:
        """bf16 weights (DeepSpeed's bf16 mode)."""
        return self.cfg.precision == "bf16" or (self.cfg.precision == "auto" and self.use_gpu)

    def ds_config(self, world_size: int) -> dict[str, Any]:
        cfg = self.cfg
        zero: dict[str, Any] = {"stage": cfg.zero_stage}
        if cfg.zero_stage == 3:
            zero.update(stage3_gather_16bit_weights_on_model_save=False)
        if cfg.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        for key in ("overlap_comm", "contiguous_gradients", "reduce_bucket_size"):
            if getattr(cfg, key) is not None:
                zero[key] = getattr(cfg, key)
        out = {
            "train_micro_batch_size_per_gpu": self.micro_batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "train_batch_size": self.micro_batch_size * cfg.gradient_accumulation_steps * world_size,
            "gradient_clipping": cfg.gradient_clipping,
            "zero_optimization": zero,
            "bf16": {"enabled": self.bf16},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        if cfg.precision == "autocast":
            out["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
        return out

    def setup(self, model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int,
              warmup_steps: int, encoder_lr: float | None = None, schedule: Schedule = "cosine"):
        """Wrap the model: returns the DeepSpeed engine (call it like the model). Parameters of
        ``model.item_encoder`` train at ``encoder_lr`` (a pretrained LLM wants a smaller one)."""
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if self.use_gpu else "cpu")
        deepspeed = import_deepspeed()
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_initialized() else 1
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if self.use_gpu else "gloo")
        if self.cfg.zero_stage > 0 or self.bf16:
            # ZeRO and the bf16 optimizer flatten every gradient: sparse ones cannot take part.
            for module in model.modules():
                if isinstance(module, torch.nn.Embedding):
                    module.sparse = False
        optimizer = make_optimizer(model, lr, weight_decay, encoder_lr, fused=self.use_gpu and torch.cuda.is_available())
        scheduler = make_scheduler(optimizer, total_steps, warmup_steps, schedule)
        # DeepSpeed averages sparse gradients across ranks but cannot clip them: clipped here.
        self.own_clipping = bool(sparse_parameters(model)) and self.cfg.gradient_clipping > 0
        config = self.ds_config(world)
        if self.own_clipping:
            config["gradient_clipping"] = 0.0
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=config)
        return self.engine

    @property
    def model(self) -> torch.nn.Module:
        """The wrapped module (what validation runs)."""
        return self.engine.module

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """Forward, backward and (at accumulation boundaries) an optimizer step; the loss."""
        self.engine.train()
        loss = batch_loss(self.engine, batch)
        self.backward_and_step(loss)
        return float(loss.detach())

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def backward_and_step(self, loss: torch.Tensor) -> bool:
        """Backward plus (at accumulation boundaries) clip, step and schedule. True when the
        optimizer stepped."""
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.backward(loss)  # at a boundary: the gradients averaged across ranks
        if boundary and self.own_clipping:
            clip_grad_norm(self.engine.module.parameters(), self.cfg.gradient_clipping)
        self.engine.step()
        return boundary

    def save(self, directory: str, client_state: dict) -> None:
        """Every rank writes its shard; rank 0 also the model states and 'latest'."""
        self.engine.save_checkpoint(directory, tag=self.TAG, client_state=client_state)

    def load(self, directory: str) -> dict:
        _, client_state = self.engine.load_checkpoint(directory, tag=self.TAG)
        return client_state or {}

    @staticmethod
    def consolidated_state_dict(directory: str) -> dict[str, torch.Tensor]:
        """One fp32 state dict from a checkpoint written by :meth:`save`, whatever the ZeRO stage."""
        import glob

        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        tag_dir = os.path.join(directory, DeepSpeedStrategy.TAG)
        if glob.glob(os.path.join(tag_dir, "*zero_pp_rank_*optim_states.pt")):
            return get_fp32_state_dict_from_zero_checkpoint(directory, tag=DeepSpeedStrategy.TAG)
        # Stage 0 keeps the whole module in the model-states file (DeepSpeed's own pickle).
        states = torch.load(os.path.join(tag_dir, "mp_rank_00_model_states.pt"), map_location="cpu",
                            weights_only=False)
        return {k: v.float() if v.is_floating_point() else v for k, v in states["module"].items()}


def estimate_model_states(model: torch.nn.Module, gpus_per_node: int, nodes: int = 1) -> dict[str, dict[str, int]]:
    """Bytes of model states (weights, gradients, Adam states; no activations) per GPU and per
    node's CPU, for full training of ``model`` under ZeRO-2, ZeRO-3 and ZeRO-3 with the optimizer
    offloaded to CPU, from DeepSpeed's own estimators. The model may live on the meta device."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    # DeepSpeed's own model_to_params dedupes by data_ptr, which is 0 for every meta tensor.
    total = sum({id(p): p.numel() for p in model.parameters()}.values())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    cpu2, gpu2 = estimate_zero2_model_states_mem_needs(total, gpus_per_node, nodes, cpu_offload=False)
    cpu3, gpu3, _ = estimate_zero3_model_states_mem_needs(total, largest, gpus_per_node, nodes, cpu_offload=False)
    cpu3o, gpu3o, _ = estimate_zero3_model_states_mem_needs(total, largest, gpus_per_node, nodes, cpu_offload=True,
                                                            cpu_offload_params=False)
    return {"params": {"total": total, "largest_layer": largest},
            "zero2": {"gpu": gpu2, "cpu": cpu2}, "zero3": {"gpu": gpu3, "cpu": cpu3},
            "zero3_offload": {"gpu": gpu3o, "cpu": cpu3o}}
