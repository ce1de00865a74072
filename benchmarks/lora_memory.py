"""What SDFT holds per GPU at paper scale, where it fits, and what the paper profile costs (no GPU needed).

    python benchmarks/lora_memory.py                                  # Qwen2.5-7B, rank 16, FSDP over 4
    python benchmarks/lora_memory.py --config benchmarks/configs/qwen2.5-1.5b.json --rank 64 --processes 2

Arithmetic, not measurement: the model is built on PyTorch's meta device (shapes, no storage) and wrapped with the
kit's own LoRA (`sdft_core.lora.apply_lora`, default target modules), so the parameter counts are those a run would
train; `experiments/paper_scale.py` holds every byte count, FLOP formula and assumption. What a training process
holds before activations and KV cache, per GPU:
- full SDFT, the default policy (dtype="bfloat16", mixed precision): float32 master weights (4 bytes/param),
  float32 gradients (4), AdamW's two float32 moments (8), the float32 EMA teacher (4), and, during the student's
  forward, autocast's cached bf16 cast of every weight (2; not under FSDP2, whose gathered weights autocast does not
  cache): 22 bytes/param. With FSDP over N processes the first four are divided by N;
- full SDFT, dtype="bfloat16_pure": bf16 weights (2), bf16 gradients (2), bf16 AdamW moments (4), the float32 EMA
  teacher (4): 12 bytes/param, at the price of losing most Adam steps of the paper's learning rates;
- LoRA SDFT: the frozen base once, in bf16 (float32 under dtype="float32"), plus the float32 student adapter, its
  gradients, its two AdamW moments and the float32 EMA teacher adapter (sdft_core/lora.py), whatever the policy;
- a colocated vLLM engine (rollout_engine="vllm_colocate") holds one more bf16 copy of the whole (merged) weights
  on every GPU, sharded or not; its KV cache comes out of what is left.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments import paper_scale
from experiments.paper_scale import GPU_SIZES_GB, HEADROOM_FRACTION, PARTS, memory_per_gpu, parameter_counts
from sdft_core.config import TrainConfig
from sdft_core.io import machine_header

__all__ = ["budgets", "main", "parameter_counts"]


def budgets(base: int, adapter: int, dtype: str = "bfloat16", processes: int = 1,
            vllm: bool = False) -> dict[str, dict[str, float]]:
    """GB per GPU by part, full vs LoRA SDFT (experiments.paper_scale.memory_per_gpu), without a vLLM engine unless
    asked."""
    return {"full SDFT": memory_per_gpu(base, adapter, "full", processes, dtype, vllm),
            "LoRA SDFT": memory_per_gpu(base, adapter, "lora", processes, dtype, vllm)}


def memory_table(base: int, adapter: int, processes: int, gpus: list[float], vllm: bool = True) -> str:
    """Markdown: the parts per GPU under mixed precision and pure bf16, side by side, for full SDFT on one GPU,
    full SDFT with FSDP over `processes`, and LoRA SDFT on one GPU; then what is left on each GPU size."""
    columns = {}
    for dtype, label in (("bfloat16", "mixed"), ("bfloat16_pure", "pure bf16")):
        columns[f"full, 1 GPU ({label})"] = memory_per_gpu(base, adapter, "full", 1, dtype, vllm)
        columns[f"full, FSDP × {processes} ({label})"] = memory_per_gpu(base, adapter, "full", processes, dtype, vllm)
        columns[f"LoRA, 1 GPU ({label})"] = memory_per_gpu(base, adapter, "lora", 1, dtype, vllm)
    lines = ["| GB per GPU | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for part in PARTS:
        lines.append(f"| {part} | " + " | ".join(f"{parts[part]:.1f}" for parts in columns.values()) + " |")
    totals = [sum(parts.values()) for parts in columns.values()]
    lines.append("| **total before activations** | " + " | ".join(f"**{t:.1f}**" for t in totals) + " |")
    for gpu in gpus:
        short = f" (< {HEADROOM_FRACTION:.0%})"
        cells = [f"{gpu - t:.1f}" + ("" if paper_scale.fits(t, gpu) else short) if t < gpu else "does not fit"
                 for t in totals]
        lines.append(f"| left on {gpu:g} GB | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).parent / "configs" / "qwen2.5-7b.json"))
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--processes", type=int, default=4, help="FSDP processes (GPUs) of the sharded column")
    parser.add_argument("--gpus", type=float, nargs="+", default=list(GPU_SIZES_GB), help="GPU memory sizes in GB")
    parser.add_argument("--no-vllm", action="store_true", help="HF rollouts: no colocated vLLM copy")
    parser.add_argument("--max-gpus", type=int, default=8, help="most GPUs the placement may use")
    args = parser.parse_args()
    base, adapter = parameter_counts(args.config, args.rank)
    vllm = not args.no_vllm
    print("Arithmetic from parameter counts (models built on the meta device): no GPU is used and nothing is "
          "measured, so the machine and the torch version do not enter. Assumptions: experiments/paper_scale.py.")
    print(machine_header(measured=False) + "\n")
    print(f"## Memory per GPU: {Path(args.config).stem}, {base / 1e9:.2f} B parameters; LoRA rank {args.rank} on "
          f"{', '.join(TrainConfig().lora_target_modules)}: {adapter / 1e6:.1f} M trainable "
          f"({100 * adapter / base:.2f}%); {'with' if vllm else 'without'} a colocated vLLM engine\n")
    print(memory_table(base, adapter, args.processes, args.gpus, vllm))
    print("\nmixed = dtype \"bfloat16\" (the default policy: float32 master weights, gradients and AdamW state, bf16 "
          f"autocast); pure bf16 = dtype \"bfloat16_pure\". \"(< {HEADROOM_FRACTION:.0%})\": fits, but leaves less "
          "than the headroom placement asks for activations and KV cache.\n")
    for dtype, label in (("bfloat16", "mixed precision (default)"), ("bfloat16_pure", "pure bf16")):
        counts = " / ".join(str(n) for n in paper_scale.FSDP_PROCESSES if n <= args.max_gpus)
        print(f"## Placement for SDFT, {label}: full fine-tuning on 1 GPU, else FSDP over the fewest of {counts} "
              f"GPUs, else LoRA r{args.rank} on 1 GPU; at least {HEADROOM_FRACTION:.0%} of each "
              f"GPU left for activations and KV cache\n")
        print(paper_scale.placement_table(gpus=tuple(args.gpus), max_gpus=args.max_gpus, dtype=dtype,
                                          lora_rank=args.rank, vllm=vllm) + "\n")
    from experiments.plans import paper_plan

    throughput = paper_scale.Throughput()
    print(f"## GPU-hours of the paper profile (experiments.plans.paper_plan), per figure: H100 bf16 peak "
          f"{throughput.peak_flops / 1e12:.0f} TFLOP/s at MFU {throughput.train_mfu} (training, teacher, prefill), "
          f"{throughput.rollout_mfu} (vLLM rollouts), {throughput.eval_generation_mfu} (HF-generate evaluation); "
          f"dataset sizes and token lengths as assumed in experiments/paper_scale.py\n")
    print(paper_scale.gpu_hours_table(paper_plan("results/paper"), throughput=throughput))
    print("\nA figure counts every step it needs (a step several figures need is in each); the total counts each "
          "step once. Selection retraining: the chosen configuration trained again for seeds 1 and 2.")


if __name__ == "__main__":
    main()
