"""Step time and peak memory of SDFT: this kit's training loop vs TRL's experimental `SDFTTrainer`, the two set up to
do the same computation.

    python benchmarks/vs_trl.py                                   # embedded model, knowledge task, batch 8
    python benchmarks/vs_trl.py --steps 6 --repeats 3 --max-new-tokens 64
    python benchmarks/vs_trl.py --model /tmp/tiny --steps 2 --repeats 1    # smoke test on a tiny model

The table comes under a line naming the machine (`sdft_core.io.machine_header`: CPU model, cores, torch threads, the
torch build and its threading backend, MKL and oneDNN, Python, commit, date), as the measured processes see it: the
ratio moves with all of these (two 2-core machines gave TRL / ours 1.47x and 1.20x), so compare only numbers printed
under the same header.

Each run is one trainer in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own. The first optimizer
step of every run is a warm-up and is not timed. Runs alternate (ours, TRL, ours, TRL, ...) so that a machine shared
with other work slows both alike; the ratio is computed from medians. Our step time is `seconds_step` from
metrics.jsonl; TRL's is measured by a TrainerCallback from on_step_begin to on_step_end, registered after TRL's EMA
callback so that the teacher update is inside the window (it is inside ours too). Both windows hold the rollout, the
teacher and student passes, clipping, the optimizer and scheduler steps and the EMA update.

Matched (tests/test_vs_trl_equivalence.py checks each item against TRL's own code on a tiny model):
- the same model folder, float32, CPU, no autocast, no gradient checkpointing (TRL's defaults, bf16 autocast (on CPU
  too) and gradient checkpointing, are turned off);
- the same examples in the same order: the knowledge task's train split in our `data_order`, TRL's shuffling off;
- the same token ids: student = the question as one user turn of the chat template; teacher = the paper's template
  (§3, `PAPER_TEACHER_TEMPLATE`) as TRL's `teacher_prompt_template`, {question} renamed {prompt} and {demonstration}
  renamed {privileged_context} (the demonstration), through the same chat template; no prompt is truncated by either
  (TRL: max_prompt_length=None; ours: checked before training);
- one rollout per prompt, 8 prompts per optimizer step, no gradient accumulation, one pass per rollout; at most 48
  new tokens, temperature 1, top-p 1, no top-k, the same EOS ids, the first EOS kept and scored; from the same RNG
  state both samplers draw the same tokens;
- the loss: full-vocabulary analytic reverse KL(student ‖ teacher) per token (TRL: distillation_mode="full_logits",
  distillation_alpha=1.0), no importance-sampling correction (TRL: distillation_is_clip=None; it would not apply with
  one pass per rollout anyway), no tokens skipped;
- the teacher: EMA φ ← 0.01·θ + 0.99·φ after every optimizer step (TRL: teacher_model_kind="ema",
  teacher_update_rate=0.01, teacher_sync_steps=1; TRL loads it from the model folder, ours deep-copies the student: the
  same weights);
- the optimizer: torch AdamW (not fused), lr 1e-5, betas (0.9, 0.999), eps 1e-8, no weight decay, gradient clipping
  at 1, cosine schedule without warmup over the run's steps (the same `get_cosine_schedule_with_warmup`);
- no evaluation, no checkpoints, no progress bar (TRL's default logging every 10 steps happens after on_step_end).

Differences that remain (none changes what a step computes, beyond the first):
- Loss normalisation: TRL averages the per-token KL within each sequence, then over sequences; ours averages over all
  tokens of the batch. Per-token values are identical and both log the per-token mean (equal at step 1), but
  sequences of different lengths are weighted differently, so the gradients differ unless all completions have the
  same length, and the runs drift apart after step 1. Not configurable in TRL 1.16.
- Vocabulary projection: TRL materialises the [B, T+1, V] logits of student and teacher at once; ours projects 128
  completion positions at a time inside activation checkpointing (recomputed in backward). At the default 48 tokens
  that is a single chunk, so both hold [B, T, V] logits at once and only the recomputation differs; the chunking
  bounds our memory only for completions longer than 128 tokens (--max-new-tokens).
- Position ids of left-padded rows: TRL's training forward numbers positions 0..L-1 including the padding; generation
  and ours count from the first real token. RoPE depends only on relative positions: equal to float rounding.
- TRL renders and tokenizes the chat templates of the batch inside every step (in its timed window); ours does it
  once before training.
- Seeding: torch's DataLoader iterator draws one number from the global RNG when TRL's epoch starts, which shifts all
  of TRL's sampling by one draw; a callback reseeds torch before TRL's first step (outside the timed steps) so both
  draw the same step-1 rollouts from the same weights, and the step-1 losses can be compared.
- TRL's process imports trl, datasets and accelerate: the "RSS after imports" column shows each baseline.
- --teacher-context context_and_demonstration (the article, then the paper's template: what benchmarks/step_time.py
  uses) cannot be written as a `teacher_prompt_template`, which has one `{privileged_context}` slot while the article
  goes before the question and the answer after it. For that variant only, TRL's teacher-prompt composition (one
  string format) is replaced by one returning our teacher message; TRL still applies the chat template, tokenizes,
  pads and does everything else. The default, "demonstration", is pure TRL configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch, the kit and the peers are imported inside the functions that run in the measured subprocess, not here: the
# parent only launches and tabulates, so each child's peak memory and import time are its own.

SEED = 0
LEARNING_RATE = 1e-5
EMA_RATE = 0.01
TEMPERATURE = 1.0
TEACHER_CONTEXTS = ("demonstration", "context_and_demonstration")
# Ours with its default decoder, ours with transformers' generate for the rollouts (TrainConfig.hf_decoder), and TRL.
IMPLEMENTATIONS = {"ours": "kit", "ours_generate": "generate", "trl": None}
LABELS = {"ours": "ours (sdft_core.train)", "ours_generate": "ours, rollouts by generate",
          "trl": "TRL SDFTTrainer"}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def knowledge_examples(count: int):
    from tasks.knowledge import load_articles, load_questions, training_examples

    articles = load_articles()
    examples = training_examples(load_questions("train", articles=articles), articles)
    if count > len(examples):
        raise SystemExit(f"--steps × --batch = {count} examples, but the knowledge train split has {len(examples)}")
    return examples[:count]


def our_config(model: str, batch: int, max_new_tokens: int, teacher_context: str, decoder: str = "kit"):
    from sdft_core.config import TrainConfig

    return TrainConfig(
        method="sdft", model=model, dtype="float32", device="cpu", seed=SEED, learning_rate=LEARNING_RATE, epochs=1.0,
        batch_size=batch, micro_batch_size=batch, warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
        teacher_context=teacher_context, teacher_kind="ema", ema_alpha=EMA_RATE, estimator="analytic",
        direction="reverse", topk=None, mask_first_tokens=0, max_new_tokens=max_new_tokens, temperature=TEMPERATURE,
        top_p=1.0, importance_sampling=False, normalize="tokens", checkpoint_every=0, save_model=False,
        hf_decoder=decoder)


# The paper's template (§3) in TRL's placeholders: {prompt} is the question, {privileged_context} the demonstration.
def trl_teacher_template() -> str:
    from sdft_core.prompts import PAPER_TEACHER_TEMPLATE

    return PAPER_TEACHER_TEMPLATE.replace("{question}", "{prompt}").replace("{demonstration}", "{privileged_context}")


def trl_dataset(examples, teacher_context: str, seed: int = SEED):
    """Our examples in our training order (`data_order`, one epoch) as TRL rows: a conversational prompt (the question
    as one user turn, rendered by TRL with the same chat template) and the privileged context."""
    from datasets import Dataset

    from sdft_core.prompts import teacher_message
    from sdft_core.train import data_order

    ordered = [examples[i] for i in data_order(len(examples), 1.0, seed)]
    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": e.prompt}],
         # "demonstration": TRL's template puts it after the question; otherwise our whole teacher message.
         "privileged_context": (e.demonstration if teacher_context == "demonstration"
                                else teacher_message(e, teacher_context))}
        for e in ordered])


def trl_config(output_dir: str, steps: int, batch: int, max_new_tokens: int):
    from trl.experimental.sdft import SDFTConfig

    return SDFTConfig(
        output_dir=output_dir, seed=SEED, use_cpu=True, model_init_kwargs={"dtype": "float32"},
        bf16=False, fp16=False,  # TRL's default is bf16 autocast (also on CPU); ours runs float32
        gradient_checkpointing=False,  # TRL's default is on; ours is off (TrainConfig.gradient_checkpointing)
        # --- what is optimized ---
        distillation_mode="full_logits", distillation_alpha=1.0,  # full-vocabulary reverse KL(student ‖ teacher)
        distillation_is_clip=None, num_loss_tokens_to_skip=0,
        teacher_model_kind="ema", teacher_update_rate=EMA_RATE, teacher_sync_steps=1,
        teacher_prompt_template=trl_teacher_template(), generate_from_teacher=False,
        # --- rollouts ---
        num_generations=1, per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_iterations=1,
        max_completion_length=max_new_tokens, temperature=TEMPERATURE, top_p=1.0, top_k=0, min_p=None,
        repetition_penalty=1.0, max_prompt_length=None,  # ours never truncates student prompts; checked below
        shuffle_dataset=False,  # the dataset already is in our order
        # --- optimizer ---
        optim="adamw_torch", learning_rate=LEARNING_RATE, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, lr_scheduler_type="cosine", warmup_steps=0, max_grad_norm=1.0, max_steps=steps,
        # --- nothing else ---
        eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        dataloader_pin_memory=False)


def build_trl_trainer(model_path: str, examples, teacher_context: str, steps: int, batch: int, max_new_tokens: int,
                      output_dir: str):
    """TRL's SDFTTrainer configured to our computation (see the module docstring)."""
    from trl.experimental.sdft import SDFTTrainer
    from trl.experimental.sdft.sdft_trainer import DemonstrationTeacherContextBuilder

    from sdft_core.model import load_tokenizer

    if teacher_context not in TEACHER_CONTEXTS:
        raise ValueError(f"teacher_context must be one of {TEACHER_CONTEXTS}, got {teacher_context!r}")
    trainer = SDFTTrainer(model=model_path, args=trl_config(output_dir, steps, batch, max_new_tokens),
                          train_dataset=trl_dataset(examples, teacher_context),
                          processing_class=load_tokenizer(model_path))
    if teacher_context != "demonstration":
        class OurTeacherMessage(DemonstrationTeacherContextBuilder):
            """The privileged_context column already holds our whole teacher message (article, question, template)."""

            def _compose_teacher_prompt(self, prompt, privileged_context):
                return [{"role": "user", "content": privileged_context}]

        trainer.teacher_context_builder = OurTeacherMessage(trainer)
    return trainer


