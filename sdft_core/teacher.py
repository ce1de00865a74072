"""The teacher's weights φ (paper §3, Algorithm 1 line 19, Appendix A.3).

- "ema": φ ← α·θ + (1−α)·φ after every optimizer step; φ is a float32 copy even when the student runs in bf16,
  because with α = 0.01 a bf16 shadow would round most updates away. float32 still drops the very smallest ones
  (α × a tiny Adam step below float32 resolution of the weight: ~8% of weights in one step at lr 1e-5, see the
  teaching notebook); the gap then persists and is applied on later steps, so the teacher lags, it does not drift.
- "frozen": φ = θ_0, the base model, never updated.
- "live": φ = θ, the current student (no copy; the paper finds this unstable).

With a LoRA student (sdft_core/lora.py) no copy of the model is made: the EMA teacher is a second adapter over the
same frozen base, the frozen teacher is the base with adapters off, and every teacher forward runs inside
`teacher.forwarding()`, which switches to the teacher's adapter and back.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
from torch.distributed.tensor import DTensor

from sdft_core.lora import add_ema_adapter, adapter_for_teacher, is_lora

TEACHER_KINDS = ("ema", "frozen", "live")


class Teacher:
    def __init__(self, student: torch.nn.Module, kind: str = "ema", ema_alpha: float = 0.01):
        if kind not in TEACHER_KINDS:
            raise ValueError(f"teacher kind must be one of {TEACHER_KINDS}, got {kind!r}")
        if not 0.0 < ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must be in (0, 1], got {ema_alpha}")
        self.kind, self.ema_alpha = kind, ema_alpha
        self.lora = is_lora(student)
        self.ema_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        if kind == "live" or self.lora:
            self.model = student  # LoRA: one base, the teacher's adapter switched on in forwarding()
            if self.lora and kind == "ema":
                self.ema_pairs = add_ema_adapter(student)
        else:
            self.model = copy.deepcopy(student).to(torch.float32)
            self.model.requires_grad_(False)
            self.model.eval()

    def forwarding(self):
        """Context for a teacher forward: with LoRA, the teacher's adapter (or none, frozen) is active within it."""
        return adapter_for_teacher(self.model, self.kind) if self.lora else nullcontext()

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """Call after each optimizer step."""
        if self.kind != "ema":
            return
        # LoRA: adapter weights only (the base is shared and frozen). Otherwise every parameter; a sharded (FSDP)
        # teacher and student hold the same shards of the same parameters, so the update goes shard by shard.
        pairs = self.ema_pairs if self.lora else [(_local(t), _local(s))
                                          for t, s in zip(self.model.parameters(), student.parameters())]
        # φ ← φ + α(θ − φ)  ≡  α·θ + (1−α)·φ
        torch._foreach_lerp_([t for t, _ in pairs], [s.detach().to(torch.float32) for _, s in pairs], self.ema_alpha)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
