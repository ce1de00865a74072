"""What fits where at paper scale, and what the paper profile costs: arithmetic from real parameter counts.

Nothing here touches a GPU or measures anything: the models are built on PyTorch's meta device from the Hugging Face
config.json files in benchmarks/configs/ (shapes, no storage), so the counts are exact and the rest is bytes per
parameter and FLOPs per token. `benchmarks/lora_memory.py` prints the tables.

- `memory_per_gpu`: GB each GPU holds before activations and KV cache, by part, for full fine-tuning (FSDP2 over N
  processes shards the full-state parts) and LoRA (replicated), under each TrainConfig.dtype.
- `placement` / `placement_table`: the setup the kit recommends for SDFT on a GPU of a given size.
- `step_costs` / `gpu_hours_per_figure` / `gpu_hours_table`: FLOPs and GPU-hours of every step of a plan (the paper
  profile, `experiments.plans.paper_plan`), per figure and in total, under the stated assumptions (the module
  constants below: dataset sizes, token lengths, efficiencies; each can be overridden by argument).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

GB = 1e9
CONFIGS = Path(__file__).resolve().parent.parent / "benchmarks" / "configs"
MODEL_CONFIGS = {"0.5B": CONFIGS / "qwen2.5-0.5b.json", "1.5B": CONFIGS / "qwen2.5-1.5b.json",
                 "7B": CONFIGS / "qwen2.5-7b.json"}
# Hub ids the plans name → the config with the same shapes (an -Instruct model has its base model's shapes).
HUB_MODELS = {f"Qwen/Qwen2.5-{size}{suffix}": size for size in MODEL_CONFIGS for suffix in ("", "-Instruct")}
GPU_SIZES_GB = (24, 48, 80, 141)  # RTX 4090 / L40S / A100-H100 80 GB / H200
DEFAULT_LORA_RANK = 16  # the kit's LoRA runs (experiments.plans.KNOWLEDGE_LORA) and the README's 7B table


# ==== Parameter counts ===============================================================================================


def _resolve(model_config: str | Path) -> Path:
    """A key of MODEL_CONFIGS ("7B"), a hub id of HUB_MODELS, or a path to a config.json."""
    key = str(model_config)
    if key in MODEL_CONFIGS:
        return MODEL_CONFIGS[key]
    if key in HUB_MODELS:
        return MODEL_CONFIGS[HUB_MODELS[key]]
    return Path(model_config)


@lru_cache(maxsize=None)
def _counts(config_path: str, rank: int) -> tuple[int, int, int]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sdft_core.config import TrainConfig
    from sdft_core.lora import apply_lora

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_path))
        base = sum(p.numel() for p in model.parameters())
        # FLOPs per token come from the matrix multiplies: every Linear (attention, MLP, the output head, which is a
        # matmul even when tied to the embeddings). The input embedding is a lookup, not a matmul; norms and biases
        # are a few FLOPs per parameter. So P_matmul is the base count less the untied input embedding.
        matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        defaults = TrainConfig(lora_rank=rank)
        wrapped = apply_lora(model, rank, defaults.lora_alpha, 0.0, defaults.lora_target_modules)
        adapter = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    return base, adapter, matmul


def parameter_counts(config_path: str | Path, rank: int) -> tuple[int, int]:
    """(base parameters, LoRA adapter parameters) of the model described by a Hugging Face config.json, the adapter
    being the kit's own LoRA (sdft_core.lora.apply_lora, default target modules) at `rank`."""
    base, adapter, _ = _counts(str(_resolve(config_path)), rank)
    return base, adapter


def matmul_parameters(config_path: str | Path) -> int:
    """Parameters that take part in a matrix multiply per token (2 FLOPs each in a forward): see _counts."""
    return _counts(str(_resolve(config_path)), DEFAULT_LORA_RANK)[2]


# ==== Memory per GPU =================================================================================================

