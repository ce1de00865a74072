"""The training loop: SDFT (Algorithm 1) and its baselines in one loop, top to bottom.

A run lives in one folder:
  config.json     the full TrainConfig, the run id (hash of config + data + training code), the dataset size, and
                  fingerprints of the data and of the training code (to say what differs when another run asks
                  for the folder)
  metrics.jsonl   one line per optimizer step
  checkpoint/     the latest resumable state (student, teacher, optimizer, scheduler, step); removed when done.
                  No RNG state is needed: every step reseeds from (seed, step, micro-batch).
  model/          the final weights (safetensors) and tokenizer; with LoRA the merged student
  adapter/        with LoRA only: the student's adapter (peft format)
  summary.json    written last: its presence with the same run id means "finished", and a rerun skips the run

A folder holds one run. train() refuses a folder that holds another run (another config, data or training code),
saying what differs and changing nothing, unless it is called with overwrite=True: a notebook run as it opens never
replaces a committed result, while the pipeline, whose steps rerun because their code or configuration changed,
passes overwrite=True. A checkpoint that cannot be read (a save or copy cut short) is reported the same way and
discarded, training from step 0, only with overwrite=True.

Multi-process training: launched with `accelerate launch` (e.g. `accelerate launch --multi_gpu --num_processes 2
-m experiments.train_run ...`, which on a machine without GPUs starts 2 CPU processes through torchrun), the student is wrapped in DistributedDataParallel by accelerate, every process takes an
equal contiguous share of each global batch, and the loss is normalised by the global token count, so P processes
compute the same update as one process with the same global batch. The EMA teacher is replicated: every process
applies the same update to the same synchronised student weights. Randomness is drawn per (step, micro-batch), so
rollouts do not depend on how micro-batches are spread over processes, and a checkpoint resumes with any number of
processes (its state is the full, unsharded one, saved by the main process).

With `sharding="fsdp"` the student, its gradients and AdamW state, and the EMA teacher are sharded over the
processes instead (FSDP2 `fully_shard`, one unit per decoder layer plus the root): the EMA update is applied shard by
shard, which is the same arithmetic, and checkpoints still hold the full state, so a run started sharded resumes
replicated or on another process count, and the reverse.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import resource
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint.state_dict as dcp_state
from accelerate import Accelerator
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from sdft_core.config import TEACHER_METHODS, TrainConfig
from sdft_core.data import Example
from sdft_core.forward import completion_hidden, loss_weights, with_teacher_prompts
from sdft_core.io import (atomic_write, ensure_writable_folder, fingerprint, provenance, read_cache, read_json,
                          write_json, write_jsonl)
from sdft_core.lora import (STUDENT_ADAPTER, adapter_state_dict, apply_lora, is_lora, load_adapter_state_dict,
                            merged_state_dict)
from sdft_core.loss import distillation_loss, likelihood_loss
from sdft_core.model import load_model, load_tokenizer, resolve_model_path, weights_fingerprint
from sdft_core.prompts import TruncationCounter, encode, student_prompt_ids, teacher_prompt_ids
from sdft_core.rollout import Batch, HFSampler, eos_token_ids, generate, inference_kernels, left_pad, right_pad
from sdft_core.teacher import Teacher


def data_order(num_examples: int, epochs: float, seed: int, repeats: int = 1) -> list[int]:
    """Example indices in training order: a fresh permutation per epoch, cut at round(num_examples * epochs), each
    index repeated `repeats` times in a row (several rollouts of one prompt in the same batch)."""
    order: list[int] = []
    for epoch in range(math.ceil(epochs)):
        order.extend(np.random.default_rng([seed, epoch]).permutation(num_examples).tolist())
    return [index for index in order[: max(1, round(num_examples * epochs))] for _ in range(repeats)]


def full_batches(order: list[int], batch_size: int) -> list[int]:
    """`order` with its partial last batch filled from the order's start (as PyTorch's DistributedSampler pads), so
    that every step has batch_size examples: every process gets an equal, non-empty share, and every divisor that
    counts examples is exact."""
    missing = -len(order) % batch_size
    return order + [order[i % len(order)] for i in range(missing)]


class TrainingDiverged(FloatingPointError):
    pass


def _check_finite(loss: torch.Tensor, step: int, method: str, output_dir: Path) -> None:
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"step {step}: the {method} loss is {loss.item()} (not finite); training stopped. "
            f"The last checkpoint (if any) is in {output_dir / 'checkpoint'}; lower the learning rate to retry."
        )


@dataclass
class Loop:
    """What one optimizer step needs."""

    config: TrainConfig
    student: torch.nn.Module  # what training forwards call: the model, or its DistributedDataParallel wrapper
    model: torch.nn.Module  # the plain student model: generation, output head, saving
    teacher: Teacher | None
    tokenizer: object
    accelerator: Accelerator
    output_dir: Path
    sampler: object = None  # HFSampler or rollout_vllm.VLLMSampler (on-policy methods)

    def global_sum(self, *values: float) -> list[float]:
        """Sums over processes (identity with one process)."""
        if self.accelerator.num_processes == 1:
            return list(values)
        return self.accelerator.reduce(torch.tensor(values, dtype=torch.float64), reduction="sum").tolist()

    def sync_gradients_now(self, last_micro_batch: bool):
        """DDP all-reduces (FSDP reduce-scatters) gradients at every backward; only the last micro-batch of a step
        needs it."""
        if isinstance(self.model, FSDPModule):
            self.model.set_requires_gradient_sync(last_micro_batch)
            return nullcontext()
        return nullcontext() if last_micro_batch else self.accelerator.no_sync(self.student)


def shard(model: torch.nn.Module, device: str, processes: int) -> None:
    """FSDP2 over all processes: each decoder layer is a unit, gathered for its forward and backward and resharded
    after; the rest (embeddings, final norm, output head, tied or not) is the root unit, which FSDP keeps gathered
    from the forward to the end of the backward, so the chunked loss can apply the output head outside forward."""
    mesh = init_device_mesh(device, (processes,))
    for layer in model.get_decoder().layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def release(model: torch.nn.Module) -> None:
    """Free a sharded model's gathered root after a forward that has no backward (the teacher)."""
    if isinstance(model, FSDPModule):
        model.reshard()