def check_no_teacher_truncation(tokenizer, examples, config) -> None:
    """TRL never shortens a prompt here (max_prompt_length=None); ours shortens teacher prompts longer than
    max_teacher_prompt_tokens. Refuse to compare if that would happen."""
    from sdft_core.prompts import TruncationCounter, teacher_prompt_ids

    counter = TruncationCounter()
    for example in examples:
        teacher_prompt_ids(tokenizer, example, config.max_teacher_prompt_tokens, config.teacher_context, counter)
    if counter.truncated:
        raise SystemExit(f"{counter.truncated} teacher prompts exceed max_teacher_prompt_tokens; TRL would not "
                         f"shorten them, so the two would not compute the same thing")


def child_ours(model: str, steps: int, batch: int, max_new_tokens: int, teacher_context: str, output: str,
               decoder: str = "kit") -> dict:
    import torch

    from sdft_core.io import machine_details
    from sdft_core.model import load_tokenizer
    from sdft_core.train import train

    examples = knowledge_examples(steps * batch)
    after_imports = rss_mb()
    config = our_config(model, batch, max_new_tokens, teacher_context, decoder)
    check_no_teacher_truncation(load_tokenizer(model), examples, config)
    summary = train(config, examples, output, progress=False)
    rows = [json.loads(line) for line in (Path(output) / "metrics.jsonl").read_text().splitlines()]
    return {"threads": torch.get_num_threads(), "peak_rss_mb": summary["peak_rss_mb"],
            "rss_after_imports_mb": after_imports,
            "steps": [{key: row[key] for key in ("seconds_step", "completion_length", "stopped_fraction", "loss")}
                      for row in rows],
            "machine": machine_details()}  # after the run: nothing of it is timed