# Bytes per parameter of each part, by TrainConfig.dtype, read off sdft_core/train.py, teacher.py and lora.py:
# - weights: the student's parameters. "float32" and "bfloat16" (mixed precision) load the student in float32 (the
#   master copy; bf16 autocast casts per op); "bfloat16_pure" loads it in bf16.
# - gradients: same dtype as the parameter they belong to.
# - AdamW moments: exp_avg and exp_avg_sq, each of the parameter's dtype (torch.optim.AdamW): 2 × 4 or 2 × 2.
# - EMA teacher: `copy.deepcopy(student).to(torch.float32)` whatever the student's dtype (teacher.py: a bf16 shadow
#   would round α·(θ − φ) away), so 4 bytes in every policy. (A frozen teacher is the same copy; a live one is none.)
# - autocast weight cache: under mixed precision the student's forward runs inside `torch.autocast`, which caches the
#   bf16 cast of every leaf parameter that requires grad until the autocast block exits: a bf16 copy of the whole
#   student (2 bytes) alive at the end of each micro-batch's forward, and (without gradient checkpointing) kept by
#   autograd for the backward. Measured on CPU (a stack of Linear layers: +2 bytes/param inside the block). Under
#   FSDP2 the unsharded parameters are views into the all-gather buffer, which autocast does not cache (measured the
#   same way with FSDP2 over 1 process: nothing held), so the part is 0 when sharded. No cast, no cache, in the
#   float32 and bfloat16_pure policies.
# - vLLM copy: a colocated engine holds the (merged) weights in its own dtype (train.make_sampler: float32 for
#   "float32", else bf16) on EVERY GPU (tensor_parallel 1: not sharded).
FULL_BYTES = {
    "float32": {"weights": 4, "gradients": 4, "AdamW moments": 8, "EMA teacher": 4, "autocast cache": 0, "vLLM": 4},
    "bfloat16": {"weights": 4, "gradients": 4, "AdamW moments": 8, "EMA teacher": 4, "autocast cache": 2, "vLLM": 2},
    "bfloat16_pure": {"weights": 2, "gradients": 2, "AdamW moments": 4, "EMA teacher": 4, "autocast cache": 0,
                      "vLLM": 2},
}
# LoRA: the frozen base is held once (the teacher is a second adapter over it, lora.add_ema_adapter); it is float32
# under "float32" and bf16 otherwise (train.py loads it in bf16 for mixed precision: a frozen base has no updates to
# lose). The adapters are float32 in EVERY policy: train.py upcasts them under mixed precision and peft's
# autocast_adapter_dtype upcasts them under bfloat16_pure too (checked: peft 0.21.2 on a bf16 base), and the EMA
# adapter is a float32 clone. So the adapter, its gradients, its AdamW moments and the EMA adapter are 4, 4, 8 and 4
# bytes per adapter parameter; the autocast cache holds bf16 casts of the (float32, trainable) adapters only.
LORA_BASE_BYTES = {"float32": 4, "bfloat16": 2, "bfloat16_pure": 2}
LORA_ADAPTER_BYTES = {"weights": 4, "gradients": 4, "AdamW moments": 8, "EMA teacher": 4}
PARTS = ("weights", "gradients", "AdamW moments", "EMA teacher", "autocast cache", "vLLM copy")


