"""One SDFT step, up close: the pieces of `notebooks/teaching_one_sdft_step.py` (a workshop notebook).

One training example goes through one step of Algorithm 1 with the library's own functions, stage by stage:
the two contexts (`make_contexts`), the student's sample (`sample_from_student`, the training loop's sampler), the
per-token scores of that sample under both contexts (`score_sample`: log-probabilities, the implicit reward of paper
Eq. 3 via `token_rewards`, the full-vocabulary divergence at every position), the loss and one AdamW step
(`optimizer_step`: `completion_hidden` + `distillation_loss`, normalised and clipped as `train.distillation_step`
does), and the EMA update of the teacher (`ema_update`: `Teacher.update`). `walk_one_step` chains them.
Figures: `plot_token_heatmap` (values as colours over the sampled text) and `plot_step_effect`.

Nothing here re-implements the loss or the teacher; the tests check the step against `train.distillation_step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Image
from matplotlib.colors import Normalize
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle

from sdft_core.data import Example
from sdft_core.forward import completion_hidden, loss_weights, with_teacher_prompts
from sdft_core.loss import Divergence, distillation_loss, stepwise_divergence
from sdft_core.plotting import SIGN_COLOURS, save_figure, style
from sdft_core.prompts import TruncationCounter, student_prompt_ids, teacher_prompt_ids
from sdft_core.rollout import Batch, HFSampler, eos_token_ids
from sdft_core.teacher import Teacher

DIVERGENCE_LABELS = {"reverse": "KL(student ‖ teacher)", "forward": "KL(teacher ‖ student)",
                     "jsd": "JSD(student, teacher)"}


# --- Stage 1: the two contexts ----------------------------------------------------------------------------------------

@dataclass
class Contexts:
    """What the student and the teacher are conditioned on (Algorithm 1: Ctx_S(x) and Ctx_T(x, c))."""

    example: Example
    teacher_context: str
    student_ids: list[int]
    teacher_ids: list[int]
    student_text: str
    teacher_text: str
    teacher_truncated: bool


def resolve_teacher_context(example: Example, teacher_context: str = "auto") -> str:
    """"auto": source text and demonstration when the example has a source text (the paper's best variant for
    knowledge acquisition, A.2), the demonstration alone otherwise (the paper's template, §3)."""
    if teacher_context != "auto":
        return teacher_context
    return "context_and_demonstration" if example.context else "demonstration"


def make_contexts(tokenizer, example: Example, teacher_context: str = "auto", max_prompt_tokens: int = 512,
                  max_teacher_prompt_tokens: int = 1536) -> Contexts:
    """Both contexts as token ids and as the exact text the model reads (chat template included)."""
    kind = resolve_teacher_context(example, teacher_context)
    counter = TruncationCounter()
    student_ids = student_prompt_ids(tokenizer, example, max_prompt_tokens)
    teacher_ids = teacher_prompt_ids(tokenizer, example, max_teacher_prompt_tokens, kind, counter)
    return Contexts(example, kind, student_ids, teacher_ids, tokenizer.decode(student_ids),
                    tokenizer.decode(teacher_ids), counter.truncated > 0)


# --- Stage 2: the student's sample ------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One completion sampled from the student, placed behind each context."""

    batch: Batch  # student context + completion (one row)
    teacher_batch: Batch  # the same completion behind the teacher context
    token_ids: list[int]
    pieces: list[str]  # each sampled token as the text it adds
    text: str
    stopped: bool  # ended with an end-of-sequence token (otherwise cut at max_new_tokens)


def token_pieces(tokenizer, token_ids: list[int]) -> list[str]:
    """The text each token adds to the decoded sequence (special tokens included).

    Decoded incrementally, so a character split over several byte tokens is shown whole on the token that
    completes it (the earlier ones add ""), instead of as replacement characters."""
    pieces, previous = [], ""
    for end in range(1, len(token_ids) + 1):
        text = tokenizer.decode(token_ids[:end])
        if text.endswith("\ufffd"):  # an incomplete character: wait for the token that completes it
            pieces.append("")
            continue
        pieces.append(text[len(previous):] if text.startswith(previous) else tokenizer.decode(token_ids[end - 1:end]))
        previous = text
    return pieces


def sample_from_student(model, tokenizer, contexts: Contexts, max_new_tokens: int, seed: int,
                        temperature: float = 1.0, top_p: float = 1.0) -> Sample:
    """y ~ π_θ(·|x): the training loop's sampler (HF generate from the live student), seeded."""
    batch = HFSampler(model, tokenizer).sample([contexts.student_ids], max_new_tokens, temperature, top_p, seed)
    length = int(batch.completion_mask[0].sum())
    token_ids = batch.completion_ids[0, :length].tolist()
    teacher_batch = with_teacher_prompts(batch, [contexts.teacher_ids], tokenizer.pad_token_id)
    stopped = bool(token_ids) and token_ids[-1] in eos_token_ids(model, tokenizer)
    return Sample(batch, teacher_batch, token_ids, token_pieces(tokenizer, token_ids),
                  tokenizer.decode(token_ids, skip_special_tokens=True), stopped)


# --- Stage 3: per-token scores ----------------------------------------------------------------------------------------

def token_rewards(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 3: r_t = log π(y_t | y_<t, x, c) − log π_k(y_t | y_<t, x), from the log-probabilities of the sampled
    tokens under the teacher's context and the student's. Their sum is the sequence log-ratio r(y, x, c)."""
    return teacher_logp - student_logp


@dataclass
class TokenScores:
    """The sample scored by one student θ and one teacher φ."""

    table: pd.DataFrame
    """One row per sampled token: position, token, token_id, student_logp, teacher_logp, reward, divergence."""
    student_logp: torch.Tensor  # [T, V] next-token log-probabilities under the student context
    teacher_logp: torch.Tensor  # [T, V] under the teacher context
    direction: str

    @property
    def divergence_label(self) -> str:
        return DIVERGENCE_LABELS[self.direction]

    def sequence(self) -> dict:
        """Sequence-level numbers: log π_θ(y|x), log π(y|x,c), their difference (Σ r_t) and Σ_t divergence_t."""
        table = self.table
        return {"log π_θ(y|x)": table.student_logp.sum(), "log π(y|x,c)": table.teacher_logp.sum(),
                "Σ r_t": table.reward.sum(), f"Σ_t {self.divergence_label}": table.divergence.sum(),
                "tokens": len(table)}


@torch.no_grad()
def score_sample(student, teacher_model, sample: Sample, divergence: Divergence = Divergence()) -> TokenScores:
    """Two forward passes over the same sampled tokens, one behind each context (the loss's own hidden states and
    output heads); per token: both log-probabilities, the reward of Eq. 3 and the full-vocabulary divergence."""
    length = len(sample.token_ids)
    student_hidden = completion_hidden(student, sample.batch)[:, :length]
    teacher_hidden = completion_hidden(teacher_model, sample.teacher_batch)[:, :length]
    student_head, teacher_head = student.get_output_embeddings(), teacher_model.get_output_embeddings()
    student_logp = F.log_softmax(student_head(student_hidden[0]).float(), dim=-1)
    teacher_logp = F.log_softmax(teacher_head(teacher_hidden[0]).float(), dim=-1)
    per_position = stepwise_divergence(student_hidden, teacher_hidden, student_head, teacher_head, divergence)[0]
    tokens = torch.tensor(sample.token_ids)
    sampled_student = student_logp.gather(-1, tokens[:, None])[:, 0]
    sampled_teacher = teacher_logp.gather(-1, tokens[:, None])[:, 0]
    table = pd.DataFrame({
        "position": range(length), "token": sample.pieces, "token_id": sample.token_ids,
        "student_logp": sampled_student.double().numpy(), "teacher_logp": sampled_teacher.double().numpy(),
        "reward": token_rewards(sampled_student, sampled_teacher).double().numpy(),
        "divergence": per_position.double().numpy(),
    })
    return TokenScores(table, student_logp, teacher_logp, divergence.direction)


def top_next_tokens(tokenizer, scores: TokenScores, position: int | None = None, k: int = 5) -> pd.DataFrame:
    """The k most likely next tokens of the student and of the teacher at one position (default: where the divergence
    is largest), each with its probability under both."""
    if position is None:
        position = int(scores.table.divergence.idxmax())
    student_p, teacher_p = scores.student_logp[position].exp(), scores.teacher_logp[position].exp()
    rows = []
    for rank, (s_id, t_id) in enumerate(zip(student_p.topk(k).indices.tolist(), teacher_p.topk(k).indices.tolist()),
                                        start=1):
        rows.append({"rank": rank, "student's token": repr(tokenizer.decode([s_id])),
                     "p student": student_p[s_id].item(), "p teacher (same token)": teacher_p[s_id].item(),
                     "teacher's token": repr(tokenizer.decode([t_id])), "p teacher": teacher_p[t_id].item(),
                     "p student (same token)": student_p[t_id].item()})
    return pd.DataFrame(rows).set_index("rank")


# --- Stage 4: the loss and one optimizer step -------------------------------------------------------------------------

def snapshot(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def parameter_distance(parameters, reference: list[torch.Tensor]) -> float:
    """‖a − b‖₂ over all parameters (accumulated in float64)."""
    total = 0.0
    for p, q in zip(parameters, reference, strict=True):
        total += (p.detach() - q).double().pow(2).sum().item()  # the float32 difference of close weights is exact
    return math.sqrt(total)


@dataclass
class StepResult:
    loss: float  # distillation_loss: Σ_t divergence_t over the sample's tokens (analytic estimator)
    tokens: int
    loss_per_token: float  # what the optimizer differentiates (the loop's "tokens" normalisation)
    grad_norm: float  # before clipping
    learning_rate: float
    student_distance: float  # ‖θ_1 − θ_0‖₂
    parameters: int


def optimizer_step(model, teacher: Teacher, sample: Sample, optimizer: torch.optim.Optimizer,
                   divergence: Divergence = Divergence(), max_grad_norm: float = 1.0,
                   mask_first_tokens: int = 0) -> StepResult:
    """One SDFT update of θ on one sample, as `train.distillation_step` computes it for a batch of one: teacher hidden
    states without gradient, `distillation_loss` (analytic estimator), divided by the number of loss tokens, backward,
    gradient clipping, optimizer step."""
    theta_before = snapshot(model)
    weights = loss_weights(sample.batch.completion_mask, mask_first_tokens)
    with torch.no_grad():
        teacher_hidden = completion_hidden(teacher.model, sample.teacher_batch)
    optimizer.zero_grad(set_to_none=True)
    loss, _, _ = distillation_loss(
        completion_hidden(model, sample.batch), teacher_hidden, sample.batch.completion_ids, weights,
        model.get_output_embeddings(), teacher.model.get_output_embeddings(), estimator="analytic",
        divergence_fn=divergence)
    tokens = int(weights.sum().item())
    (loss / max(tokens, 1)).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm).item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss.item(), tokens, loss.item() / max(tokens, 1), grad_norm, optimizer.param_groups[0]["lr"],
                      parameter_distance(model.parameters(), theta_before),
                      sum(p.numel() for p in model.parameters()))


# --- Stage 5: the EMA teacher -----------------------------------------------------------------------------------------

@dataclass
class EmaMove:
    alpha: float
    student_distance: float  # ‖θ_1 − θ_0‖: how far this step moved the student
    gap_before: float  # ‖θ_1 − φ_0‖: how far the teacher was from the updated student
    teacher_distance: float  # ‖φ_1 − φ_0‖: how far the EMA update moved the teacher
    rounded_away: float  # fraction of the weights with θ_1 ≠ φ_0 whose float32 update α(θ_1 − φ_0) rounded to nothing

    @property
    def ratio(self) -> float:
        """‖φ_1 − φ_0‖ / ‖θ_1 − θ_0‖: α at the first step, where φ_0 = θ_0 (up to float32 rounding)."""
        return self.teacher_distance / self.student_distance

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"value": {
            "α": self.alpha, "‖θ₁ − θ₀‖ (student moved)": self.student_distance,
            "‖θ₁ − φ₀‖ (student to old teacher)": self.gap_before,
            "‖φ₁ − φ₀‖ (teacher moved)": self.teacher_distance, "‖φ₁ − φ₀‖ / ‖θ₁ − θ₀‖": self.ratio,
            "‖φ₁ − φ₀‖ / ‖θ₁ − φ₀‖": self.teacher_distance / self.gap_before,
            "weights whose EMA update rounded away": self.rounded_away}})


def ema_update(teacher: Teacher, student: torch.nn.Module, student_distance: float) -> EmaMove:
    """Apply the library's EMA update φ ← φ + α(θ − φ) once and measure how far φ moved."""
    phi_before = snapshot(teacher.model)
    gap = parameter_distance(student.parameters(), phi_before)
    teacher.update(student)
    moved = parameter_distance(teacher.model.parameters(), phi_before)
    should_move = did_not_move = 0
    for theta, phi, old in zip(student.parameters(), teacher.model.parameters(), phi_before, strict=True):
        differs = theta.detach().float() != old
        should_move += int(differs.sum())
        did_not_move += int((differs & (phi == old)).sum())
    return EmaMove(teacher.ema_alpha, student_distance, gap, moved, did_not_move / max(should_move, 1))


def walk_record(contexts: Contexts, sample: Sample, scores: dict[str, TokenScores], step: StepResult,
                ema: EmaMove) -> dict:
    """The walk's numbers as one JSON-serialisable record (for results_dir)."""
    return {"example_id": contexts.example.id, "teacher_context": contexts.teacher_context,
            "sample": sample.text, "sample_tokens": len(sample.token_ids), "stopped": sample.stopped,
            "sequence": {moment: {k: float(v) for k, v in s.sequence().items()} for moment, s in scores.items()},
            "tokens": scores[next(iter(scores))].table.to_dict(orient="records"),
            "step": {k: float(v) for k, v in step.__dict__.items()},
            "ema": {**{k: float(v) for k, v in ema.__dict__.items()}, "ratio": ema.ratio}}


# --- Before / after ---------------------------------------------------------------------------------------------------

def sequence_summary(scores: dict[str, TokenScores]) -> pd.DataFrame:
    """One row per moment (e.g. before, after the step, after the EMA update) of sequence-level numbers."""
    return pd.DataFrame({moment: s.sequence() for moment, s in scores.items()}).T


def token_changes(before: TokenScores, after: TokenScores) -> pd.DataFrame:
    """Per token: the student's log-probability and the divergence before and after, and their changes."""
    return pd.DataFrame({
        "token": before.table.token, "reward": before.table.reward,
        "student_logp before": before.table.student_logp, "student_logp after": after.table.student_logp,
        "Δ student_logp": after.table.student_logp - before.table.student_logp,
        "divergence before": before.table.divergence, "divergence after": after.table.divergence,
    })


# --- The whole walk ---------------------------------------------------------------------------------------------------

@dataclass
class Walk:
    contexts: Contexts
    sample: Sample
    before: TokenScores  # θ_0 and φ_0 (= θ_0)
    step: StepResult
    after_step: TokenScores  # θ_1 and φ_0
    ema: EmaMove
    after_ema: TokenScores  # θ_1 and φ_1
    teacher: Teacher


def walk_one_step(model, tokenizer, example: Example, *, teacher_context: str = "auto", seed: int = 0,
                  direction: str = "reverse", learning_rate: float = 1e-4, ema_alpha: float = 0.01,
                  max_new_tokens: int = 48, temperature: float = 1.0, max_grad_norm: float = 1.0) -> Walk:
    """All five stages on one example. Trains `model` (the student) in place by one step; the teacher starts as a
    copy of it, as in `train.train`."""
    model.train()
    teacher = Teacher(model, "ema", ema_alpha)
    divergence = Divergence(direction)
    contexts = make_contexts(tokenizer, example, teacher_context)
    sample = sample_from_student(model, tokenizer, contexts, max_new_tokens, seed, temperature)
    before = score_sample(model, teacher.model, sample, divergence)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    step = optimizer_step(model, teacher, sample, optimizer, divergence, max_grad_norm)
    after_step = score_sample(model, teacher.model, sample, divergence)
    ema = ema_update(teacher, model, step.student_distance)
    after_ema = score_sample(model, teacher.model, sample, divergence)
    return Walk(contexts, sample, before, step, after_step, ema, after_ema, teacher)


# --- Figures ----------------------------------------------------------------------------------------------------------

def display_piece(piece: str) -> str:
    """A token as it is drawn: ↵ for a newline, → for a tab, ␣ for each space of a token made only of spaces, □ for
    a byte token whose character is completed by the next one."""
    if piece and not piece.strip(" "):
        return piece.replace(" ", "␣")
    shown = piece.replace("\n", "↵").replace("\t", "→")
    return shown if shown else "□"


def plot_token_heatmap(pieces: list[str], values, *, label: str, title: str = "", cmap: str = "RdBu",
                       centered: bool = True, limit: float | None = None, width: float = 10.0,
                       fontsize: float = 10.0):
    """The tokens as text, in lines, each on a box coloured by its value, with a colourbar.

    centered: a diverging scale symmetric around 0 (limit: its half-range, default the largest |value|); otherwise a
    sequential scale from 0 (or the smallest value, if negative) to `limit` (default the largest value). Tokens are
    drawn by `display_piece`; a token with a newline ends its line. Returns the figure; its first axes holds one
    Rectangle per token, in order."""
    values = [float(v) for v in values]
    if len(values) != len(pieces):
        raise ValueError(f"{len(pieces)} tokens but {len(values)} values")
    biggest = max((abs(v) for v in values), default=1.0) or 1.0
    if centered:
        half = limit or biggest
        norm = Normalize(-half, half)
    else:
        norm = Normalize(min(0.0, *values) if values else 0.0, limit or max(values, default=1.0) or 1.0)
    colormap = plt.get_cmap(cmap)
    font = FontProperties(family="DejaVu Sans Mono", size=fontsize)
    char_width = fontsize * 0.6021 / 72  # DejaVu Sans Mono advance: 1233/2048 em, in inches
    pad, gap, line_height, margin = 0.03, 0.025, fontsize * 1.9 / 72, 0.1

    boxes, x, line = [], margin, 0  # (x, line, width, text) in inches
    for piece in pieces:
        shown = display_piece(piece)
        box_width = len(shown) * char_width + 2 * pad
        if x + box_width > width - margin and x > margin:
            x, line = margin, line + 1
        boxes.append((x, line, box_width, shown))
        x += box_width + gap
        if "\n" in piece:
            x, line = margin, line + 1
    lines = (boxes[-1][1] + 1) if boxes else 1
    title_height, text_height, bar_height = (0.35 if title else 0.1), lines * line_height + 0.1, 0.6
    height = title_height + text_height + bar_height
    with style():
        fig = plt.figure(figsize=(width, height))
        ax = fig.add_axes((0, bar_height / height, 1, text_height / height))
        ax.set_xlim(0, width)
        ax.set_ylim(text_height, 0)
        ax.axis("off")
        for (x, line, box_width, shown), value in zip(boxes, values):
            colour = colormap(norm(value))
            top = 0.05 + line * line_height
            ax.add_patch(Rectangle((x, top + 0.1 * line_height), box_width, 0.8 * line_height, facecolor=colour,
                                   edgecolor="0.75", linewidth=0.3))
            luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
            ax.text(x + box_width / 2, top + 0.5 * line_height, shown, ha="center", va="center", fontproperties=font,
                    color="white" if luminance < 0.5 else "black", parse_math=False)
        if title:
            fig.text(0.5, 1 - 0.5 * title_height / height, title, ha="center", va="center", fontsize=fontsize + 1)
        cax = fig.add_axes((0.25, 0.32 / height, 0.5, 0.12 / height))
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colormap), cax=cax, orientation="horizontal", label=label,
                     extend="neither")
    return fig