def make_sampler(config: TrainConfig, model, tokenizer):
    """The model in this process (CPU, small GPU runs) or vLLM (paper scale; imported only when asked for)."""
    if config.rollout_engine == "hf":
        return HFSampler(model, tokenizer, return_logprobs=config.importance_sampling, decoder=config.hf_decoder)
    from sdft_core.rollout_vllm import VLLMSampler

    return VLLMSampler(resolve_model_path(config.model), tokenizer, eos_token_ids(model, tokenizer),
                       mode=config.rollout_engine.removeprefix("vllm_"),
                       gpu_memory_utilization=config.vllm_gpu_memory_utilization,
                       server_url=config.vllm_server_url, seed=config.seed,
                       dtype="float32" if config.dtype == "float32" else "bfloat16", device=config.device,
                       max_model_len=config.max_prompt_tokens + config.max_new_tokens)


def rollout_seed(seed: int, step: int, group: int) -> int:
    """Randomness per (step, global micro-batch): rollouts do not depend on which process samples them."""
    return (seed * 1_000_003 + step * 10_007 + group) % (2**63)


def _groups(size: int, micro_batch_size: int) -> list[slice]:
    return [slice(i, i + micro_batch_size) for i in range(0, size, micro_batch_size)]


def _autocast(config: TrainConfig):
    """bf16 compute for "bfloat16" (float32 master weights) and "bfloat16_pure"; nothing for float32."""
    return nullcontext() if config.dtype == "float32" else torch.autocast(device_type=config.device,
                                                                         dtype=torch.bfloat16)


def _fixed_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int, device) -> Batch:
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    completion_ids, completion_mask_ = right_pad(completions, pad_id)
    return Batch(prompt_ids.to(device), prompt_mask.to(device), completion_ids.to(device), completion_mask_.to(device))


def completion_tokens(batch: Batch) -> list[list[int]]:
    """Each row's completion as a list of token ids, up to and including its first end-of-sequence token."""
    return [row[mask.bool()].tolist() for row, mask in zip(batch.completion_ids.cpu(), batch.completion_mask.cpu())]


def guided_fraction_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """DAgger's β at optimizer step `step` (1-based): guided_fraction at the first step, falling linearly to 0 at the
    last, so training ends on the student's own rollouts alone."""
    return config.guided_fraction * (1.0 - (step - 1) / max(total_steps, 1))