def memory_per_gpu(base: int, adapter: int, method_setup: str, processes: int = 1, dtype: str = "bfloat16",
                   vllm: bool = True) -> dict[str, float]:
    """GB held on each GPU before activations and KV cache, by part (PARTS), for SDFT with an EMA teacher.

    method_setup "full": full fine-tuning; with processes > 1 the kit's FSDP2 (`sharding="fsdp"`) shards the
    weights, gradients, AdamW moments and the EMA teacher, so each GPU holds 1/N of them; the vLLM copy is not
    sharded. "lora": the adapter of `adapter` parameters over a frozen base of `base`; replicated (DDP: FSDP with
    LoRA is refused by the kit), so nothing is divided by `processes`. vllm: a colocated engine's copy of the weights
    (rollout_engine="vllm_colocate"); its KV cache is not counted here (it comes out of the headroom, see placement).

    Why the parts are summed although two of them belong to different phases of a step (the vLLM weights are
    offloaded by sleep mode during the forward/backward; gradients are None and the autocast cache is gone during
    rollouts): PyTorch's caching allocator keeps the blocks it freed reserved, and the kit calls no
    torch.cuda.empty_cache() before waking the engine, so the device holds the training phase's peak and the
    engine's memory at the same time.
    """
    if dtype not in FULL_BYTES:
        raise ValueError(f"dtype must be one of {tuple(FULL_BYTES)}, got {dtype!r}")
    if processes < 1:
        raise ValueError(f"processes must be ≥ 1, got {processes}")
    full = FULL_BYTES[dtype]
    vllm_gb = full["vLLM"] * base / GB if vllm else 0.0
    if method_setup == "full":
        shards = processes  # FSDP2 over all processes: every full-state part divided evenly
        return {"weights": full["weights"] * base / GB / shards,
                "gradients": full["gradients"] * base / GB / shards,
                "AdamW moments": full["AdamW moments"] * base / GB / shards,
                "EMA teacher": full["EMA teacher"] * base / GB / shards,
                "autocast cache": full["autocast cache"] * base / GB if processes == 1 else 0.0,
                "vLLM copy": vllm_gb}
    if method_setup == "lora":
        cache = 2 * adapter / GB if dtype == "bfloat16" else 0.0
        return {"weights": (LORA_BASE_BYTES[dtype] * base + LORA_ADAPTER_BYTES["weights"] * adapter) / GB,
                "gradients": LORA_ADAPTER_BYTES["gradients"] * adapter / GB,
                "AdamW moments": LORA_ADAPTER_BYTES["AdamW moments"] * adapter / GB,
                "EMA teacher": LORA_ADAPTER_BYTES["EMA teacher"] * adapter / GB,
                "autocast cache": cache, "vLLM copy": vllm_gb}
    raise ValueError(f"method_setup must be 'full' or 'lora', got {method_setup!r}")


# ==== Placement ======================================================================================================

# What must stay free on each GPU beyond the parts above: activations (gradient checkpointing on: the saved layer
# inputs plus one layer's recomputation), the chunked KL's logits, the gathered FSDP units (the root unit — embeddings
# and output head — stays gathered through forward and backward, plus the layer being computed), the vLLM engine's
# KV cache, the CUDA context, NCCL buffers and allocator fragmentation. A fraction of the GPU, not a fixed GB:
# vLLM's KV cache is itself set as a fraction of the GPU (vllm_gpu_memory_utilization), and the allocator's slack
# grows with what is allocated. 25% because at 7B (the paper's model) one process of a paper run needs about that on
# an 80 GB GPU: checkpointed layer inputs 28 layers × 4 sequences × 2,304 tokens × 3,584 × 2 B ≈ 1.9 GB, one
# layer's recomputation ≈ 1.9 GB, the root unit gathered in float32 ≈ 4.4 GB, chunked logits ≈ 1 GB, a KV cache for
# 16 rollouts of 2,304 tokens at 57 KB/token ≈ 2.1 GB, context and slack ≈ 3–5 GB: ≈ 14–16 GB of the 20 GB left.
# Smaller models need less of a smaller GPU, so 25% is conservative for them. The engine reserves
# vllm_gpu_memory_utilization × the GPU for its weights and KV cache together, whatever the rollouts need: set it to
# about (vLLM copy + KV cache) / GPU (7B on 80 GB: (15.2 + 2.1) / 80 ≈ 0.22; the default 0.3 reserves 8.8 GB of KV
# cache, more than this headroom budgets for).
HEADROOM_FRACTION = 0.25
FSDP_PROCESSES = (2, 4, 8)


@dataclass(frozen=True)
class Placement:
    setup: str  # "full" (full fine-tuning, the paper), "lora", or "does not fit"
    processes: int  # GPUs (one process each); 0 when nothing fits
    sharding: str  # "replicate" (one process: nothing to shard) or "fsdp"
    lora_rank: int | None
    gb_per_gpu: float  # memory_per_gpu's total for this setup (before activations and KV cache)
    rollout_engine: str = "vllm_colocate"  # "hf" where the vLLM copy is what does not fit (LoRA on small GPUs)


def fits(gb_per_gpu: float, gpu_gb: float, headroom: float = HEADROOM_FRACTION) -> bool:
    """Whether a setup holding `gb_per_gpu` leaves at least `headroom` of the GPU free."""
    return gb_per_gpu <= (1.0 - headroom) * gpu_gb


