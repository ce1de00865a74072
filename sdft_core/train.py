"""The training loop: SDFT (Algorithm 1) and the likelihood baselines (SFT, DFT) in one loop, top to bottom.

A run lives in one folder:
  config.json     the full TrainConfig, the run id (hash of config + data) and dataset size
  metrics.jsonl   one line per optimizer step
  checkpoint/     the latest resumable state (student, teacher, optimizer, scheduler, RNG, step); removed when done
  model/          the final weights (safetensors) and tokenizer
  summary.json    written last: its presence with the same run id means "finished", and a rerun skips the run
"""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from sdft_core.config import TrainConfig
from sdft_core.data import Example
from sdft_core.io import atomic_write, fingerprint, read_json, write_json, write_jsonl
from sdft_core.loss import distillation_loss, likelihood_loss
from sdft_core.model import load_model, load_tokenizer
from sdft_core.prompts import TruncationCounter, encode, student_prompt_ids, teacher_prompt_ids
from sdft_core.rollout import Batch, eos_token_ids, generate, left_pad, right_pad
from sdft_core.teacher import Teacher


def completion_hidden(model, batch: Batch) -> torch.Tensor:
    """Final hidden states at the positions that predict each completion token: [B, T, H]."""
    attention_mask = batch.attention_mask
    # Same positions as `generate` gives left-padded prompts, so scores match what was sampled.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    hidden = model.get_decoder()(
        input_ids=batch.input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    prompt_length, completion_length = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    return hidden[:, prompt_length - 1 : prompt_length + completion_length - 1]


def loss_weights(completion_mask: torch.Tensor, mask_first_tokens: int) -> torch.Tensor:
    """Completion mask with the first `mask_first_tokens` positions of every completion set to 0 (paper §5)."""
    weights = completion_mask.float().clone()
    weights[:, :mask_first_tokens] = 0.0
    return weights


def data_order(num_examples: int, epochs: float, seed: int) -> list[int]:
    """Example indices in training order: a fresh permutation per epoch, cut at round(num_examples * epochs)."""
    order: list[int] = []
    for epoch in range(math.ceil(epochs)):
        order.extend(np.random.default_rng([seed, epoch]).permutation(num_examples).tolist())
    return order[: max(1, round(num_examples * epochs))]


def with_teacher_prompts(rollout: Batch, teacher_prompts: list[list[int]], pad_id: int) -> Batch:
    """The same sampled completions behind the teacher's context instead of the student's."""
    prompt_ids, prompt_mask = left_pad(teacher_prompts, pad_id)
    device = rollout.completion_ids.device
    return Batch(prompt_ids.to(device), prompt_mask.to(device), rollout.completion_ids, rollout.completion_mask)


class TrainingDiverged(FloatingPointError):
    pass


def _check_finite(loss: torch.Tensor, step: int, method: str, output_dir: Path) -> None:
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"step {step}: the {method} loss is {loss.item()} (not finite); training stopped. "
            f"The last checkpoint (if any) is in {output_dir / 'checkpoint'}; lower the learning rate to retry."
        )