def sample_rollouts(loop: Loop, seed: int, student_prompts, teacher_prompts, demonstrations, beta: float) -> Batch:
    """One micro-batch of completions behind the student prompts: each row is the student's own sample, or with
    probability `beta` the guide's (config.guided_by: a sample of the teacher under its context, or the
    demonstration), drawn from `seed` so that it does not depend on the process that draws it."""
    config, tokenizer = loop.config, loop.tokenizer
    guided = (torch.rand(len(student_prompts), generator=torch.Generator().manual_seed(seed)) < beta).tolist()
    if not any(guided):
        return loop.sampler.sample(student_prompts, config.max_new_tokens, config.temperature, config.top_p, seed)

    completions: list[list[int]] = [[] for _ in student_prompts]
    own = [i for i, g in enumerate(guided) if not g]
    if own:
        own_batch = loop.sampler.sample([student_prompts[i] for i in own], config.max_new_tokens, config.temperature,
                                        config.top_p, seed)
        for i, tokens in zip(own, completion_tokens(own_batch)):
            completions[i] = tokens
    rows = [i for i, g in enumerate(guided) if g]
    if config.guided_by == "demonstration":
        guide = [demonstrations[i] for i in rows]
    else:
        torch.manual_seed(seed + 1)
        with loop.teacher.forwarding():
            guide = completion_tokens(generate(loop.teacher.model, tokenizer, [teacher_prompts[i] for i in rows],
                                               config.max_new_tokens, config.temperature, config.top_p,
                                               decoder=config.hf_decoder))
    for i, tokens in zip(rows, guide):
        completions[i] = tokens
    return _fixed_batch(student_prompts, completions, tokenizer.pad_token_id, next(loop.model.parameters()).device)


def distillation_step(loop: Loop, step: int, first_group: int, student_prompts, teacher_prompts,
                      fixed_completions: list[list[int]] | None = None, demonstrations=None, beta: float = 0.0
                      ) -> dict:
    """SDFT (Algorithm 1 lines 3–18) when `fixed_completions` is None: sample from the student (a share `beta` of the
    rows from the guide, see `sample_rollouts`), then score the samples under the teacher's context and the
    student's. Offline distillation passes teacher samples instead.

    All completions of this process's share of the batch come first (so the global token count for normalisation is
    known), then one forward/backward per micro-batch. Returns the step's metrics, summed over processes."""
    config, tokenizer = loop.config, loop.tokenizer
    started = time.perf_counter()
    groups = _groups(len(student_prompts), config.micro_batch_size)
    device = next(loop.model.parameters()).device
    batches = []
    for index, group in enumerate(groups):
        if fixed_completions is None:
            with _autocast(config):
                batches.append(sample_rollouts(loop, rollout_seed(config.seed, step, first_group + index),
                                               student_prompts[group], teacher_prompts[group],
                                               demonstrations[group] if demonstrations else None, beta))
        else:
            batches.append(_fixed_batch(student_prompts[group], fixed_completions[group], tokenizer.pad_token_id,
                                        device))
    weights = [loss_weights(b.completion_mask, config.mask_first_tokens) for b in batches]
    local_tokens = float(sum(w.sum() for w in weights))
    global_tokens, = loop.global_sum(local_tokens)
    normalizer = max(global_tokens if config.normalize == "tokens" else float(config.batch_size), 1.0)
    sampled = time.perf_counter()

    loss_total = divergence_total = teacher_seconds = ratio_sum = capped = 0.0
    for index, (group, batch, weight) in enumerate(zip(groups, batches, weights)):
        teacher_started = time.perf_counter()
        teacher_batch = with_teacher_prompts(batch, teacher_prompts[group], tokenizer.pad_token_id)
        with (torch.no_grad(), _autocast(config), loop.teacher.forwarding(),
              inference_kernels(loop.teacher.model, teacher_batch.input_ids.numel())):
            teacher_hidden = completion_hidden(loop.teacher.model, teacher_batch)
        separate_teacher = loop.teacher.model is not loop.model
        if separate_teacher and isinstance(loop.teacher.model, FSDPModule):
            loop.teacher.model.unshard()  # its output head, for the loss below
        teacher_seconds += time.perf_counter() - teacher_started
        with loop.sync_gradients_now(index == len(groups) - 1):
            with _autocast(config):
                loss, divergence, importance = distillation_loss(
                    completion_hidden(loop.student, batch), teacher_hidden, batch.completion_ids, weight,
                    loop.model.get_output_embeddings(), loop.teacher.model.get_output_embeddings(),
                    estimator=config.estimator, divergence_fn=config.divergence(), chunk_size=config.loss_chunk_size,
                    sampler_logp=batch.sampler_logprobs if config.importance_sampling else None,
                    is_cap=config.is_cap, is_form=config.is_form)
            _check_finite(loss, step, config.method, loop.output_dir)
            # DDP averages gradients over processes; the loss is normalised globally, so scale the average back up.
            (loss * loop.accelerator.num_processes / normalizer).backward()
        loss_total += loss.item()
        divergence_total += divergence.item()
        ratio_sum += importance["is_ratio_sum"]
        capped += importance["is_capped"]
        if separate_teacher:
            release(loop.teacher.model)
    eos_ids = torch.tensor(eos_token_ids(loop.model, tokenizer))
    last_tokens = torch.cat([b.completion_ids.gather(1, b.completion_mask.sum(1, keepdim=True) - 1).cpu()
                             for b in batches])
    lengths = sum(b.completion_mask.sum().item() for b in batches)
    loss_total, divergence_total, ratio_sum, capped, lengths, stopped = loop.global_sum(
        loss_total, divergence_total, ratio_sum, capped, lengths, torch.isin(last_tokens, eos_ids).sum().item())
    importance_stats = ({"is_ratio_mean": ratio_sum / global_tokens, "is_capped_fraction": capped / global_tokens}
                        if config.importance_sampling else {})
    return {
        **importance_stats,
        "loss": loss_total / normalizer,
        "kl_per_token": divergence_total / max(global_tokens, 1.0),
        "loss_tokens": global_tokens,
        "completion_length": lengths / config.batch_size,
        "stopped_fraction": stopped / config.batch_size,
        "seconds_rollout": sampled - started,
        "seconds_teacher": teacher_seconds,
        "seconds_student": time.perf_counter() - sampled - teacher_seconds,
    }