def placement(model_config: str | Path, gpu_gb: float, max_gpus: int = 8, dtype: str = "bfloat16",
              lora_rank: int = DEFAULT_LORA_RANK, vllm: bool = True,
              headroom: float = HEADROOM_FRACTION) -> Placement:
    """The kit's recommendation for SDFT with `model_config` (a key of MODEL_CONFIGS, a hub id or a config.json) on
    GPUs of `gpu_gb`: full fine-tuning on one GPU if it fits with `headroom` left; else full fine-tuning with FSDP
    over the smallest N in FSDP_PROCESSES (up to max_gpus) that fits; else LoRA (rank `lora_rank`) on one GPU, with
    the colocated vLLM engine if that fits, else with HF rollouts (no second copy of the weights); else "does not
    fit". vllm=False: every setup samples with HF (no vLLM copy)."""
    base, adapter = parameter_counts(model_config, lora_rank)

    def total(setup: str, processes: int, with_vllm: bool) -> float:
        return sum(memory_per_gpu(base, adapter, setup, processes, dtype, with_vllm).values())

    engine = "vllm_colocate" if vllm else "hf"
    if fits(gb := total("full", 1, vllm), gpu_gb, headroom):
        return Placement("full", 1, "replicate", None, gb, engine)
    for processes in (n for n in FSDP_PROCESSES if n <= max_gpus):
        if fits(gb := total("full", processes, vllm), gpu_gb, headroom):
            return Placement("full", processes, "fsdp", None, gb, engine)
    for with_vllm in ((True, False) if vllm else (False,)):
        if fits(gb := total("lora", 1, with_vllm), gpu_gb, headroom):
            return Placement("lora", 1, "replicate", lora_rank, gb, "vllm_colocate" if with_vllm else "hf")
    return Placement("does not fit", 0, "replicate", None, total("lora", 1, False), "hf")


def describe(p: Placement) -> str:
    if p.setup == "does not fit":
        return f"does not fit (LoRA alone {p.gb_per_gpu:.1f} GB)"
    where = "1 GPU" if p.processes == 1 else f"FSDP × {p.processes}"
    what = "full" if p.setup == "full" else f"LoRA r{p.lora_rank}"
    engine = "" if p.rollout_engine == "vllm_colocate" else ", HF rollouts"
    return f"{what}, {where}{engine}: {p.gb_per_gpu:.1f} GB/GPU"


