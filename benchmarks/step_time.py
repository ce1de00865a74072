"""Step time and peak memory of SDFT vs SFT on the same data and model (paper §5: SDFT ≈ 4x SFT wall clock), of SDFT
with transformers' `generate` for its rollouts instead of the kit's decoder (TrainConfig.hf_decoder), and of LoRA-SDFT
(rank 16, every linear layer of the decoder) vs full SDFT.

    python benchmarks/step_time.py                         # embedded model, knowledge task, batch 8
    python benchmarks/step_time.py --steps 6 --repeats 2 --max-new-tokens 64
    python benchmarks/step_time.py --model /tmp/tiny --steps 2 --batch 2 --max-new-tokens 4 --repeats 1   # smoke test

The table comes under a line naming the machine (`sdft_core.io.machine_header`: CPU model, cores, torch threads, the
torch build and its threading backend, MKL and oneDNN, Python, commit, date), as the measured processes see it: the
ratios below move with all of these (two 2-core machines gave SDFT / SFT 2.68x and 3.45x), so compare only numbers
printed under the same header.

Each run is the kit's own training loop (`sdft_core.train.train`) in a fresh subprocess, so its peak resident memory
is its own. The first optimizer step of every run is a warm-up and is not timed. Runs alternate (SFT, SDFT, ...,
SFT, ...) so that a machine shared with other work slows all alike; ratios are computed from medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# torch, the kit and the peers are imported inside the functions that run in the measured subprocess, not here: the
# parent only launches and tabulates, so each child's peak memory and import time are its own.

# What each benchmarked run changes on top of the shared settings in `child`.
RUNS = {"sft": {"method": "sft"}, "sdft": {"method": "sdft"}, "sdft_generate": {"method": "sdft", "hf_decoder": "generate"},
        "sdft_lora16": {"method": "sdft", "lora_rank": 16}}


def child(run: str, steps: int, batch: int, max_new_tokens: int, output: str, model: str | None = None) -> dict:
    import torch

    from tasks.knowledge import load_articles, load_questions, training_examples
    from sdft_core.config import TrainConfig
    from sdft_core.io import machine_details
    from sdft_core.train import train

    articles = load_articles()
    examples = training_examples(load_questions("train", articles=articles), articles)[: steps * batch]
    config = TrainConfig(**RUNS[run], **({"model": model} if model else {}), learning_rate=1e-5, epochs=1.0,
                         batch_size=batch, micro_batch_size=batch, warmup_steps=0, max_new_tokens=max_new_tokens,
                         teacher_context="context_and_demonstration", save_model=False)
    summary = train(config, examples, output, progress=False)
    rows = [json.loads(line) for line in (Path(output) / "metrics.jsonl").read_text().splitlines()][1:]
    parts = ("seconds_rollout", "seconds_teacher", "seconds_student")
    return {"run": run, "threads": torch.get_num_threads(), "peak_rss_mb": summary["peak_rss_mb"],
            "seconds_step": [r["seconds_step"] for r in rows],
            **{p: statistics.median(r.get(p, 0.0) for r in rows) for p in parts},
            "completion_length": statistics.median(r.get("completion_length", 0.0) for r in rows),
            "machine": machine_details()}  # after the run: nothing of it is timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model id or folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is a warm-up)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2, help="runs per method, interleaved")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.batch, args.max_new_tokens, args.output, args.model)))
        return

    results: dict[str, list[dict]] = {run: [] for run in RUNS}
    for _ in range(args.repeats):
        for run in results:
            with tempfile.TemporaryDirectory() as output:
                command = [sys.executable, __file__, "--child", run, "--output", output, "--steps",
                           str(args.steps), "--batch", str(args.batch), "--max-new-tokens", str(args.max_new_tokens),
                           *(["--model", args.model] if args.model else [])]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                results[run].append(json.loads(done.stdout.strip().splitlines()[-1]))
    step = {m: statistics.median(s for r in rs for s in r["seconds_step"]) for m, rs in results.items()}
    peak = {m: max(r["peak_rss_mb"] for r in rs) for m, rs in results.items()}
    rollout = {m: statistics.median(r["seconds_rollout"] for r in rs) for m, rs in results.items()}
    from sdft_core.io import machine_header  # torch only now, after the runs: the parent launched and waited

    print(machine_header(results["sdft"][0]["machine"]))
    label = "Embedded model (SmolLM2-135M" if args.model is None else f"Model {args.model} ("
    print(f"{label}, float32, CPU, {results['sdft'][0]['threads']} threads), knowledge task, "
          f"batch {args.batch}, SDFT completions ≤ {args.max_new_tokens} tokens; median over "
          f"{args.repeats} × {args.steps - 1} timed steps per run")
    print("| run | s / step | rollout s | teacher s | student fwd+bwd s | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, runs in results.items():
        parts = [statistics.median(r[p] for r in runs) for p in ("seconds_rollout", "seconds_teacher",
                                                                  "seconds_student")]
        print(f"| {method} | {step[method]:.2f} | {parts[0]:.2f} | {parts[1]:.2f} | {parts[2]:.2f} | "
              f"{peak[method]:.0f} |")
    print(f"\nSDFT / SFT step time: {step['sdft'] / step['sft']:.2f}x   (paper, Qwen2.5-7B on GPU: ≈ 4x)")
    print(f"SDFT / SFT peak memory: {peak['sdft'] / peak['sft']:.2f}x")
    print(f"SDFT with generate / SFT step time: {step['sdft_generate'] / step['sft']:.2f}x; rollout, kit decoder vs "
          f"generate: {rollout['sdft_generate'] / rollout['sdft']:.2f}x faster")
    print(f"LoRA-SDFT / full SDFT step time: {step['sdft_lora16'] / step['sdft']:.2f}x, peak memory: "
          f"{peak['sdft_lora16'] / peak['sdft']:.2f}x")


if __name__ == "__main__":
    main()
