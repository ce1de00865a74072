"""Loss utilities: SDFT distillation losses (paper Eq. 1, Appendix A.1) and the SFT/DFT likelihood losses.

Everything here works on final hidden states and output heads rather than on logits, so that the vocabulary
projection happens one chunk of positions at a time inside `torch.utils.checkpoint`: peak memory then grows with
`chunk_size × V`, not with `T × V` (for Qwen2.5, V ≈ 152k and T up to 2048).

Shapes: `student_hidden`, `teacher_hidden` are [B, T, H] — the hidden state at the position that *predicts*
completion token t; `tokens` [B, T] are the sampled completion ids; `weights` [B, T] are per-token loss weights
(0 for padding and masked tokens, 1 otherwise, or an importance weight). All functions return *sums* over tokens;
the caller divides by its normalizer so that gradient accumulation over micro-batches is exact.

Estimators of the gradient of the sequence-level reverse KL  KL(π_θ(·|x) ‖ π(·|x,c))  (Appendix A.1):
- "analytic" (the paper's default): Σ_t KL_t with KL_t the full-vocabulary KL at step t. Its gradient is
  Σ_t Σ_v π_θ(v) log(π_θ(v)/π(v)) ∇log π_θ(v), the paper's ĝ_analytic.
- "token": the surrogate Σ_t sg(log π_θ(y_t) − log π(y_t)) log π_θ(y_t), whose gradient is ĝ_token.
- "rao_blackwell": analytic plus the score-function term Σ_i log π_θ(y_i) · sg(Σ_{t>i} KL_t), whose gradient is ĝ_rb,
  an unbiased estimator of the sequence-level KL gradient.
Directions of the per-token divergence: "reverse" KL(student‖teacher) as the paper writes it, "forward"
KL(teacher‖student) as the authors' released code computes it, and "jsd", the generalized Jensen-Shannon divergence
    JSD_β = β·KL(student ‖ M) + (1−β)·KL(teacher ‖ M),   M = β·teacher + (1−β)·student,
which is continuous in β and equals the reverse KL at β = 1 and the forward KL at β = 0 (the same end points as TRL's
`beta`). Only the analytic estimator is defined for forward and JSD.

Top-k approximation (`topk`): the divergence is computed over the k most likely tokens of the support model (the
student's or the teacher's) plus one "tail" outcome holding the rest of the probability mass. That is a proper
distribution over k+1 outcomes, so the result is a lower bound of the full-vocabulary divergence that becomes exact
as the tail vanishes (the approximation used when only top-k log-probs are available, e.g. from vLLM).

Importance sampling (Algorithm 1 line 17; `sampler_logp`, `is_cap`, `is_form`; docs/importance_sampling.md), for
rollouts drawn from a sampler q other than the trained policy π (vLLM, temperature/top-p):
- "token" (default; as the official code and TRL run it): each position's loss is weighted by min(r_t, cap) with
  r_t = π(y_t|y_<t)/q(y_t|y_<t). For the analytic estimator KL_t depends only on y_<t, and Σ_{y_t} q·r_t = 1, so in
  expectation this weight is 1: it corrects nothing (below the cap it is the uncorrected off-policy gradient; the
  cap only shrinks prefix y_<t's term by Σ_v min(π(v), cap·q(v)) ≤ 1). For the token estimator it corrects the
  sampling of y_t but not of the prefix.
- "prefix": weighted by min(Π_s r_s, cap) over the tokens the position's term depends on: s < t for "analytic", s ≤ t
  for "token"; for "rao_blackwell" every KL_t, in its own term and in the returns of earlier score terms, carries
  its Π_{s<t}. Without truncation its expectation under q equals the on-policy expectation exactly (what Algorithm 1
  asks for); the product's spread grows with the length, and truncating it biases the estimate back toward q.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

ESTIMATORS = ("analytic", "token", "rao_blackwell")
DIRECTIONS = ("reverse", "forward", "jsd")
TOPK_SUPPORTS = ("student", "teacher")
IS_FORMS = ("token", "prefix")

Head = Callable[[torch.Tensor], torch.Tensor]


def _kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    return (p_logp.exp() * (p_logp - q_logp)).sum(-1)


def per_token_divergence(student_logp: torch.Tensor, teacher_logp: torch.Tensor, direction: str,
                         jsd_beta: float = 0.5) -> torch.Tensor:
    """Divergence at each position over the last axis: [..., V] log-probs → [...]."""
    if direction == "reverse":
        return _kl(student_logp, teacher_logp)
    if direction == "forward":
        return _kl(teacher_logp, student_logp)
    if direction == "jsd":
        if not 0.0 <= jsd_beta <= 1.0:
            raise ValueError(f"jsd_beta must be in [0, 1], got {jsd_beta}")
        if jsd_beta in (0.0, 1.0):  # M equals one of the two: avoid log(0) weights
            return per_token_divergence(student_logp, teacher_logp, "reverse" if jsd_beta == 1.0 else "forward")
        mixture = torch.logsumexp(torch.stack([teacher_logp + math.log(jsd_beta),
                                               student_logp + math.log(1.0 - jsd_beta)]), dim=0)
        return jsd_beta * _kl(student_logp, mixture) + (1.0 - jsd_beta) * _kl(teacher_logp, mixture)
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x ≤ 0, accurate near 0 and near −∞."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def topk_with_tail(student_logp: torch.Tensor, teacher_logp: torch.Tensor, k: int, support: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both distributions restricted to the support model's top-k tokens plus a tail outcome: [..., k+1]."""
    if support not in TOPK_SUPPORTS:
        raise ValueError(f"topk_support must be one of {TOPK_SUPPORTS}, got {support!r}")
    indices = (student_logp if support == "student" else teacher_logp).detach().topk(k, dim=-1).indices

    def restrict(logp):
        top = logp.gather(-1, indices)
        return torch.cat([top, _log1mexp(torch.logsumexp(top, dim=-1, keepdim=True))], dim=-1)

    return restrict(student_logp), restrict(teacher_logp)