def likelihood_step(loop: Loop, step: int, student_prompts, targets) -> dict:
    """SFT / DFT / CPT / SFT on teacher samples: next-token loss on the targets after the student prompt."""
    config = loop.config
    started = time.perf_counter()
    local_tokens = float(sum(len(t) for t in targets))
    global_tokens, = loop.global_sum(local_tokens)
    normalizer = global_tokens if config.normalize == "tokens" else float(config.batch_size)
    device = next(loop.model.parameters()).device
    groups = _groups(len(student_prompts), config.micro_batch_size)
    loss_total = nll_total = 0.0
    for index, group in enumerate(groups):
        batch = _fixed_batch(student_prompts[group], targets[group], loop.tokenizer.pad_token_id, device)
        with loop.sync_gradients_now(index == len(groups) - 1):
            with _autocast(config):
                loss, nll = likelihood_loss(completion_hidden(loop.student, batch), batch.completion_ids,
                                            batch.completion_mask, loop.model.get_output_embeddings(),
                                            dft=config.method == "dft", chunk_size=config.loss_chunk_size)
            _check_finite(loss, step, config.method, loop.output_dir)
            (loss * loop.accelerator.num_processes / normalizer).backward()
        loss_total += loss.item()
        nll_total += nll.item()
    loss_total, nll_total = loop.global_sum(loss_total, nll_total)
    return {"loss": loss_total / normalizer, "nll_per_token": nll_total / global_tokens, "loss_tokens": global_tokens,
            "seconds_student": time.perf_counter() - started}


_FULL = dcp_state.StateDictOptions(full_state_dict=True, cpu_offload=True)


def _full_state(model) -> dict:
    """The unsharded state dict (a collective when sharded: every process calls it; the main one gets it)."""
    if not isinstance(model, FSDPModule):
        return model.state_dict()
    state = dcp_state.get_model_state_dict(model, options=_FULL)
    # Gathering copies tied parameters (input and output embeddings) apart; tie them again, so that saving writes
    # one tensor, as it does for an unsharded model.
    first_name: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        first = first_name.setdefault(id(parameter), name)
        if first != name and first in state and name in state:
            state[name] = state[first]
    return state