def sdft_step(student, teacher: Teacher, tokenizer, student_prompts, teacher_prompts, config: TrainConfig,
              step: int, output_dir: Path) -> dict:
    """Rollouts for the whole batch first (so the token count for normalisation is known), then one
    forward/backward per micro-batch. Returns step metrics."""
    started = time.perf_counter()
    size = config.micro_batch_size
    groups = [slice(i, i + size) for i in range(0, len(student_prompts), size)]
    rollouts = [generate(student, tokenizer, student_prompts[g], config.max_new_tokens, config.temperature,
                         config.top_p) for g in groups]
    weights = [loss_weights(r.completion_mask, config.mask_first_tokens) for r in rollouts]
    normalizer = sum(w.sum() for w in weights) if config.normalize == "tokens" else float(len(student_prompts))
    normalizer = max(float(normalizer), 1.0)
    rolled_out = time.perf_counter()

    autocast = (torch.autocast(device_type=config.device, dtype=torch.bfloat16)
                if config.dtype == "bfloat16" else nullcontext())
    loss_total = divergence_total = 0.0
    teacher_seconds = 0.0
    for group, rollout, weight in zip(groups, rollouts, weights):
        teacher_started = time.perf_counter()
        with torch.no_grad(), autocast:
            teacher_hidden = completion_hidden(
                teacher.model, with_teacher_prompts(rollout, teacher_prompts[group], tokenizer.pad_token_id))
        teacher_seconds += time.perf_counter() - teacher_started
        with autocast:
            student_hidden = completion_hidden(student, rollout)
            loss, divergence = distillation_loss(
                student_hidden, teacher_hidden, rollout.completion_ids, weight,
                student.get_output_embeddings(), teacher.model.get_output_embeddings(),
                estimator=config.estimator, direction=config.direction, chunk_size=config.loss_chunk_size)
        _check_finite(loss, step, "sdft", output_dir)
        (loss / normalizer).backward()
        loss_total += loss.item()
        divergence_total += divergence.item()
    tokens = float(sum(w.sum() for w in weights))
    lengths = torch.cat([r.completion_mask.sum(1) for r in rollouts]).float()
    eos_ids = torch.tensor(eos_token_ids(student, tokenizer))
    stopped = torch.cat([torch.isin(r.completion_ids.gather(1, r.completion_mask.sum(1, keepdim=True) - 1).cpu(),
                                    eos_ids) for r in rollouts]).float()
    return {
        "loss": loss_total / normalizer,
        "kl_per_token": divergence_total / max(tokens, 1.0),
        "loss_tokens": tokens,
        "completion_length": lengths.mean().item(),
        "stopped_fraction": stopped.mean().item(),
        "seconds_rollout": rolled_out - started,
        "seconds_teacher": teacher_seconds,
        "seconds_student": time.perf_counter() - rolled_out - teacher_seconds,
    }


def likelihood_step(student, tokenizer, student_prompts, targets, config: TrainConfig, step: int,
                    output_dir: Path) -> dict:
    """SFT / DFT: next-token loss on the demonstration (+ EOS) after the student prompt."""
    started = time.perf_counter()
    size = config.micro_batch_size
    groups = [slice(i, i + size) for i in range(0, len(student_prompts), size)]
    normalizer = (sum(len(t) for t in targets) if config.normalize == "tokens" else len(targets))
    autocast = (torch.autocast(device_type=config.device, dtype=torch.bfloat16)
                if config.dtype == "bfloat16" else nullcontext())
    device = next(student.parameters()).device
    loss_total = nll_total = 0.0
    for group in groups:
        prompt_ids, prompt_mask = left_pad(student_prompts[group], tokenizer.pad_token_id)
        target_ids, target_mask = right_pad(targets[group], tokenizer.pad_token_id)
        batch = Batch(prompt_ids.to(device), prompt_mask.to(device), target_ids.to(device), target_mask.to(device))
        with autocast:
            loss, nll = likelihood_loss(completion_hidden(student, batch), batch.completion_ids,
                                        batch.completion_mask, student.get_output_embeddings(),
                                        dft=config.method == "dft", chunk_size=config.loss_chunk_size)
        _check_finite(loss, step, config.method, output_dir)
        (loss / normalizer).backward()
        loss_total += loss.item()
        nll_total += nll.item()
    tokens = sum(len(t) for t in targets)
    return {"loss": loss_total / normalizer, "nll_per_token": nll_total / tokens, "loss_tokens": tokens,
            "seconds_student": time.perf_counter() - started}