@dataclass(frozen=True)
class Divergence:
    """Which per-position divergence the loss uses (see the module docstring)."""

    direction: str = "reverse"
    jsd_beta: float = 0.5
    topk: int | None = None
    topk_support: str = "teacher"

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.topk_support not in TOPK_SUPPORTS:
            raise ValueError(f"topk_support must be one of {TOPK_SUPPORTS}, got {self.topk_support!r}")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"topk must be a positive integer or None, got {self.topk}")

    def __call__(self, student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
        if self.topk is not None and self.topk < student_logp.shape[-1]:
            student_logp, teacher_logp = topk_with_tail(student_logp, teacher_logp, self.topk, self.topk_support)
        return per_token_divergence(student_logp, teacher_logp, self.direction, self.jsd_beta)


def check_estimator(estimator: str, direction: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if estimator != "analytic" and direction != "reverse":
        raise ValueError(
            f"estimator={estimator!r} estimates the gradient of the sequence-level reverse KL under student samples; "
            f"it is not defined for direction={direction!r}. Use estimator='analytic'."
        )


def _chunks(length: int, chunk_size: int | None) -> list[slice]:
    if chunk_size is None or chunk_size >= length:
        return [slice(0, length)]
    return [slice(start, min(start + chunk_size, length)) for start in range(0, length, chunk_size)]


def _log_probs(head: Head, hidden: torch.Tensor) -> torch.Tensor:
    logits = head(hidden)
    # Softmax in at least float32: bf16 logits lose the small probabilities the KL depends on.
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def truncated_importance_weights(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token ratio π_train(y_t) / q_sampler(y_t), truncated at `cap` and detached (Algorithm 1, line 17).

    The sampler (vLLM, or HF generate with temperature/top-p) and the training forward pass can assign slightly
    different probabilities to the same token; weighting each token's loss by the ratio corrects the expectation,
    and truncation bounds the variance (token-level truncated importance sampling)."""
    return torch.exp(trainer_logp.detach() - sampler_logp).clamp(max=cap)


def prefix_importance_weights(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float,
                              include_current: bool = False, log_ratio_before: torch.Tensor | None = None
                              ) -> torch.Tensor:
    """min(Π_{s<t} π_train(y_s)/q_sampler(y_s), cap) at every position t of [B, T], detached (the "prefix" form).

    The product runs over the tokens that fixed the prefix y_<t at which position t's loss is evaluated (s ≤ t with
    `include_current`, for a per-position term that also depends on y_t); the cap truncates the product, not each
    factor, so every weight is at most `cap`. `log_ratio_before` [B]: Σ log-ratio of positions before these (when
    [B, T] is a chunk of a longer sequence). Every position counts, loss-masked ones too: their tokens were sampled.
    """
    log_ratio = trainer_logp.detach() - sampler_logp
    cumulative = log_ratio.cumsum(-1)
    if not include_current:
        cumulative = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    if log_ratio_before is not None:
        cumulative = cumulative + log_ratio_before.unsqueeze(-1)
    return cumulative.exp().clamp(max=cap)


def _distill_chunk(
    student_hidden, teacher_hidden, tokens, weights, future_kl, sampler_logp, student_head, teacher_head, estimator,
    divergence_fn: Divergence, is_cap: float | None, is_form: str = "token", log_ratio_before=None,
):
    student_logp = _log_probs(student_head, student_hidden)
    with torch.no_grad():
        teacher_logp = _log_probs(teacher_head, teacher_hidden)
    divergence = divergence_fn(student_logp, teacher_logp)
    sampled_student = student_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if is_form == "prefix":
        return _distill_chunk_prefix(divergence, sampled_student, teacher_logp, tokens, weights, future_kl,
                                     sampler_logp, estimator, is_cap, log_ratio_before)
    if is_cap is not None:
        ratio = truncated_importance_weights(sampled_student, sampler_logp, is_cap)
        loss_token = weights > 0
        weights = weights * ratio
        is_stats = ((ratio * loss_token).sum(), ((ratio >= is_cap) & loss_token).sum().float(),
                    torch.where(loss_token, sampled_student.detach() - sampler_logp, 0.0).sum())
    else:
        is_stats = (torch.zeros(()), torch.zeros(()), torch.zeros(()))
    if estimator == "analytic":
        per_token = divergence
    elif estimator == "token":
        sampled_teacher = teacher_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        per_token = (sampled_student - sampled_teacher).detach() * sampled_student
    else:  # rao_blackwell
        per_token = divergence + future_kl * sampled_student
    return (per_token * weights).sum(), (divergence.detach() * weights).sum(), *is_stats


def _distill_chunk_prefix(divergence, sampled_student, teacher_logp, tokens, weights, future_kl, sampler_logp,
                          estimator, is_cap, log_ratio_before):
    """The "prefix" importance-sampling form of one chunk; also returns the carry (Σ log-ratio through the chunk)."""
    log_ratio = sampled_student.detach() - sampler_logp
    loss_token = weights > 0
    ratio = prefix_importance_weights(sampled_student, sampler_logp, is_cap, include_current=estimator == "token",
                                      log_ratio_before=log_ratio_before)
    # Positions outside the loss get weight 0 outright: a padding token's sampler log-prob may be −inf or NaN.
    ratio = torch.where(loss_token, ratio, 0.0)
    is_weights = weights * ratio
    if estimator == "analytic":
        loss = (divergence * is_weights).sum()
    elif estimator == "token":
        sampled_teacher = teacher_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        loss = ((sampled_student - sampled_teacher).detach() * sampled_student * is_weights).sum()
    else:  # rao_blackwell: future_kl already holds Σ_{t>i} w_t ρ_t KL_t, each KL_t with its own prefix weight
        loss = (divergence * is_weights).sum() + (future_kl * sampled_student * weights).sum()
    is_stats = ((ratio * loss_token).sum(), ((ratio >= is_cap) & loss_token).sum().float(),
                torch.where(loss_token, log_ratio, 0.0).sum())
    return loss, (divergence.detach() * is_weights).sum(), *is_stats, log_ratio_before + log_ratio.sum(-1)


def _run_chunked(fn, chunk_size: int | None, sequence_tensors: list[torch.Tensor], *constants,
                 carry: torch.Tensor | None = None):
    """Sum fn over chunks along dim 1; each chunk is recomputed in backward so only one chunk's logits live at once.

    carry: state that runs through the chunks in order (the importance log-ratio summed over earlier positions). fn
    then takes it as its last argument and returns the next chunk's carry as its last output, which is not summed."""
    length = sequence_tensors[0].shape[1]
    parts = _chunks(length, chunk_size)
    totals = None
    for part in parts:
        pieces = [t[:, part] for t in sequence_tensors]
        args = (*pieces, *constants) if carry is None else (*pieces, *constants, carry)
        # With a single chunk, recomputing it in backward would save no memory, only cost time.
        if len(parts) > 1 and torch.is_grad_enabled():
            out = checkpoint(fn, *args, use_reentrant=False)
        else:
            out = fn(*args)
        if carry is not None:
            *out, carry = out
            out = tuple(out)
        totals = out if totals is None else tuple(a + b for a, b in zip(totals, out))
    return totals


@torch.no_grad()
def _stepwise_divergence_and_sampled(student_hidden, teacher_hidden, tokens, student_head: Head, teacher_head: Head,
                                     divergence_fn: Divergence, chunk_size: int | None
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """stepwise_divergence and the student's log-prob of each sampled token, [B, T] each, from one projection."""
    divergences, sampled = [], []
    for part in _chunks(student_hidden.shape[1], chunk_size):
        student_logp = _log_probs(student_head, student_hidden[:, part])
        teacher_logp = _log_probs(teacher_head, teacher_hidden[:, part])
        divergences.append(divergence_fn(student_logp, teacher_logp))
        sampled.append(student_logp.gather(-1, tokens[:, part].unsqueeze(-1)).squeeze(-1))
    return torch.cat(divergences, dim=1), torch.cat(sampled, dim=1)


@torch.no_grad()
def stepwise_divergence(
    student_hidden, teacher_hidden, student_head: Head, teacher_head: Head,
    divergence_fn: Divergence = Divergence(), chunk_size: int | None = 128,
) -> torch.Tensor:
    """The divergence at every position, [B, T], without gradient (Rao-Blackwell returns, evaluation)."""
    out = []
    for part in _chunks(student_hidden.shape[1], chunk_size):
        student_logp = _log_probs(student_head, student_hidden[:, part])
        teacher_logp = _log_probs(teacher_head, teacher_hidden[:, part])
        out.append(divergence_fn(student_logp, teacher_logp))
    return torch.cat(out, dim=1)


def distillation_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    tokens: torch.Tensor,
    weights: torch.Tensor,
    student_head: Head,
    teacher_head: Head,
    estimator: str = "analytic",
    divergence_fn: Divergence = Divergence(),
    chunk_size: int | None = 128,
    sampler_logp: torch.Tensor | None = None,
    is_cap: float = 2.0,
    is_form: str = "token",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Return (surrogate loss summed over weighted tokens, summed per-token divergence, importance-sampling stats).

    The surrogate's gradient is the chosen estimator; for "analytic" its value is also the summed divergence.
    chunk_size=None computes all positions at once (the unchunked reference).
    sampler_logp: log q(y_t) from the sampler at every completion position (loss-masked ones included); when given,
    each token's loss is importance-weighted, truncated at `is_cap` (float("inf"): no truncation), in the form
    `is_form` (see the module docstring): "token" (default), the per-token ratio π_θ(y_t)/q(y_t) as the official code
    and TRL apply it, or "prefix", the product of the ratios over the position's prefix, exact in expectation.
    The stats, summed over loss tokens: "is_ratio_sum" (the importance weights applied, after truncation),
    "is_capped" (how many weights were truncated) and "is_log_ratio_sum" (Σ log π_θ(y_t)/q(y_t): its mean per token
    estimates −KL(q ‖ π_θ) per token, the sampler mismatch whatever the form). All 0 without `sampler_logp`.
    """
    check_estimator(estimator, divergence_fn.direction)
    if is_form not in IS_FORMS:
        raise ValueError(f"is_form must be one of {IS_FORMS}, got {is_form!r}")
    teacher_hidden = teacher_hidden.detach()
    weights = weights.to(torch.float32)
    use_is = sampler_logp is not None
    prefix = use_is and is_form == "prefix"
    # At least float32; float64 log-probs (the exact tests) keep their precision.
    sampler_logp = (sampler_logp.to(torch.promote_types(sampler_logp.dtype, torch.float32)) if use_is
                    else torch.zeros_like(weights))
    if estimator == "rao_blackwell":
        if prefix:  # each KL_t in the return carries its own prefix weight Π_{s<t} r_s
            kl, sampled = _stepwise_divergence_and_sampled(student_hidden.detach(), teacher_hidden, tokens,
                                                           student_head, teacher_head, divergence_fn, chunk_size)
            ratio = prefix_importance_weights(sampled, sampler_logp, is_cap)
            kl = kl * weights * torch.where(weights > 0, ratio, 0.0)
        else:
            kl = stepwise_divergence(student_hidden.detach(), teacher_hidden, student_head, teacher_head,
                                     divergence_fn, chunk_size) * weights
        # Σ_{t>i} KL_t: the return that multiplies ∇log π_θ(y_i).
        future_kl = kl.flip(1).cumsum(1).flip(1) - kl
    else:
        future_kl = torch.zeros_like(weights)

    def chunk_fn(s_hidden, t_hidden, tok, w, fut, q_logp, *carry):
        return _distill_chunk(s_hidden, t_hidden, tok, w, fut, q_logp, student_head, teacher_head, estimator,
                              divergence_fn, is_cap if use_is else None, is_form if use_is else "token", *carry)

    carry = sampler_logp.new_zeros(sampler_logp.shape[0]) if prefix else None
    loss, divergence, ratio_sum, capped, log_ratio_sum = _run_chunked(
        chunk_fn, chunk_size, [student_hidden, teacher_hidden, tokens, weights, future_kl, sampler_logp], carry=carry)
    return loss, divergence, {"is_ratio_sum": ratio_sum.item(), "is_capped": capped.item(),
                              "is_log_ratio_sum": log_ratio_sum.item()}


def likelihood_loss(
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    weights: torch.Tensor,
    head: Head,
    dft: bool = False,
    chunk_size: int | None = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss summed over weighted tokens, summed token NLL for logging).

    SFT: −log π_θ(y_t). DFT (Wu et al. 2025): −sg(π_θ(y_t)) · log π_θ(y_t), SFT reweighted by the detached
    probability of each demonstration token.
    """
    weights = weights.to(torch.float32)

    def chunk_fn(chunk_hidden, chunk_tokens, chunk_weights):
        token_logp = _log_probs(head, chunk_hidden).gather(-1, chunk_tokens.unsqueeze(-1)).squeeze(-1)
        scale = token_logp.detach().exp() if dft else 1.0
        return (-scale * token_logp * chunk_weights).sum(), (-token_logp.detach() * chunk_weights).sum()

    return _run_chunked(chunk_fn, chunk_size, [hidden, tokens, weights])