def _save_checkpoint(path: Path, run_id: str, step: int, student, teacher, optimizer, scheduler, main: bool) -> None:
    """Full, unsharded state keyed by parameter names, so any process count and sharding can resume it. Every
    process calls this; the main one writes."""
    options = _FULL if isinstance(student, FSDPModule) else dcp_state.StateDictOptions(full_state_dict=True)
    lora = is_lora(student)  # the adapters (the student's and the EMA teacher's) are all that changes
    state = {
        "run_id": run_id, "step": step, "student": adapter_state_dict(student) if lora else _full_state(student),
        "teacher": _full_state(teacher.model) if teacher and teacher.kind != "live" and not lora else None,
        "optimizer": dcp_state.get_optimizer_state_dict(student, optimizer, options=options),
        "scheduler": scheduler.state_dict(),
    }
    if main:
        atomic_write(path, lambda tmp: torch.save(state, tmp))


def _restore_checkpoint(path: Path, student, teacher, optimizer, scheduler) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    options = dcp_state.StateDictOptions(full_state_dict=True)
    if is_lora(student):
        load_adapter_state_dict(student, state["student"])
    else:
        dcp_state.set_model_state_dict(student, state["student"], options=options)
    if state["teacher"] is not None:
        dcp_state.set_model_state_dict(teacher.model, state["teacher"], options=options)
    dcp_state.set_optimizer_state_dict(student, optimizer, state["optimizer"], options=options)
    scheduler.load_state_dict(state["scheduler"])
    return state["step"]


def _read_metrics(path: Path, up_to_step: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["step"] <= up_to_step]


def teacher_samples(teacher: Teacher, tokenizer, examples, teacher_prompts, config: TrainConfig, cache: Path,
                    run_id: str, write: bool = True) -> list[list[int]]:
    """One sample per example from the teacher's context (for offline distillation and SFT on teacher samples;
    paper §4.5). Generated in fixed batches of 8 from `config.seed`, so both offline methods see the same samples;
    cached in the run folder so a resumed run reuses them."""
    cached = read_cache(cache, "sdft")
    if cached is not None and cached.get("run_id") == run_id:
        return [row["tokens"] for row in cached["samples"]]
    torch.manual_seed(config.seed)  # the same samples whatever the method and process count
    samples: list[list[int]] = []
    for group in tqdm(_groups(len(examples), 8), desc="teacher samples", mininterval=2.0, ncols=100):
        with teacher.forwarding():
            batch = generate(teacher.model, tokenizer, teacher_prompts[group], config.max_new_tokens,
                             config.temperature, config.top_p, decoder=config.hf_decoder)
        samples += completion_tokens(batch)
    rows = [{"id": e.id, "tokens": t, "text": tokenizer.decode(t, skip_special_tokens=True)}
            for e, t in zip(examples, samples)]
    if write:  # every process computes the same samples; one writes them
        write_json(cache, {"run_id": run_id, "samples": rows})
    return samples


# The modules whose code decides what a run computes. Their source is part of the run id, so that a change to the
# loss, the loop or the sampler retrains a finished run instead of keeping its old results (an edit to a comment
# in them does too: the hash cannot tell).
TRAINING_SOURCES = ("config", "data", "forward", "lora", "loss", "model", "prompts", "rollout", "rollout_vllm",
                    "teacher", "train")


TRAINING_SOURCE_DIR = Path(__file__).resolve().parent


def training_code_fingerprint() -> str:
    return fingerprint([(TRAINING_SOURCE_DIR / f"{name}.py").read_text() for name in TRAINING_SOURCES])


def data_fingerprint(examples: list[Example]) -> str:
    return fingerprint([dataclasses.asdict(e) for e in examples])


def run_id_for(config: TrainConfig, examples: list[Example]) -> str:
    values = dataclasses.asdict(config)
    # How the state is spread over processes, and which of two decoders draws the same tokens, do not change the result.
    del values["sharding"], values["hf_decoder"]
    if config.lora_rank is None:  # the other LoRA fields do nothing without an adapter (and full runs keep their ids)
        for name in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules"):
            del values[name]
    return fingerprint(values, [dataclasses.asdict(e) for e in examples], training_code_fingerprint())


class RunFolderInUse(FileExistsError):
    """The output folder holds another run than the one asked for, and overwrite was not given."""


class CorruptCheckpoint(RuntimeError):
    """The run's checkpoint cannot be read, and overwrite (discard it, train from step 0) was not given."""


OVERWRITE_HINT = ("pass overwrite=True (`python -m experiments.train_run --overwrite`, or `overwrite = True` in "
                  "notebooks/train.ipynb)")