def _save_checkpoint(path: Path, run_id: str, step: int, student, teacher, optimizer, scheduler) -> None:
    state = {
        "run_id": run_id, "step": step, "student": student.state_dict(),
        "teacher": teacher.state_dict() if teacher else None,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _restore_checkpoint(path: Path, student, teacher, optimizer, scheduler) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    student.load_state_dict(state["student"])
    if teacher:
        teacher.load_state_dict(state["teacher"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"]


def _read_metrics(path: Path, up_to_step: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["step"] <= up_to_step]


def run_id_for(config: TrainConfig, examples: list[Example]) -> str:
    return fingerprint(dataclasses.asdict(config), [dataclasses.asdict(e) for e in examples])


def train(config: TrainConfig, examples: list[Example], output_dir: Path | str, stop_after_step: int | None = None,
          progress: bool = True) -> dict:
    """Train (or resume, or skip if finished) one run and return its summary.

    stop_after_step: return early after that optimizer step, leaving a checkpoint (used to test resumption).
    """
    output_dir = Path(output_dir)
    run_id = run_id_for(config, examples)
    summary_path, checkpoint_path = output_dir / "summary.json", output_dir / "checkpoint" / "state.pt"
    if summary_path.exists():
        summary = read_json(summary_path)
        if summary["run_id"] == run_id:
            print(f"[sdft] {output_dir} is already finished (run {run_id}); skipping.")
            return summary
        print(f"[sdft] {output_dir} holds a different run ({summary['run_id']}); retraining it as {run_id}.")
        summary_path.unlink()
    if checkpoint_path.exists() and torch.load(checkpoint_path, weights_only=True)["run_id"] != run_id:
        shutil.rmtree(checkpoint_path.parent)

    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    student = load_model(config.model, config.dtype, config.device)
    if config.gradient_checkpointing:
        student.gradient_checkpointing_enable()
    student.train()
    teacher = Teacher(student, config.teacher_kind, config.ema_alpha) if config.method == "sdft" else None
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    order = data_order(len(examples), config.epochs, config.seed)
    total_steps = math.ceil(len(order) / config.batch_size)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, total_steps), total_steps)

    truncation = TruncationCounter()
    student_prompts = [student_prompt_ids(tokenizer, e, config.max_prompt_tokens) for e in examples]
    if config.method == "sdft":
        teacher_prompts = [teacher_prompt_ids(tokenizer, e, config.max_teacher_prompt_tokens,
                                              config.teacher_context, truncation) for e in examples]
        if truncation.truncated:
            print(f"[sdft] warning: {truncation.truncated} of {len(examples)} teacher prompts were longer than "
                  f"max_teacher_prompt_tokens={config.max_teacher_prompt_tokens} and were shortened "
                  f"({truncation.tokens_removed} tokens of privileged text removed in total).")
    else:
        targets = [encode(tokenizer, e.demonstration) + [tokenizer.eos_token_id] for e in examples]

    write_json(output_dir / "config.json", {"run_id": run_id, "num_examples": len(examples),
                                            "total_steps": total_steps, "config": dataclasses.asdict(config)})
    start_step = 0
    if checkpoint_path.exists():
        start_step = _restore_checkpoint(checkpoint_path, student, teacher, optimizer, scheduler)
        print(f"[sdft] resuming {output_dir} from the checkpoint after step {start_step} of {total_steps}.")
    metrics_path = output_dir / "metrics.jsonl"
    metrics = _read_metrics(metrics_path, start_step)
    write_jsonl(metrics_path, metrics)

    started = time.perf_counter()
    bar = tqdm(range(start_step, total_steps), desc=f"train {config.method}", initial=start_step, total=total_steps,
               disable=not progress, mininterval=2.0, dynamic_ncols=False, ncols=100)
    for step in bar:
        step_started = time.perf_counter()
        indices = order[step * config.batch_size : (step + 1) * config.batch_size]
        if config.method == "sdft":
            row = sdft_step(student, teacher, tokenizer, [student_prompts[i] for i in indices],
                            [teacher_prompts[i] for i in indices], config, step + 1, output_dir)
        else:
            row = likelihood_step(student, tokenizer, [student_prompts[i] for i in indices],
                                  [targets[i] for i in indices], config, step + 1, output_dir)
        grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), config.max_grad_norm)
        row.update(step=step + 1, epoch=(step + 1) * config.batch_size / len(examples),
                   learning_rate=scheduler.get_last_lr()[0], grad_norm=grad_norm.item())
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if teacher:
            teacher.update(student)
        row["seconds_step"] = time.perf_counter() - step_started
        metrics.append(row)
        with metrics_path.open("a") as handle:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        finished_step = step + 1
        due = config.checkpoint_every and finished_step % config.checkpoint_every == 0
        if finished_step < total_steps and (due or finished_step == stop_after_step):
            _save_checkpoint(checkpoint_path, run_id, finished_step, student, teacher, optimizer, scheduler)
        if finished_step == stop_after_step and finished_step < total_steps:
            bar.close()
            return {"run_id": run_id, "stopped_after_step": finished_step}
    bar.close()

    if config.save_model:
        staging = output_dir / "model.partial"
        shutil.rmtree(staging, ignore_errors=True)
        student.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(output_dir / "model", ignore_errors=True)
        staging.rename(output_dir / "model")
    summary = {
        "run_id": run_id, "method": config.method, "steps": total_steps, "examples_seen": len(order),
        "train_seconds_this_session": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "teacher_prompts_truncated": truncation.truncated,
        "final_loss": metrics[-1]["loss"] if metrics else None,
    }
    write_json(summary_path, summary)
    shutil.rmtree(checkpoint_path.parent, ignore_errors=True)
    return summary
