"""Memory arithmetic of full vs LoRA SDFT at paper scale, from the model's real parameter counts (no GPU needed).

    python benchmarks/lora_memory.py                                  # Qwen2.5-7B, rank 16, 24 / 48 / 80 GB
    python benchmarks/lora_memory.py --config benchmarks/configs/qwen2.5-1.5b.json --rank 64

The model is built on PyTorch's meta device (shapes, no storage) and wrapped with the kit's own LoRA
(`sdft_core.lora.apply_lora`, default target modules), so the counts are those a run would train. What a training
process holds before activations and rollout KV cache:
- full SDFT: bf16 weights + bf16 gradients + AdamW's two float32 moments + the float32 EMA teacher (a whole copy);
- LoRA SDFT: the bf16 base once + the float32 student adapter, its gradients, its two AdamW moments, and the float32
  EMA teacher adapter (sdft_core/lora.py).
The rest of the GPU is what is left for activations (use gradient_checkpointing) and for the rollouts' KV cache; a
colocated vLLM engine holds one more bf16 copy of the (merged) weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from sdft_core.config import TrainConfig
from sdft_core.lora import apply_lora

GB = 1e9


def parameter_counts(config_path: str, rank: int) -> tuple[int, int]:
    """(base parameters, LoRA adapter parameters) of the model described by a Hugging Face config.json."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_path))
        base = sum(p.numel() for p in model.parameters())
        defaults = TrainConfig(lora_rank=rank)
        wrapped = apply_lora(model, rank, defaults.lora_alpha, 0.0, defaults.lora_target_modules)
        adapter = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    return base, adapter


def budgets(base: int, adapter: int) -> dict[str, dict[str, float]]:
    """GB held by each part, full vs LoRA SDFT (bf16 = 2 bytes, float32 = 4; peft keeps adapters in float32)."""
    return {
        "full SDFT": {"weights": 2 * base / GB, "gradients": 2 * base / GB, "AdamW moments": 8 * base / GB,
                      "EMA teacher": 4 * base / GB},
        "LoRA SDFT": {"weights": (2 * base + 4 * adapter) / GB, "gradients": 4 * adapter / GB,
                      "AdamW moments": 8 * adapter / GB, "EMA teacher": 4 * adapter / GB},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).parent / "configs" / "qwen2.5-7b.json"))
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--gpus", type=float, nargs="+", default=[24, 48, 80], help="GPU memory sizes in GB")
    args = parser.parse_args()
    base, adapter = parameter_counts(args.config, args.rank)
    parts = budgets(base, adapter)
    print(f"{Path(args.config).stem}: {base / 1e9:.2f} B parameters; LoRA rank {args.rank} on "
          f"{', '.join(TrainConfig().lora_target_modules)}: {adapter / 1e6:.1f} M trainable "
          f"({100 * adapter / base:.2f}%)\n")
    print("| part | " + " | ".join(parts) + " |")
    print("|---|" + "---:|" * len(parts))
    for index, part in enumerate(next(iter(parts.values()))):
        print(f"| {part} | " + " | ".join(f"{list(p.values())[index]:.1f}" for p in parts.values())
              + " |")
    totals = {name: sum(p.values()) for name, p in parts.items()}
    print("| **total before activations** | " + " | ".join(f"**{t:.1f}**" for t in totals.values()) + " |\n")
    print("| GPU | " + " | ".join(f"left for activations + KV cache, {name}" for name in totals) + " |")
    print("|---|" + "---:|" * len(totals))
    for gpu in args.gpus:
        print(f"| {gpu:.0f} GB | " + " | ".join(f"{gpu - t:.1f}" if gpu > t else "does not fit"
                                               for t in totals.values()) + " |")
    print(f"\nLoRA / full: {totals['LoRA SDFT'] / totals['full SDFT']:.2f}x of the memory before activations")


if __name__ == "__main__":
    main()
