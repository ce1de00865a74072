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
KL(teacher‖student) as the authors' released code computes it. Only the analytic estimator is defined for forward.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

ESTIMATORS = ("analytic", "token", "rao_blackwell")
DIRECTIONS = ("reverse", "forward")

Head = Callable[[torch.Tensor], torch.Tensor]


def per_token_divergence(student_logp: torch.Tensor, teacher_logp: torch.Tensor, direction: str) -> torch.Tensor:
    """Full-vocabulary divergence at each position: [..., V] log-probs → [...]."""
    if direction == "reverse":
        return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)
    if direction == "forward":
        return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


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


def _distill_chunk(
    student_hidden, teacher_hidden, tokens, weights, future_kl, student_head, teacher_head, estimator, direction
):
    student_logp = _log_probs(student_head, student_hidden)
    with torch.no_grad():
        teacher_logp = _log_probs(teacher_head, teacher_hidden)
    divergence = per_token_divergence(student_logp, teacher_logp, direction)
    sampled_student = student_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if estimator == "analytic":
        per_token = divergence
    elif estimator == "token":
        sampled_teacher = teacher_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        per_token = (sampled_student - sampled_teacher).detach() * sampled_student
    else:  # rao_blackwell
        per_token = divergence + future_kl * sampled_student
    return (per_token * weights).sum(), (divergence.detach() * weights).sum()


def _run_chunked(fn, chunk_size: int | None, sequence_tensors: list[torch.Tensor], *constants):
    """Sum fn over chunks along dim 1; each chunk is recomputed in backward so only one chunk's logits live at once."""
    length = sequence_tensors[0].shape[1]
    totals = None
    for part in _chunks(length, chunk_size):
        pieces = [t[:, part] for t in sequence_tensors]
        if chunk_size is not None and torch.is_grad_enabled():
            out = checkpoint(fn, *pieces, *constants, use_reentrant=False)
        else:
            out = fn(*pieces, *constants)
        totals = out if totals is None else tuple(a + b for a, b in zip(totals, out))
    return totals


@torch.no_grad()
def stepwise_divergence(
    student_hidden, teacher_hidden, student_head: Head, teacher_head: Head, direction: str, chunk_size: int | None
) -> torch.Tensor:
    """KL_t at every position, [B, T], without gradient (used for the Rao-Blackwell returns and for logging)."""
    out = []
    for part in _chunks(student_hidden.shape[1], chunk_size):
        student_logp = _log_probs(student_head, student_hidden[:, part])
        teacher_logp = _log_probs(teacher_head, teacher_hidden[:, part])
        out.append(per_token_divergence(student_logp, teacher_logp, direction))
    return torch.cat(out, dim=1)


def distillation_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    tokens: torch.Tensor,
    weights: torch.Tensor,
    student_head: Head,
    teacher_head: Head,
    estimator: str = "analytic",
    direction: str = "reverse",
    chunk_size: int | None = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (surrogate loss summed over weighted tokens, summed per-token divergence for logging).

    The surrogate's gradient is the chosen estimator; for "analytic" its value is also the summed divergence.
    chunk_size=None computes all positions at once (the unchunked reference).
    """
    check_estimator(estimator, direction)
    teacher_hidden = teacher_hidden.detach()
    weights = weights.to(torch.float32)
    if estimator == "rao_blackwell":
        kl = stepwise_divergence(student_hidden.detach(), teacher_hidden, student_head, teacher_head, direction,
                                 chunk_size) * weights
        # Σ_{t>i} KL_t: the return that multiplies ∇log π_θ(y_i).
        future_kl = kl.flip(1).cumsum(1).flip(1) - kl
    else:
        future_kl = torch.zeros_like(weights)

    def chunk_fn(s_hidden, t_hidden, tok, w, fut):
        return _distill_chunk(s_hidden, t_hidden, tok, w, fut, student_head, teacher_head, estimator, direction)

    return _run_chunked(chunk_fn, chunk_size, [student_hidden, teacher_hidden, tokens, weights, future_kl])


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
