"""LoRA (parameter-efficient) SDFT: the student is a LoRA adapter over a frozen base, and the teacher shares that base.

- EMA teacher: a second adapter, EMA_ADAPTER, over the same base; φ ← α·θ + (1−α)·φ touches only adapter weights
  (teacher.Teacher), kept in float32 like the full-model shadow. The teacher's forward runs with that adapter active.
- Frozen teacher: the base model itself (adapters disabled for the teacher's forward).
- Live teacher: the student's adapter.
So the base weights are held once, not twice as with full fine-tuning (a float32 teacher copy of the whole model).

For evaluation and for vLLM, the student is *merged* (W + scale·B·A per adapted layer, computed without touching
the model: peft's merge/unmerge round trip would leave rounding error in the base weights).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

STUDENT_ADAPTER = "default"  # peft's name for the first adapter
EMA_ADAPTER = "ema_teacher"
# Modules LoRA must not adapt here: the output head is tied to the input embeddings in the embedded model, and the
# chunked loss applies the head outside the forward, where an adapter on it would be skipped.
NOT_ADAPTABLE = ("lm_head", "embed_tokens")


def apply_lora(model: torch.nn.Module, rank: int, alpha: float, dropout: float,
               target_modules: list[str]) -> PeftModel:
    """The model wrapped with a fresh LoRA adapter (peft's initialisation: B = 0, so the wrapped model starts equal
    to the base); only the adapter is trainable."""
    if bad := [m for m in target_modules if m in NOT_ADAPTABLE]:
        raise ValueError(f"lora_target_modules cannot include {bad}: the output head is applied outside the "
                         f"model's forward by the chunked loss (and tied to the embeddings in the embedded model)")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)


def add_ema_adapter(model: PeftModel) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A second adapter, EMA_ADAPTER, equal to the student's (float32), not trainable. Returns the (teacher, student)
    parameter pairs the EMA update walks."""
    model.add_adapter(EMA_ADAPTER, model.peft_config[STUDENT_ADAPTER])
    model.set_adapter(STUDENT_ADAPTER)  # keeps the student active and trainable, the new adapter frozen
    parameters = dict(model.named_parameters())
    pairs = []
    for name, teacher in parameters.items():
        if f".{EMA_ADAPTER}." in name:
            student = parameters[name.replace(f".{EMA_ADAPTER}.", f".{STUDENT_ADAPTER}.")]
            with torch.no_grad():
                teacher.data = student.detach().to(torch.float32).clone()
            teacher.requires_grad_(False)
            pairs.append((teacher, student))
    if not pairs:
        raise RuntimeError("the EMA adapter has no parameters: peft's adapter naming changed?")
    return pairs


@contextmanager
def adapter_for_teacher(model: PeftModel, kind: str):
    """Within the block, forwards of `model` are the teacher's: the EMA adapter ("ema"), no adapter ("frozen"), or the
    student's own ("live"), in eval mode (no adapter dropout: the full-model teacher is an eval-mode copy too). The
    student's adapter is active and trainable, and the training mode restored, afterwards."""
    was_training = model.training
    model.eval()
    try:
        if kind == "frozen":
            with model.disable_adapter():
                yield
        elif kind == "ema":
            model.set_adapter(EMA_ADAPTER, inference_mode=True)
            try:
                yield
            finally:
                model.set_adapter(STUDENT_ADAPTER)
        else:
            yield
    finally:
        model.train(was_training)


def adapter_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """Every adapter's weights (the student's and the EMA teacher's), keyed as in model.state_dict(): what a LoRA
    checkpoint needs besides the optimizer (the base never changes)."""
    return {name: tensor for name, tensor in model.state_dict().items() if ".lora_" in name}


def load_adapter_state_dict(model: PeftModel, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    lost = [name for name in missing if ".lora_" in name]
    if unexpected or lost:
        raise ValueError(f"the checkpoint's adapters do not fit this model: unexpected {unexpected[:3]}, "
                         f"missing {lost[:3]}")


@torch.no_grad()
def merged_state_dict(model: PeftModel, adapter: str = STUDENT_ADAPTER) -> dict[str, torch.Tensor]:
    """The base model's state dict with `adapter` merged in (W + scale·B·A for every adapted layer), under the base
    model's own parameter names: what a plain model with those weights would hold. The model is not modified."""
    base = model.get_base_model()
    deltas = {name: module.get_delta_weight(adapter) for name, module in base.named_modules()
              if isinstance(module, LoraLayer) and adapter in module.lora_A}
    merged = {}
    for name, tensor in base.state_dict().items():
        if ".lora_" in name:
            continue
        module, _, leaf = name.replace(".base_layer.", ".").rpartition(".")
        merged[f"{module}.{leaf}"] = tensor + deltas[module].to(tensor.dtype) if (
            leaf == "weight" and module in deltas) else tensor
    return merged