def placement_table(models: tuple[str, ...] = tuple(MODEL_CONFIGS), gpus: tuple[float, ...] = GPU_SIZES_GB,
                    max_gpus: int = 8, dtype: str = "bfloat16", lora_rank: int = DEFAULT_LORA_RANK,
                    vllm: bool = True) -> str:
    """Markdown: model size × GPU memory → `placement`."""
    lines = ["| model | " + " | ".join(f"{g:g} GB" for g in gpus) + " |", "|---|" + "---|" * len(gpus)]
    for model in models:
        base, _ = parameter_counts(model, lora_rank)
        cells = [describe(placement(model, gpu, max_gpus, dtype, lora_rank, vllm)) for gpu in gpus]
        lines.append(f"| {model} ({base / 1e9:.2f} B) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ==== FLOPs and GPU-hours of a plan ==================================================================================

# Efficiencies (assumptions, not measurements; override with a Throughput). Peak: H100 SXM dense bf16 tensor-core
# throughput (an H200 has the same compute, so the hours hold for it; its faster memory helps decoding only).
H100_BF16_DENSE_PEAK_FLOPS = 989e12
TRAIN_MFU = 0.35  # forward/backward of long sequences under FSDP/gradient checkpointing: a usual 7B figure
ROLLOUT_MFU = 0.10  # vLLM decoding, memory-bound: batched, but one token per sequence per weight read
EVAL_GENERATION_MFU = 0.03  # evaluation decodes with HF generate at batch 8: each token step reads all 15 GB of
# 7B bf16 weights (~5 ms at ~3 TB/s) for 8 tokens ≈ 1,600 tokens/s ≈ 2.5% of peak


@dataclass(frozen=True)
class Throughput:
    peak_flops: float = H100_BF16_DENSE_PEAK_FLOPS
    train_mfu: float = TRAIN_MFU  # every compute-bound pass: training, teacher forward, prompt prefill, scoring
    rollout_mfu: float = ROLLOUT_MFU  # decoding SDFT rollouts (vLLM)
    eval_generation_mfu: float = EVAL_GENERATION_MFU  # decoding evaluation answers (HF generate)


# Token lengths (assumptions: the paper tasks' data needs the hub and is not here). Generated lengths are a fraction
# of the budget: an SDFT rollout or an evaluation answer runs to half of max_new_tokens on average (some stop early,
# some hit the budget). The teacher's prompt is the student's plus the paper's template wrapping the demonstration.
ROLLOUT_LENGTH_FRACTION = 0.5
EVAL_LENGTH_FRACTION = 0.5
TEACHER_TEMPLATE_TOKENS = 48  # "This is an example for a response to the question: … Now answer with a response …"


@dataclass(frozen=True)
class TaskShape:
    """What the FLOP count needs to know of a task (all assumptions where the data is not here)."""

    train_examples: int
    prompt_tokens: int  # student prompt, chat template included
    demonstration_tokens: int  # the SFT target; the teacher sees it too
    max_new_tokens: int  # the task's generation budget (tasks/paper_tasks.py)
    eval_items: dict  # split → items
    context_tokens: int = 0  # privileged source text (knowledge: the article), for "context…" teacher contexts and
    # oracle-context evaluation


# Sizes: medical ~20,000 training examples and 1,000 test questions (paper B.3); knowledge 9 articles × 100 direct
# questions (B.3's prompt) split 80/10/10 by tasks.paper_tasks, plus 20 indirect (OOD) questions per article
# (data_prep.qa_generation's default); ToolAlpaca 3,938 training instances and 100 simulated test instructions
# (Tang et al. 2023; the builder skips a few); SciKnowEval Chemistry L-3: the paper gives no count, 2,000 assumed,
# split 75/5/20 (paper B.3). CPT trains on the 9 articles, ~6,000 tokens each assumed (long Wikipedia articles).
# Lengths: science prompt = question + options + instruction, demonstration = a GPT-4o reasoning + "Answer: X";
# tool use prompt = API documentation + request (long), demonstration = Action / Action Input lines; medical prompt
# = a clinical vignette, demonstration = HuatuoGPT-o1's Response (no chain of thought); knowledge = a question and
# a short answer.
PAPER_TASKS = {
    "paper_science": TaskShape(1_500, 256, 512, 2048, {"train": 1_500, "val": 100, "test": 400}),
    "paper_tool_use": TaskShape(3_938, 1_024, 128, 2048, {"train": 3_938, "test": 100}),
    "paper_medical": TaskShape(20_000, 160, 512, 2048, {"train": 20_000, "test": 1_000}),
    "paper_knowledge": TaskShape(720, 64, 64, 1024, {"train": 720, "val": 90, "test": 90, "ood": 180},
                                 context_tokens=6_000),
    # CPT: the 9 articles are the training documents (the demonstration field; the prompt is one token, see
    # training_flops); its models are evaluated on the knowledge questions, hence the question-sized prompt.
    "paper_knowledge_corpus": TaskShape(9, 64, 6_000, 1024, {"train": 720, "val": 90, "test": 90, "ood": 180},
                                        context_tokens=6_000),
}
# The paper suite of prior capabilities (lm-eval: HellaSwag 10,042 × 4 endings, MMLU 14,042 × 4 choices,
# TruthfulQA-MC1 817 × ~5, Winogrande 1,267 × 2 scored with their context; IFEval 541 and HumanEval 164 generated):
# ~14 M scored tokens and ~0.3 M generated tokens per model.
PRIOR_SUITE_SCORED_TOKENS = 14e6
PRIOR_SUITE_GENERATED_TOKENS = 0.3e6
PREFLIGHT_EXAMPLES = 40  # notebooks/preflight.py's default max_examples
PREFLIGHT_CONTEXTS = 4  # every teacher context (sdft_core.prompts.TEACHER_CONTEXTS) when the step names none


@dataclass(frozen=True)
class StepCost:
    name: str
    notebook: str
    flops: float
    training_h: float = 0.0  # the step's own training run
    retraining_h: float = 0.0  # select_best: the chosen configuration trained again with the other seeds
    evaluation_h: float = 0.0  # generation and scoring (evaluate, select_best's tests, prior capabilities, preflight)
    processes: int = 1  # GPUs the step asks for (GPU-hours do not depend on it; wall-clock hours are ÷ processes)

    @property
    def total_h(self) -> float:
        return self.training_h + self.retraining_h + self.evaluation_h


def _hours(flops_by_rate: dict[str, float], throughput: Throughput) -> float:
    rates = {"compute": throughput.train_mfu, "rollout": throughput.rollout_mfu,
             "generate": throughput.eval_generation_mfu}
    return sum(flops / (throughput.peak_flops * rates[kind]) for kind, flops in flops_by_rate.items()) / 3600.0


def _config_value(config: dict, name: str):
    """A TrainConfig field as the step sets it, else TrainConfig's default (read defensively: plans change)."""
    from sdft_core.config import TrainConfig

    if name in config:
        return config[name]
    default = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    return default.default if default.default is not dataclasses.MISSING else default.default_factory()


def training_flops(config: dict, task: TaskShape, parameters: int, max_train_examples: int | None = None
                   ) -> dict[str, float]:
    """FLOPs of one training run, {"compute": …, "rollout": …} (compute-bound passes; rollout decoding), for a train
    step's `config` (TrainConfig fields; missing ones take TrainConfig's defaults).

    Samples processed = steps × batch_size, steps = ceil(round(examples × epochs) × rollouts_per_prompt /
    batch_size) (train.data_order and full_batches: the last batch is filled up). Per sample, with P the matmul
    parameters and 2P FLOPs per token per forward:
    - student forward + backward: 6P per token of prompt + target (4P with LoRA: no weight gradients of the frozen
      base), + 2P for the recomputed forward under gradient checkpointing;
    - SDFT: target = a rollout of ROLLOUT_LENGTH_FRACTION × max_new_tokens; rollout prefill 2P per prompt token
      (compute-bound), decoding 2P per generated token (at the rollout efficiency); teacher forward 2P per token of
      its prompt (prompt + template + demonstration, + the source text for a "context…" teacher context, capped at
      max_teacher_prompt_tokens) + the rollout;
    - SFT / DFT: target = the demonstration; CPT: a one-token prompt and the document;
    - offline distillation / SFT on teacher samples: the teacher's samples are generated once (prefill + decoding of
      each example), then offline distillation adds the teacher forward per sample.
    Ignored: attention's sequence-length term (~5% at 2k tokens for 7B), the KL over the vocabulary (~10 FLOPs per
    logit), weight pushes into vLLM, guided (mixture) rollouts charged as rollouts."""
    method = _config_value(config, "method")
    examples = task.train_examples if not max_train_examples else min(task.train_examples, max_train_examples)
    repeats = _config_value(config, "rollouts_per_prompt") if method == "sdft" else 1
    batch = _config_value(config, "batch_size")
    samples = math.ceil(max(1, round(examples * _config_value(config, "epochs"))) * repeats / batch) * batch
    checkpointing = 2 if _config_value(config, "gradient_checkpointing") else 0
    student = (4 if _config_value(config, "lora_rank") else 6) + checkpointing
    P = parameters
    completion = ROLLOUT_LENGTH_FRACTION * _config_value(config, "max_new_tokens")
    context = task.context_tokens if "context" in _config_value(config, "teacher_context") else 0
    teacher_prompt = min(task.prompt_tokens + TEACHER_TEMPLATE_TOKENS + task.demonstration_tokens + context,
                         _config_value(config, "max_teacher_prompt_tokens"))
    if method == "sdft":
        return {"compute": samples * (2 * P * task.prompt_tokens + 2 * P * (teacher_prompt + completion)
                                      + student * P * (task.prompt_tokens + completion)),
                "rollout": samples * 2 * P * completion}
    if method in ("sft", "dft", "cpt"):
        prompt = 1 if method == "cpt" else task.prompt_tokens
        return {"compute": samples * student * P * (prompt + task.demonstration_tokens), "rollout": 0.0}
    if method in ("offline_distill", "sft_teacher_samples"):
        generated = {"compute": examples * 2 * P * teacher_prompt, "rollout": examples * 2 * P * completion}
        teacher = 2 * P * (teacher_prompt + completion) if method == "offline_distill" else 0.0
        generated["compute"] += samples * (teacher + student * P * (task.prompt_tokens + completion))
        return generated
    raise ValueError(f"no FLOP count for method {method!r}")


def evaluation_flops(task: TaskShape, splits: list[str], parameters: int, max_items: int = 0,
                     max_new_tokens: int = 0, oracle_context: bool = False, answers_per_item: int = 1
                     ) -> dict[str, float]:
    """FLOPs of generating greedy answers to the items of `splits` (max_items per split, 0: all): prompt prefill
    (compute-bound, + the source text with oracle_context) and EVAL_LENGTH_FRACTION × the budget decoded with HF
    generate. The forgetting measures (64 tokens on a few general prompts) and LLM-judge calls (an API, no GPU) are
    not counted."""
    items = sum(min(task.eval_items[s], max_items) if max_items else task.eval_items[s] for s in splits)
    prompt = task.prompt_tokens + (task.context_tokens if oracle_context else 0)
    completion = EVAL_LENGTH_FRACTION * (max_new_tokens or task.max_new_tokens)
    return {"compute": items * answers_per_item * 2 * parameters * prompt,
            "generate": items * answers_per_item * 2 * parameters * completion}


def prior_flops(parameters: int) -> dict[str, float]:
    """One model through the paper's prior-capability suite (PRIOR_SUITE_* tokens)."""
    return {"compute": 2 * parameters * PRIOR_SUITE_SCORED_TOKENS,
            "generate": 2 * parameters * PRIOR_SUITE_GENERATED_TOKENS}


def _parameters_of(step_parameters: dict, override: int | None, trained_from: dict[str, str]) -> int:
    """P_matmul of the model a step trains or reads: its config's model, its base model, or the model the run it
    reads (model_dir, a training step's output) was trained from."""
    if override is not None:
        return override
    model_dir = step_parameters.get("model_dir")
    model = (step_parameters.get("config", {}).get("model") or step_parameters.get("base_model")
             or trained_from.get(model_dir, model_dir))
    if model not in HUB_MODELS:
        raise KeyError(f"no config for model {model!r}: pass parameters= or add it to HUB_MODELS")
    return matmul_parameters(model)


def _task(tasks: dict[str, TaskShape], name: str) -> TaskShape:
    if name not in tasks:
        raise KeyError(f"no TaskShape for task {name!r}; known: {', '.join(tasks)}")
    return tasks[name]


def step_costs(steps: list, tasks: dict[str, TaskShape] | None = None, parameters: int | None = None,
               throughput: Throughput = Throughput()) -> dict[str, StepCost]:
    """The cost of every step of a plan (experiments.plans.Step: .name, .notebook, .parameters), by name.

    train: `training_flops`. evaluate: `evaluation_flops` of its splits. prior_capabilities: `prior_flops`.
    preflight: (student + each teacher context + the rollouts) × max_examples answers of the task's budget.
    select_best: the chosen configuration is trained again for every seed but 0 (the candidates ran with seed 0);
    which one is chosen is not known before, so each retraining is charged the mean cost of the candidates' train
    steps; then every seed is evaluated on the test splits and, with a prior suite, through it. Figure and report
    notebooks cost nothing on a GPU. parameters: P_matmul for every step (default: from each step's model)."""
    tasks = PAPER_TASKS if tasks is None else tasks
    by_name = {step.name: step for step in steps}
    trained_from = {output: step.parameters.get("config", {}).get("model") for step in steps
                    if step.notebook == "train" for output in step.outputs}

    def train(p: dict) -> dict[str, float]:
        return training_flops(p.get("config", {}), _task(tasks, p["task"]),
                              _parameters_of(p, parameters, trained_from), p.get("max_train_examples"))

    def answers(p: dict, splits: list[str], items: int = 0, per_item: int = 1) -> dict[str, float]:
        return evaluation_flops(_task(tasks, p["task"]), splits, _parameters_of(p, parameters, trained_from),
                                items or p.get("max_items", 0) or 0, p.get("max_new_tokens", 0) or 0,
                                bool(p.get("oracle_context", False)), per_item)

    def cost(step, evaluation: dict | None = None, training: dict | None = None,
             retraining: dict | None = None) -> StepCost:
        evaluation, training, retraining = evaluation or {}, training or {}, retraining or {}
        return StepCost(step.name, step.notebook, sum(evaluation.values()) + sum(training.values())
                        + sum(retraining.values()), training_h=_hours(training, throughput),
                        retraining_h=_hours(retraining, throughput), evaluation_h=_hours(evaluation, throughput),
                        processes=int(step.parameters.get("processes", 1) or 1))

    costs: dict[str, StepCost] = {}
    for step in steps:
        p = step.parameters
        if step.notebook == "train":
            costs[step.name] = cost(step, training=train(p))
        elif step.notebook == "evaluate":
            costs[step.name] = cost(step, answers(p, list(p.get("splits", ["test"]))))
        elif step.notebook == "prior_capabilities":
            costs[step.name] = cost(step, prior_flops(_parameters_of(p, parameters, trained_from)))
        elif step.notebook == "preflight":
            per_item = 1 + (len(p.get("contexts") or ()) or PREFLIGHT_CONTEXTS) + int(p.get("rollouts_per_prompt", 1))
            costs[step.name] = cost(step, answers(p, ["train"], p.get("max_examples") or PREFLIGHT_EXAMPLES, per_item))
        elif step.notebook == "select_best":
            seeds = len(p.get("seeds", [0]))
            candidates = [by_name.get(f"train_{run}") for run in p.get("candidates", [])]
            if not candidates or None in candidates:
                raise KeyError(f"{step.name}: its candidates' training steps are not all in the plan")
            runs = [train(c.parameters) for c in candidates]
            retraining = {kind: (seeds - 1) * sum(r[kind] for r in runs) / len(runs) for kind in runs[0]}
            tests = answers(p, list(p.get("test_splits", ["test"])))
            if p.get("prior"):
                prior = prior_flops(_parameters_of(p, parameters, trained_from))
                tests = {kind: tests.get(kind, 0.0) + prior.get(kind, 0.0) for kind in {*tests, *prior}}
            costs[step.name] = cost(step, {kind: seeds * flops for kind, flops in tests.items()},
                                    retraining=retraining)
        else:  # figures, tables, reports: CPU work on what the other steps wrote
            costs[step.name] = cost(step)
    return costs


def figure_targets(steps: list) -> list[str]:
    """The plan's final targets: steps no other step needs (its figures, tables and pre-flight reports), the results
    report aside (it runs after all of them and computes nothing of its own)."""
    report = [step for step in steps if step.notebook == "results_report"]
    needed = {name for step in steps if step not in report for name in step.after}
    return [step.name for step in steps if step.name not in needed and step not in report]


def _summary(costs: list[StepCost]) -> dict[str, float]:
    return {"training runs": sum(c.notebook == "train" for c in costs),
            "training": sum(c.training_h for c in costs), "selection retraining": sum(c.retraining_h for c in costs),
            "evaluation": sum(c.evaluation_h for c in costs), "total": sum(c.total_h for c in costs)}


def gpu_hours_per_figure(steps: list, tasks: dict[str, TaskShape] | None = None, parameters: int | None = None,
                         throughput: Throughput = Throughput()) -> tuple[dict[str, dict[str, float]],
                                                                          dict[str, float]]:
    """({figure: summary}, total summary), a summary being {"training runs", "training", "selection retraining",
    "evaluation", "total"} in GPU-hours (runs: a count). A figure counts every step it needs (steps_needed_for), so
    a step several figures need is in each of them; the total counts every step of the plan once."""
    from experiments.plans import steps_needed_for

    costs = step_costs(steps, tasks, parameters, throughput)
    per_figure = {figure: _summary([costs[s.name] for s in steps_needed_for(steps, [figure])])
                  for figure in figure_targets(steps)}
    return per_figure, _summary(list(costs.values()))


def gpu_hours_table(steps: list, tasks: dict[str, TaskShape] | None = None, parameters: int | None = None,
                    throughput: Throughput = Throughput()) -> str:
    """Markdown: GPU-hours per figure and the plan's total (each step once)."""
    per_figure, total = gpu_hours_per_figure(steps, tasks, parameters, throughput)
    columns = ("training runs", "training", "selection retraining", "evaluation", "total")
    lines = ["| figure | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, row in [*per_figure.items(), ("**plan total (each step once)**", total)]:
        lines.append(f"| {name} | {row['training runs']} | "
                     + " | ".join(f"{row[c]:,.1f}" for c in columns[1:]) + " |")
    return "\n".join(lines)