def child_trl(model: str, steps: int, batch: int, max_new_tokens: int, teacher_context: str, output: str,
              decoder: None = None) -> dict:
    import datasets  # noqa: F401  (imported before the baseline is read, like everything the run needs)
    import torch
    import trl.experimental.sdft  # noqa: F401
    from transformers import TrainerCallback

    import sdft_core.train  # noqa: F401  (for data_order; ours imports it too)

    examples = knowledge_examples(steps * batch)
    after_imports = rss_mb()
    trainer = build_trl_trainer(model, examples, teacher_context, steps, batch, max_new_tokens, output)

    class AlignSeed(TrainerCallback):
        """Ours seeds torch's global RNG and draws nothing from it before its first rollout; TRL's Trainer seeds it
        too, but torch's DataLoader iterator then draws one base seed from it. Reseeding before the first step gives
        TRL our RNG state, so step 1 samples the same rollouts from the same weights and its losses can be compared."""

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                torch.manual_seed(SEED)

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step, plus what TRL recorded for it (its metrics are cleared only at logging,
        which comes after on_step_end)."""

        def __init__(self):
            self.rows: list[dict] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            seconds = time.perf_counter() - self.started
            metrics = trainer._metrics["train"]
            self.rows.append({"seconds_step": seconds, "completion_length": metrics["completions/mean_length"][-1],
                              "stopped_fraction": 1.0 - metrics["completions/clipped_ratio"][-1],
                              "loss": metrics["self_distillation/distillation_loss"][-1]})

    timer = StepTimer()
    trainer.add_callback(AlignSeed())
    trainer.add_callback(timer)  # after TRL's SyncTeacherModelCallback: the EMA update is inside the window
    trainer.train()
    return {"threads": torch.get_num_threads(), "peak_rss_mb": rss_mb(), "rss_after_imports_mb": after_imports,
            "steps": timer.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model id or folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is a warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per implementation, interleaved")
    parser.add_argument("--batch", type=int, default=8, help="prompts per optimizer step (one rollout each)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--teacher-context", choices=TEACHER_CONTEXTS, default="demonstration",
                        help="demonstration: the paper's template (pure TRL configuration); context_and_demonstration: "
                             "the article first, as benchmarks/step_time.py (see the docstring)")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is a warm-up)")
    if args.child:
        run = child_trl if args.child == "trl" else child_ours
        print(json.dumps(run(args.model, args.steps, args.batch, args.max_new_tokens, args.teacher_context,
                             args.output, IMPLEMENTATIONS[args.child])))
        return

    from sdft_core.model import EMBEDDED_MODEL, resolve_model_path

    model = resolve_model_path(args.model or EMBEDDED_MODEL)  # converts the embedded GGUF once, before any run
    knowledge_examples(args.steps * args.batch)  # fail early if there are not enough examples
    results: dict[str, list[dict]] = {name: [] for name in IMPLEMENTATIONS}
    for _ in range(args.repeats):
        for name in IMPLEMENTATIONS:
            with tempfile.TemporaryDirectory() as output:
                command = [sys.executable, __file__, "--child", name, "--output", output, "--model", model,
                           "--steps", str(args.steps), "--batch", str(args.batch),
                           "--max-new-tokens", str(args.max_new_tokens), "--teacher-context", args.teacher_context]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"the {name} run failed:\n{done.stderr[-4000:]}")
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))

    def timed(name, key):  # every step after each run's warm-up step
        return [step[key] for run in results[name] for step in run["steps"][1:]]

    step = {name: statistics.median(timed(name, "seconds_step")) for name in IMPLEMENTATIONS}
    peak = {name: max(run["peak_rss_mb"] for run in results[name]) for name in IMPLEMENTATIONS}
    label = "embedded SmolLM2-135M-Instruct" if args.model in (None, EMBEDDED_MODEL) else model
    from sdft_core.io import machine_header

    print(machine_header(results["ours"][0]["machine"]))
    print(f"SDFT step, ours vs TRL {_trl_version()} SDFTTrainer: {label}, float32, CPU, "
          f"{results['ours'][0]['threads']} threads; knowledge task, teacher context {args.teacher_context!r}; "
          f"batch {args.batch}, 1 rollout per prompt, completions ≤ {args.max_new_tokens} tokens; full-vocabulary "
          f"reverse KL, EMA teacher α={EMA_RATE}; median over {args.repeats} × {args.steps - 1} timed steps each")
    print("| implementation | s / step | peak RSS (MB) | RSS after imports (MB) | mean completion length (tokens) | "
          "stopped at EOS |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in IMPLEMENTATIONS:
        print(f"| {LABELS[name]} | {step[name]:.2f} | "
              f"{peak[name]:.0f} | {max(run['rss_after_imports_mb'] for run in results[name]):.0f} | "
              f"{statistics.mean(timed(name, 'completion_length')):.1f} | "
              f"{statistics.mean(timed(name, 'stopped_fraction')):.0%} |")
    print(f"\nTRL / ours step time: {step['trl'] / step['ours']:.2f}x (rollouts by generate: "
          f"{step['trl'] / step['ours_generate']:.2f}x)")
    print(f"TRL / ours peak memory: {peak['trl'] / peak['ours']:.2f}x")
    print("\nStep 1 (the untimed warm-up) starts both from the same weights and RNG state, so both should sample the "
          "same rollouts and log the same per-token KL (to float rounding); later steps drift apart (different "
          "loss normalisation, rounding):")
    for repeat, (ours, trl) in enumerate(zip(results["ours"], results["trl"]), start=1):
        a, b = ours["steps"][0], trl["steps"][0]
        print(f"  repeat {repeat}: loss ours {a['loss']:.6g}, TRL {b['loss']:.6g} (relative difference "
              f"{abs(a['loss'] - b['loss']) / max(abs(a['loss']), 1e-30):.1e}); mean completion length ours "
              f"{a['completion_length']:.2f}, TRL {b['completion_length']:.2f}")


def _trl_version() -> str:
    from importlib.metadata import version

    return version("trl")


if __name__ == "__main__":
    main()