def checkpoint_run_id(path: Path, overwrite: bool) -> str | None:
    """The run id in the checkpoint at `path`; None if there is none, or if it cannot be read and overwrite allows it
    to be discarded. Memory-mapped: only its header is read, not the weights."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)["run_id"]
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        if overwrite:
            return None
        reason = str(error).split(". ")[0] or type(error).__name__  # torch's first sentence says what is wrong
        raise CorruptCheckpoint(
            f"the checkpoint {path} cannot be read ({reason}): it is damaged, e.g. its save or a copy was cut short. "
            f"Nothing was changed. To train {path.parent.parent} again from step 0, delete {path.parent} or "
            f"{OVERWRITE_HINT}.") from error


def what_differs(stored: dict | None, config: TrainConfig, examples: list[Example]) -> list[str]:
    """How the run recorded in a folder's config.json (`stored`) differs from `config` trained on `examples` with
    this training code: each differing field as "name old → new", then the data and the code."""
    if stored is None:
        return ["unknown: the folder has no config.json"]
    asked = json.loads(json.dumps(dataclasses.asdict(config), default=str))  # as config.json holds it
    held = stored["config"]
    differences = [f"{name} {held.get(name, '(not a field)')!r} → {asked.get(name, '(not a field)')!r}"
                   for name in sorted({*held, *asked}) if held.get(name) != asked.get(name)]
    if "data_fingerprint" not in stored:  # a config.json written before the data and code were recorded
        differences.append("the data or the training code may differ too (this config.json does not record them)")
        return differences
    if stored["data_fingerprint"] != data_fingerprint(examples):
        differences.append(f"the training data ({stored['num_examples']} examples there, {len(examples)} now)")
    if stored["training_code"] != training_code_fingerprint():
        differences.append(f"the training code (sdft_core/{{{','.join(TRAINING_SOURCES)}}}.py)")
    return differences


def train(config: TrainConfig, examples: list[Example], output_dir: Path | str, stop_after_step: int | None = None,
          progress: bool = True, overwrite: bool = False) -> dict:
    """Train (or resume, or skip if finished) one run and return its summary.

    stop_after_step: return early after that optimizer step, leaving a checkpoint (used to test resumption).
    overwrite: replace what `output_dir` holds that this run cannot continue: another run (RunFolderInUse without
    it, naming what differs) or a checkpoint that cannot be read (CorruptCheckpoint without it); training then
    starts from step 0. A finished run of the same id whose model folder is missing (a clone) is retrained either way.
    """
    output_dir = Path(output_dir)
    accelerator = Accelerator(cpu=config.device == "cpu")
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if config.batch_size % (world * config.micro_batch_size):
        raise ValueError(f"batch_size ({config.batch_size}) must be a multiple of processes ({world}) × "
                         f"micro_batch_size ({config.micro_batch_size})")
    share = config.batch_size // world
    run_id = run_id_for(config, examples)
    summary_path, config_path = output_dir / "summary.json", output_dir / "config.json"
    checkpoint_path = output_dir / "checkpoint" / "state.pt"
    summary = read_json(summary_path) if summary_path.exists() else None
    model_missing = config.save_model and not (output_dir / "model").is_dir()
    if summary is not None and summary["run_id"] == run_id and not model_missing:
        print(f"[sdft] {output_dir} is already finished (run {run_id}); skipping.")
        return summary
    ensure_writable_folder(output_dir)  # before the model loads: a bad path fails now, not at the first write
    stored = read_json(config_path) if config_path.exists() else None
    checkpoint_run = checkpoint_run_id(checkpoint_path, overwrite)
    # Every process decides from the same files, so all of them refuse together.
    held = {record["run_id"] for record in (summary, stored) if record is not None} | {checkpoint_run}
    if held - {run_id, None} and not overwrite:
        differences = "; ".join(what_differs(stored, config, examples))
        raise RunFolderInUse(
            f"{output_dir} holds another run than the one asked for ({differences}). Nothing in it was changed. "
            f"Train into another folder (the train notebook's results_dir or run_name), or {OVERWRITE_HINT} to "
            f"replace it.")
    accelerator.wait_for_everyone()
    if main:
        if summary is not None:
            # Model folders are not committed: a clone holds the summary of a finished run but not its weights.
            why = "its model folder is missing" if summary["run_id"] == run_id else "it holds a different run"
            print(f"[sdft] {output_dir}: {why}; retraining it as {run_id}.")
            summary_path.unlink()
        if checkpoint_path.exists() and checkpoint_run != run_id:
            why = "cannot be read" if checkpoint_run is None else f"belongs to run {checkpoint_run}"
            print(f"[sdft] the checkpoint {checkpoint_path} {why}; discarding it: training starts from step 0.")
            shutil.rmtree(checkpoint_path.parent)
    accelerator.wait_for_everyone()

    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    # Mixed precision keeps the master weights (and so AdamW's state and the gradients) in float32: an Adam step
    # of the paper's size (~lr) is below half the bf16 spacing of most weights and would round to zero.
    # A LoRA base is frozen: under mixed precision it is held in bf16, and only the adapters are float32 masters.
    lora_mixed = config.lora_rank is not None and config.dtype == "bfloat16"
    model = load_model(config.model, "bfloat16" if config.dtype == "bfloat16_pure" or lora_mixed else "float32",
                       config.device)
    if config.dtype == "bfloat16_pure" and main:
        print("[sdft] warning: dtype='bfloat16_pure' keeps the weights and AdamW's state in bf16: updates smaller "
              "than half the bf16 spacing of a weight are lost (most of them at lr ≤ 5e-5). Use dtype='bfloat16' "
              "(float32 master weights) unless memory forces this.")
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if config.lora_rank is not None:
        if config.gradient_checkpointing:
            model.enable_input_require_grads()  # the frozen embeddings' output must carry grad for recomputation
        model = apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout,
                           config.lora_target_modules)
        if config.dtype != "bfloat16_pure":
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()
    model.train()
    teacher = None
    if config.method in TEACHER_METHODS:
        initial = load_model(config.teacher_model, "float32", config.device) if config.teacher_model else model
        teacher = Teacher(initial, config.teacher_kind, config.ema_alpha)
    # FSDP2 wherever a process group exists: several processes, or one (a single GPU, to test the sharded path).
    sharded = config.sharding == "fsdp" and (world > 1 or torch.distributed.is_initialized())
    if sharded:
        shard(model, config.device, world)
        if teacher and teacher.model is not model:
            shard(teacher.model, config.device, world)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    repeats = config.rollouts_per_prompt if config.method == "sdft" else 1
    order = full_batches(data_order(len(examples), config.epochs, config.seed, repeats), config.batch_size)
    total_steps = len(order) // config.batch_size
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, total_steps), total_steps)

    truncation = TruncationCounter()
    if config.method == "cpt":  # raw documents: a single document-start token stands in for the prompt
        student_prompts = [[tokenizer.bos_token_id or tokenizer.eos_token_id] for _ in examples]
    else:
        student_prompts = [student_prompt_ids(tokenizer, e, config.max_prompt_tokens) for e in examples]
    if teacher:
        teacher_prompts = [teacher_prompt_ids(tokenizer, e, config.max_teacher_prompt_tokens,
                                              config.teacher_context, truncation, config.teacher_template)
                           for e in examples]
        if truncation.truncated and main:
            print(f"[sdft] warning: {truncation.truncated} of {len(examples)} teacher prompts were longer than "
                  f"max_teacher_prompt_tokens={config.max_teacher_prompt_tokens} and were shortened "
                  f"({truncation.tokens_removed} tokens of privileged text removed in total).")
    if config.method in ("offline_distill", "sft_teacher_samples"):
        targets = teacher_samples(teacher, tokenizer, examples, teacher_prompts, config,
                                  output_dir / "teacher_samples.json", run_id, write=main)
    elif config.method != "sdft" or config.guided_by == "demonstration":
        targets = [encode(tokenizer, e.demonstration) + [tokenizer.eos_token_id] for e in examples]

    start_step = 0
    if checkpoint_path.exists():
        start_step = _restore_checkpoint(checkpoint_path, model, teacher, optimizer, scheduler)
        if main:
            print(f"[sdft] resuming {output_dir} from the checkpoint after step {start_step} of {total_steps}.")
    # DistributedDataParallel when launched with several processes and not sharded; the model itself otherwise.
    loop = Loop(config, model if sharded else accelerator.prepare_model(model), model, teacher, tokenizer,
                accelerator, output_dir,
                make_sampler(config, model, tokenizer) if config.method == "sdft" else None)
    if start_step and loop.sampler:  # a vLLM engine starts from the initial weights, the student from the checkpoint
        loop.sampler.sync_weights(model)
    metrics_path = output_dir / "metrics.jsonl"
    metrics = _read_metrics(metrics_path, start_step)
    if main:
        write_json(config_path, {"run_id": run_id, "num_examples": len(examples), "total_steps": total_steps,
                                 "processes": world, "config": dataclasses.asdict(config),
                                 "data_fingerprint": data_fingerprint(examples),
                                 "training_code": training_code_fingerprint()})
        write_jsonl(metrics_path, metrics)

    started = time.perf_counter()
    bar = tqdm(range(start_step, total_steps), desc=f"train {config.method}", initial=start_step, total=total_steps,
               disable=not (progress and main), mininterval=2.0, dynamic_ncols=False, ncols=100)
    for step in bar:
        step_started = time.perf_counter()
        batch_indices = order[step * config.batch_size : (step + 1) * config.batch_size]
        mine = batch_indices[rank * share : (rank + 1) * share]
        first_group = rank * share // config.micro_batch_size
        if config.method == "sdft":
            beta = guided_fraction_at(config, step + 1, total_steps)
            row = distillation_step(loop, step + 1, first_group, [student_prompts[i] for i in mine],
                                    [teacher_prompts[i] for i in mine], None,
                                    [targets[i] for i in mine] if config.guided_by == "demonstration" else None, beta)
            if config.guided_fraction:
                row["guided_fraction"] = beta
        elif config.method == "offline_distill":
            row = distillation_step(loop, step + 1, first_group, [student_prompts[i] for i in mine],
                                    [teacher_prompts[i] for i in mine], [targets[i] for i in mine])
        else:
            row = likelihood_step(loop, step + 1, [student_prompts[i] for i in mine], [targets[i] for i in mine])
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        grad_norm = grad_norm.full_tensor() if isinstance(grad_norm, DTensor) else grad_norm
        row.update(step=step + 1, epoch=(step + 1) * config.batch_size / (len(examples) * repeats),
                   learning_rate=scheduler.get_last_lr()[0], grad_norm=grad_norm.item())
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if teacher:
            teacher.update(model)
        if loop.sampler:
            loop.sampler.sync_weights(model)
        row["seconds_step"] = time.perf_counter() - step_started
        metrics.append(row)
        if main:
            with metrics_path.open("a") as handle:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        finished_step = step + 1
        due = config.checkpoint_every and finished_step % config.checkpoint_every == 0
        if finished_step < total_steps and (due or finished_step == stop_after_step):
            _save_checkpoint(checkpoint_path, run_id, finished_step, model, teacher, optimizer, scheduler, main)
            accelerator.wait_for_everyone()
        if finished_step == stop_after_step and finished_step < total_steps:
            bar.close()
            return {"run_id": run_id, "stopped_after_step": finished_step}
    bar.close()

    summary = {
        "run_id": run_id, "method": config.method, "steps": total_steps, "examples_seen": len(order),
        "processes": world, "sharded": sharded, "train_seconds_this_session": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "teacher_prompts_truncated": truncation.truncated,
        "final_loss": metrics[-1]["loss"] if metrics else None,
    }
    lora = is_lora(model)
    weights = (merged_state_dict(model) if lora else _full_state(model)) if config.save_model else None
    if main:
        if config.save_model:
            staging = output_dir / "model.partial"
            shutil.rmtree(staging, ignore_errors=True)
            # A LoRA student is saved merged, as a plain model that every evaluation loads unchanged.
            (model.get_base_model() if lora else model).save_pretrained(staging, state_dict=weights)
            tokenizer.save_pretrained(staging)
            if lora:
                adapter_staging = output_dir / "adapter.partial"
                shutil.rmtree(adapter_staging, ignore_errors=True)
                model.save_pretrained(adapter_staging, selected_adapters=[STUDENT_ADAPTER])
                shutil.rmtree(output_dir / "adapter", ignore_errors=True)
                adapter_staging.rename(output_dir / "adapter")
            shutil.rmtree(output_dir / "model", ignore_errors=True)
            staging.rename(output_dir / "model")
            summary["weights_fingerprint"] = weights_fingerprint(str(output_dir / "model"))
        summary["provenance"] = provenance(summary["train_seconds_this_session"])
        write_json(summary_path, summary)
        shutil.rmtree(checkpoint_path.parent, ignore_errors=True)
    accelerator.wait_for_everyone()
    return summary