def plot_step_effect(before: TokenScores, after: TokenScores, title: str = ""):
    """Per position: the divergence before and after the step, and the change of the student's log-probability of
    each sampled token (bars coloured by the sign of its reward)."""
    changes = token_changes(before, after)
    positions = range(len(changes))
    labels = [display_piece(p) for p in changes.token]
    with style():
        fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.22 * len(changes)), 5.5), sharex=True)
        axes[0].plot(positions, changes["divergence before"], marker="o", ms=3, label="before the step")
        axes[0].plot(positions, changes["divergence after"], marker="o", ms=3, label="after the step")
        axes[0].set_ylabel(f"{before.divergence_label}\n(nats)")
        axes[0].legend()
        colours = [SIGN_COLOURS["positive"] if r > 0 else SIGN_COLOURS["negative"] for r in changes.reward]
        axes[1].bar(positions, changes["Δ student_logp"], color=colours)
        axes[1].axhline(0, color="0.3", linewidth=0.8)
        axes[1].set_ylabel("Δ log π_θ(y_t)\n(blue: r_t > 0, red: r_t < 0)")
        axes[1].set_xticks(list(positions), labels, rotation=90, fontfamily="DejaVu Sans Mono", fontsize=8)
        if title:
            axes[0].set_title(title)
        fig.tight_layout()
    return fig


def save_and_show(fig, path_stem: str | Path):
    """Save the figure (PNG and PDF, `sdft_core.plotting.save_figure`), close it, and return the PNG for the notebook
    to show."""
    save_figure(fig, path_stem)
    plt.close(fig)
    return Image(filename=f"{path_stem}.png")
