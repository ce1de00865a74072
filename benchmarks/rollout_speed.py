"""Rollout speed: the kit's decoder vs transformers' `generate` vs the FLOP floor, at several batch sizes; and the
teacher pass (a no-grad forward) with and without the decoder's kernels (`rollout.inference_kernels`).

    python benchmarks/rollout_speed.py                       # embedded model, knowledge questions, 48 new tokens
    python benchmarks/rollout_speed.py --batches 1 8 32 --max-new-tokens 48 --repeats 3

Both decoders sample from the same seed, so they draw the same tokens (tests/test_rollout.py) and do the same work;
calls alternate (generate, kit, generate, ...) and each time is the best of --repeats. The student prompts are the
demo's: the knowledge task's training questions under the chat template, left-padded.

The floor is a roofline from two rates measured in the same run: the FLOP rate of a large matmul (all linear layers
over 2048 rows, pre-packed: compute-bound; the third table) and the rate at which this machine reads the linear weights (a sum over
each). Counting 2 FLOPs per parameter of every linear layer per token (the LM head only where a token is sampled;
attention left out, a few per cent here), the prompt's forward costs its FLOPs, and every decode step the larger of
its FLOPs and one read of all linear weights: a decode step multiplies a few rows by every weight matrix, so at small
batches it is bound by memory, not arithmetic. "kit / floor" says how far the kit stays above it.

The teacher pass is the one of benchmarks/step_time.py: 8 of the batch-8 completions behind the teacher's context
(the article, then the paper's template with the demonstration), through `train.completion_hidden` as the training
step runs it, with the model's own kernels and under `inference_kernels` (pre-packed weights, grouped-query SDPA).

The tables come under a line naming the machine (`sdft_core.io.machine_header`: CPU model, cores, torch threads, the
torch build and its threading backend, MKL and oneDNN, Python, commit, date): the speed-ups move with all of these
(two 2-core machines gave the kit's decoder 2.12x and 1.46x over `generate`), so compare only numbers printed under
the same header.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from sdft_core.forward import completion_hidden, with_teacher_prompts
from sdft_core.io import machine_header
from sdft_core.model import EMBEDDED_MODEL, load_model, load_tokenizer
from sdft_core.prompts import student_prompt_ids, teacher_prompt_ids
from sdft_core.rollout import generate, inference_kernels, left_pad, prepacked_linears
from tasks.registry import load_task


def best_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def linear_pass_seconds(model: torch.nn.Module, rows: int, packed: bool, repeats: int = 3) -> float:
    """One pass of `rows` rows through every linear layer, with the weights as they are or pre-packed."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(rows, m.in_features) for m in linears]
    with torch.no_grad(), prepacked_linears(model, rows) if packed else nullcontext():
        return best_seconds(lambda: [m(x) for m, x in zip(linears, inputs)], repeats)


def weight_read_rate(model: torch.nn.Module, repeats: int = 3) -> float:
    """Bytes/s at which one pass reads every linear weight (a sum over each)."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    seconds = best_seconds(lambda: [w.sum() for w in weights], repeats)
    return sum(w.numel() * w.element_size() for w in weights) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args()

    tokenizer, model = load_tokenizer(EMBEDDED_MODEL), load_model(EMBEDDED_MODEL).eval()
    questions = load_task("knowledge").train
    lm_head = model.get_output_embeddings().weight.numel()
    body = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)) - lm_head
    weight_bytes = 4 * (body + lm_head)
    passes = {(rows, packed): linear_pass_seconds(model, rows, packed) for rows in (8, 2048) for packed in (False, True)}
    rate, read_rate = 2 * 2048 * (body + lm_head) / passes[2048, True], weight_read_rate(model)
    print(machine_header())
    print(f"Embedded model (SmolLM2-135M, float32, CPU, {torch.get_num_threads()} threads), knowledge questions, "
          f"≤ {args.max_new_tokens} new tokens at temperature {args.temperature}; best of {args.repeats}; "
          f"large-matmul rate {rate / 1e9:.0f} GFLOP/s, weight reads {read_rate / 1e9:.0f} GB/s")
    print("| batch | tokens sampled | generate s | kit s | kit speed-up | generate tok/s | kit tok/s | floor s "
          "| kit / floor |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rollout = None
    for batch in args.batches:
        prompts = [student_prompt_ids(tokenizer, questions[i % len(questions)], 512) for i in range(batch)]
        seconds, tokens = {"generate": [], "kit": []}, 0
        for _ in range(args.repeats):
            for decoder in seconds:
                torch.manual_seed(0)
                started = time.perf_counter()
                out = generate(model, tokenizer, prompts, args.max_new_tokens, args.temperature, decoder=decoder)
                seconds[decoder].append(time.perf_counter() - started)
                tokens = int(out.completion_mask.sum())
        steps = out.completion_ids.shape[1]  # decode steps the batch ran (rows that finished ride along)
        padded_prompt = left_pad(prompts, tokenizer.pad_token_id)[0].numel()
        step_floor = max(2 * (body + lm_head) * batch / rate, weight_bytes / read_rate)
        floor = 2 * (body * padded_prompt + lm_head * batch) / rate + (steps - 1) * step_floor
        hf, kit = min(seconds["generate"]), min(seconds["kit"])
        print(f"| {batch} | {tokens} | {hf:.2f} | {kit:.2f} | {hf / kit:.2f}x | {tokens / hf:.0f} | "
              f"{tokens / kit:.0f} | {floor:.2f} | {kit / floor:.1f}x |")
        if batch == 8:
            rollout = out

    print(f"\nOne pass through every linear layer ({(body + lm_head) / 1e6:.0f}M weights), as they are and pre-packed "
          "(`prepacked_linears`)")
    print("| rows | as they are ms | pre-packed ms | as they are GFLOP/s | pre-packed GFLOP/s |")
    print("|---:|---:|---:|---:|---:|")
    for rows in (8, 2048):
        plain, packed = passes[rows, False], passes[rows, True]
        flops = 2 * rows * (body + lm_head)
        print(f"| {rows} | {1e3 * plain:.1f} | {1e3 * packed:.1f} | {flops / plain / 1e9:.0f} | {flops / packed / 1e9:.0f} |")
    if rollout is None:
        return
    teacher_prompts = [teacher_prompt_ids(tokenizer, questions[i], 1024, "context_and_demonstration")
                       for i in range(8)]
    batch = with_teacher_prompts(rollout, teacher_prompts, tokenizer.pad_token_id)

    @torch.no_grad()
    def teacher_pass(kernels: bool) -> None:  # packing inside the timed call, as in every training step
        with inference_kernels(model, batch.input_ids.numel()) if kernels else nullcontext():
            completion_hidden(model, batch)

    plain, fast = (best_seconds(lambda: teacher_pass(kernels), args.repeats) for kernels in (False, True))
    floor = 2 * body * batch.input_ids.numel() / rate
    print(f"\nTeacher pass, 8 rows of {batch.input_ids.shape[1]} positions (the article, the template with the "
          f"demonstration, a completion); best of {args.repeats}")
    print("| model's kernels s | inference_kernels s | speed-up | FLOP floor s |")
    print("|---:|---:|---:|---:|")
    print(f"| {plain:.2f} | {fast:.2f} | {plain / fast:.2f}x | {floor:.2f} |")


if __name__ == "__main__":
    main()
