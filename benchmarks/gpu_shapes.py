"""Paper-scale shapes on a GPU: SDFT and SFT step time and peak memory for randomly initialised models built from the
Qwen2.5 0.5B / 1.5B / 7B configurations (benchmarks/configs/), bf16, chunked vs unchunked KL, completions of
512 / 1024 / 2048 tokens.

    python benchmarks/gpu_shapes.py                                  # every config and length (CUDA)
    python benchmarks/gpu_shapes.py --configs qwen2.5-1.5b --lengths 2048
    python benchmarks/gpu_shapes.py --device cpu --configs tiny --lengths 16 --batch 2   # a smoke run on CPU

No weights or tokenizers are needed (random initialisation; the step does not depend on the values), so this runs
on a machine without the hub. The training side of a step is measured with fixed completions of exactly the given
length (teacher forward + student forward/backward + AdamW + EMA update), because a random model's rollouts have no
meaningful length; rollout time is measured separately with HF generate forced to the full length. The table comes
under a line naming the machine (`sdft_core.io.machine_header`: GPU, CPU, torch build and threads, Python, date).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import Accelerator
from transformers import AutoConfig, AutoModelForCausalLM

from sdft_core.config import TrainConfig
from sdft_core.io import machine_header
from sdft_core.rollout import left_pad
from sdft_core.teacher import Teacher
from sdft_core.train import Loop, distillation_step, likelihood_step

CONFIGS = Path(__file__).parent / "configs"
TINY = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
        "tie_word_embeddings": True, "max_position_embeddings": 4096}


def build(name: str, device: str, dtype: torch.dtype):
    values = TINY if name == "tiny" else json.loads((CONFIGS / f"{name}.json").read_text())
    config = AutoConfig.for_model(**{k: v for k, v in values.items() if k != "architectures"})
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_gb(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def measure(name: str, method: str, length: int, chunk: int | None, args) -> dict:
    """Seconds per training step (median of args.steps after one warm-up) and peak GPU memory."""
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build(name, args.device, dtype)
    model.gradient_checkpointing_enable()
    model.train()
    vocab = model.config.vocab_size
    config = TrainConfig(method="sdft" if method == "sdft" else "sft", device=args.device,
                         dtype="bfloat16" if args.device == "cuda" else "float32", batch_size=args.batch,
                         micro_batch_size=args.micro_batch, loss_chunk_size=chunk, gradient_checkpointing=True,
                         save_model=False)
    teacher = Teacher(model, "ema", 0.01) if method == "sdft" else None
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=vocab - 1)  # no tokenizer needed for random tokens
    loop = Loop(config, model, model, teacher, tokenizer, Accelerator(cpu=args.device == "cpu"), Path("."))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, vocab - 1, (args.batch, args.prompt_length), generator=generator).tolist()
    completions = torch.randint(1, vocab - 1, (args.batch, length), generator=generator).tolist()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.steps + 1):
        synchronize(args.device)
        started = time.perf_counter()
        if method == "sdft":
            distillation_step(loop, step + 1, 0, prompts, prompts, fixed_completions=completions)
        else:
            likelihood_step(loop, step + 1, prompts, completions)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if teacher:
            teacher.update(model)
        synchronize(args.device)
        times.append(time.perf_counter() - started)
    return {"seconds": sorted(times[1:])[len(times[1:]) // 2], "peak_gb": peak_memory_gb(args.device)}


def rollout_seconds(name: str, length: int, args) -> float:
    model = build(name, args.device, torch.bfloat16 if args.device == "cuda" else torch.float32).eval()
    prompts, mask = left_pad([[1] * args.prompt_length] * args.batch, 0)
    synchronize(args.device)
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=prompts.to(args.device), attention_mask=mask.to(args.device), do_sample=True,
                       max_new_tokens=length, min_new_tokens=length, pad_token_id=0)
    synchronize(args.device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--prompt-length", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-rollout", action="store_true", help="skip the generation timing")
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(machine_header())
    print(f"{device_name}; bf16 weights (CPU: float32), EMA teacher float32, gradient checkpointing, "
          f"batch {args.batch} (micro {args.micro_batch}), prompt {args.prompt_length} tokens, KL chunk {args.chunk}")
    print("| config | completion | SFT s/step | SDFT train s/step (chunked) | SDFT peak GB chunked | "
          "SDFT peak GB unchunked | rollout s (HF generate) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.configs:
        for length in args.lengths:
            cells = []
            for method, chunk in (("sft", args.chunk), ("sdft", args.chunk), ("sdft", None)):
                try:
                    cells.append(measure(name, method, length, chunk, args))
                except torch.OutOfMemoryError:
                    cells.append({"seconds": float("nan"), "peak_gb": float("inf")})
                if args.device == "cuda":
                    torch.cuda.empty_cache()
            rollout = float("nan") if args.no_rollout else rollout_seconds(name, length, args)
            sft, chunked, unchunked = cells
            print(f"| {name} | {length} | {sft['seconds']:.2f} | {chunked['seconds']:.2f} | "
                  f"{chunked['peak_gb']:.1f} | {unchunked['peak_gb']:.1f} | {rollout:.1f} |", flush=True)


if __name__ == "__main__":
    main()
