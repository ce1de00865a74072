"""Pre-flight diagnostic: will SDFT work for this model and this task? Run it before spending hours on training.

SDFT can only teach what the demonstration-conditioned teacher knows and the student does not (paper §3.2, the
"optimality" condition of Eq. 2), and it can only teach it where the student's own rollouts give the teacher a
chance to say it. Three measurements, on the task's training prompts, say whether both hold:

1. **Teacher ceiling**: greedy accuracy under the student context and under each teacher context (demonstration,
   source text, source text + demonstration). The best teacher context bounds what SDFT can reach on these prompts;
   the gap to the student context is what there is to distil.
2. **Demonstration log-probability**: the mean per-token log π(c | context) of the demonstration itself under each
   context: how much more likely the right answer becomes once the teacher has seen it.
3. **The training signal on real rollouts**: for student samples y ~ π(·|x) (the training temperature), the
   per-token reward of Eq. 3, r_t = log π(y_t | y_<t, x, c) − log π(y_t | y_<t, x), and the per-token divergence the
   loss minimises. *Answer positions* are the positions where the teacher's most likely next token is one of the
   answer's tokens (tokens of the reference facts, or of the demonstration, that are not in the question): there
   the teacher is trying to state the answer. Reported: the share of rollouts that reach such a position, the share
   of the divergence that falls there, and the mean reward there and elsewhere. If rollouts never reach an answer
   position, the teacher's knowledge has nowhere to flow (the usual cure: rollouts closer to the student's greedy
   answer, i.e. a lower rollout temperature).

`run_preflight` returns a `Preflight` with a table, a figure and a one-line verdict (`verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F

from sdft_core.data import Example
from sdft_core.eval.evaluate import generate_batched, generate_texts
from sdft_core.forward import completion_hidden, with_teacher_prompts
from sdft_core.io import read_json, write_json, write_text
from sdft_core.loss import Divergence
from sdft_core.plotting import OTHER_COLOURS, PERCENT, SIGN_COLOURS, caption, limit_axis, n_label, save_figure, style
from sdft_core.prompts import encode, student_prompt_ids, teacher_prompt_ids
from sdft_core.rollout import Batch, generate, left_pad, right_pad

STUDENT = "student (question only)"
# Verdict thresholds (absolute accuracy points and fractions); documented in `verdict`.
MIN_CEILING_GAIN = 0.10
MIN_ANSWER_COVERAGE = 0.25
MIN_ON_PATH = 0.5
FIXED_OPENING = 0.9
MIN_OPENING = 0.5


def teacher_contexts_of(examples: list[Example]) -> list[str]:
    """The teacher contexts a task supports: the demonstration always; source text ones when examples have text."""
    with_text = all(e.context for e in examples)
    return ["demonstration"] + (["context", "context_and_demonstration"] if with_text else [])


def _prompts(tokenizer, examples: list[Example], context: str, template: str) -> list[list[int]]:
    if context == STUDENT:
        return [student_prompt_ids(tokenizer, e, 1 << 20) for e in examples]
    return [teacher_prompt_ids(tokenizer, e, 1 << 20, context, template=template) for e in examples]


def _batches(size: int, batch_size: int):
    return [slice(i, i + batch_size) for i in range(0, size, batch_size)]


@torch.no_grad()
def completion_logprobs(model, prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                        batch_size: int) -> list[torch.Tensor]:
    """log π(y_t | y_<t, prompt) of every completion token, one 1-D tensor per row."""
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    out = []
    for part in _batches(len(prompts), batch_size):
        prompt_ids, prompt_mask = left_pad(prompts[part], pad_id)
        completion_ids, completion_mask = right_pad(completions[part], pad_id)
        batch = Batch(prompt_ids.to(device), prompt_mask.to(device), completion_ids.to(device),
                      completion_mask.to(device))
        logp = F.log_softmax(head(completion_hidden(model, batch)).float(), -1)
        token_logp = logp.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
        out += [row[: len(c)].cpu() for row, c in zip(token_logp, completions[part])]
    return out


def answer_token_ids(tokenizer, example: Example, reference: dict | None) -> set[int]:
    """Tokens that carry the answer: of the reference facts (every alias, with and without a leading space) when the
    task has them, else of the demonstration; minus every token of the question."""
    if reference and "facts" in reference:
        pieces = [alias for aliases in reference["facts"] for alias in aliases]
        ids = {t for piece in pieces for text in (piece, " " + piece) for t in encode(tokenizer, text)}
    else:
        ids = set(encode(tokenizer, example.demonstration))
    return ids - set(encode(tokenizer, example.prompt)) - set(tokenizer.all_special_ids)


def fact_token_mask(tokenizer, text: str, facts: list[list[str]]) -> tuple[list[int], list[bool]]:
    """The tokens of `text` and, for each, whether it overlaps an occurrence of a fact (any alias, case-insensitive)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    lowered, spans = text.lower(), []
    for alias in (a.lower() for aliases in facts for a in aliases):
        start = lowered.find(alias)
        while start >= 0:
            spans.append((start, start + len(alias)))
            start = lowered.find(alias, start + 1)
    mask = [any(begin < span_end and span_start < end for span_start, span_end in spans)
            for begin, end in encoded["offset_mapping"]]
    return encoded["input_ids"], mask


@torch.no_grad()
def answer_logprobs(model, tokenizer, items, batch_size: int = 8, context: str = STUDENT,
                    template: str = "paper") -> dict:
    """How likely the model finds the correct answers of evaluation items, asked with the question alone: the mean
    per-token log π(answer | question) over all answer tokens and over the tokens of the facts (items with
    `reference["facts"]`). A finer measure of what a model learned than greedy accuracy, which stays at 0 until a
    whole multi-token fact is the argmax. With a teacher `context` ("demonstration": the answer itself in the
    teacher's `template`), it measures how sure the teacher is of the answer it reads: the sharpest target SDFT can
    distil on those tokens."""
    items = [item for item in items if item.demonstration]
    if not items:
        raise ValueError("answer_logprobs needs items with a demonstration (a correct answer)")
    prompts = _prompts(tokenizer, [Example(i.id, i.prompt, i.demonstration, i.context) for i in items], context,
                       template)
    encoded = [fact_token_mask(tokenizer, i.demonstration, i.reference.get("facts", [])) for i in items]
    logp = completion_logprobs(model, prompts, [ids for ids, _ in encoded], tokenizer.pad_token_id, batch_size)
    facts = [value for row, (_, mask) in zip(logp, encoded) for value, on in zip(row.tolist(), mask) if on]
    return {"answer_logprob": float(torch.cat(logp).mean()),
            "fact_logprob": sum(facts) / len(facts) if facts else float("nan"), "fact_tokens": len(facts),
            "items": len(items)}


def first_token_text(tokenizer, text: str) -> str:
    return tokenizer.decode(encode(tokenizer, text)[:1]).strip()


def opens_alike(tokenizer, text: str, demonstration_ids: list[int], first: str | None = None) -> bool:
    """Whether `text` opens as the demonstration does: its first token and the demonstration's first token are the
    same text, or one is a prefix of the other ('{"' and '{' both open a JSON object). `first`: the text's first
    token, where the caller has it already (`first_token_text`)."""
    mine = first_token_text(tokenizer, text) if first is None else first
    theirs = tokenizer.decode(demonstration_ids[:1]).strip()
    return bool(mine) and (mine.startswith(theirs) or theirs.startswith(mine))


def fixed_opening_share(tokenizer, demonstrations: list[list[int]]) -> float:
    """The share of demonstrations that open with their most common first token: near 1 for a format (every JSON
    object opens with "{", every ToolAlpaca call with "Action"), low for free text."""
    firsts = pd.Series([tuple(ids[:1]) for ids in demonstrations])
    return float(firsts.value_counts().iloc[0] / len(firsts)) if len(firsts) else 0.0


@torch.no_grad()
def opening_token(model, tokenizer, items, score, max_new_tokens: int, context: str = STUDENT,
                  template: str = "paper", batch_size: int = 8) -> dict:
    """How the model opens its answer, against how the demonstration opens, and what it writes once the opening is
    right. For a new output format (a JSON object, a tool call) the first token decides the rest: a model can give the
    demonstration's tokens a high probability once the answer has begun (`answer_logprobs`) and still open greedily
    with prose. Returns, over `items` (evaluation items with a demonstration), under `context` (STUDENT or a teacher
    context): how often the greedy answer opens as the demonstration does (`opens_alike`); the mean probability of the
    demonstration's first token and of its later tokens (each given the demonstration's own prefix); the most common
    greedy openings; and the greedy accuracy (the task's `score`) with the demonstration's first token forced, beside
    the plain one."""
    items = [item for item in items if item.demonstration]
    if not items:
        raise ValueError("opening_token needs items with a demonstration (a correct answer)")
    prompts = _prompts(tokenizer, [Example(i.id, i.prompt, i.demonstration, i.context) for i in items], context,
                       template)
    answers = [encode(tokenizer, i.demonstration) for i in items]
    logp = completion_logprobs(model, prompts, answers, tokenizer.pad_token_id, batch_size)
    greedy = generate_texts(model, tokenizer, prompts, max_new_tokens, batch_size, desc="greedy", progress=False)
    forced = [""] * len(items)  # the opening and the greedy rest, decoded together
    for indices, batch in generate_batched(model, tokenizer, [p + ids[:1] for p, ids in zip(prompts, answers)],
                                           max_new_tokens - 1, batch_size, progress=False):
        for row, index in enumerate(indices):
            rest = batch.completion_ids[row][batch.completion_mask[row].bool()].tolist()
            forced[index] = tokenizer.decode(answers[index][:1] + rest, skip_special_tokens=True).strip()
    first_greedy = [first_token_text(tokenizer, text) for text in greedy]
    same = [opens_alike(tokenizer, text, ids, first) for text, ids, first in zip(greedy, answers, first_greedy)]
    later = torch.cat([row[1:] for row in logp])
    common = pd.Series(first_greedy).value_counts().head(3)
    return {"context": context, "items": len(items),
            "greedy opens like the demonstration": sum(same) / len(items),
            "p(demonstration's first token)": float(torch.stack([row[0] for row in logp]).exp().mean()),
            "p(its later tokens), mean": float(later.exp().mean()),
            "most common greedy openings": ", ".join(f"{token!r} ×{count}" for token, count in common.items()),
            "greedy accuracy": sum(score(t, i.reference)["correct"] for t, i in zip(greedy, items)) / len(items),
            "greedy accuracy, demonstration's first token forced":
                sum(score(t, i.reference)["correct"] for t, i in zip(forced, items)) / len(items)}


@dataclass
class RolloutSignal:
    """Per-token numbers over all rollouts (one row per sampled token) and the summary of where the signal lies."""

    tokens: pd.DataFrame  # example, rollout, position, token, token_id, reward, divergence, answer_position,
    # sampled_teacher_top, teacher_p_answer
    rollouts: int

    def summary(self) -> dict:
        t = self.tokens
        answer = t[t.answer_position]
        reached = t.groupby(["example", "rollout"]).answer_position.any()
        return {
            "rollouts": self.rollouts,
            "tokens per rollout": len(t) / max(self.rollouts, 1),
            "mean reward per token (Eq. 3)": t.reward.mean(),
            "mean divergence per token": t.divergence.mean(),
            "rollouts reaching an answer position": float(reached.mean()) if len(reached) else 0.0,
            "answer positions (share of tokens)": float(t.answer_position.mean()) if len(t) else 0.0,
            "share of divergence on answer positions": (answer.divergence.sum() / t.divergence.sum()
                                                         if len(t) and t.divergence.sum() > 0 else 0.0),
            "mean reward on answer positions": answer.reward.mean() if len(answer) else float("nan"),
            "mean reward elsewhere": t[~t.answer_position].reward.mean() if len(t) else float("nan"),
            "teacher p(answer token) at answer positions": (answer.teacher_p_answer.mean() if len(answer)
                                                            else float("nan")),
            # A fact of several tokens is taught one token at a time: its second token gets a teacher signal only
            # in rollouts where the student itself sampled the first. This is how often that happens.
            "answer positions where the student sampled the teacher's token": (
                float(answer.sampled_teacher_top.mean()) if len(answer) else float("nan")),
        }


@torch.no_grad()
def rollout_signal(model, tokenizer, examples: list[Example], references: list[dict | None], teacher_context: str,
                   template: str, rollouts_per_prompt: int, temperature: float, max_new_tokens: int, seed: int,
                   batch_size: int, divergence: Divergence = Divergence("forward"), teacher_model=None
                   ) -> RolloutSignal:
    """Sample student rollouts as training does and score every token under both contexts (teacher_model: the
    teacher's weights, default the same model, as at the first step of training)."""
    teacher_model = teacher_model or model
    student_prompts = _prompts(tokenizer, examples, STUDENT, template)
    teacher_prompts = _prompts(tokenizer, examples, teacher_context, template)
    answer_ids = [answer_token_ids(tokenizer, e, r) for e, r in zip(examples, references)]
    rows = [(i, r) for i in range(len(examples)) for r in range(rollouts_per_prompt)]
    records = []
    for number, part in enumerate(_batches(len(rows), batch_size)):
        chunk = rows[part]
        torch.manual_seed(seed * 1_000_003 + number)
        batch = generate(model, tokenizer, [student_prompts[i] for i, _ in chunk], max_new_tokens, temperature)
        teacher_batch = with_teacher_prompts(batch, [teacher_prompts[i] for i, _ in chunk], tokenizer.pad_token_id)
        student_hidden, teacher_hidden = completion_hidden(model, batch), completion_hidden(teacher_model,
                                                                                            teacher_batch)
        student_logp = F.log_softmax(model.get_output_embeddings()(student_hidden).float(), -1)
        teacher_logp = F.log_softmax(teacher_model.get_output_embeddings()(teacher_hidden).float(), -1)
        per_position = divergence(student_logp, teacher_logp)
        sampled = batch.completion_ids.unsqueeze(-1)
        reward = (teacher_logp.gather(-1, sampled) - student_logp.gather(-1, sampled)).squeeze(-1)
        teacher_top = teacher_logp.argmax(-1)
        for row, (index, rollout) in enumerate(chunk):
            length = int(batch.completion_mask[row].sum())
            for position in range(length):
                top = int(teacher_top[row, position])
                records.append({
                    "example": examples[index].id, "rollout": rollout, "position": position,
                    "token": tokenizer.decode([int(batch.completion_ids[row, position])]),
                    "token_id": int(batch.completion_ids[row, position]),
                    "reward": float(reward[row, position]), "divergence": float(per_position[row, position]),
                    "answer_position": top in answer_ids[index],
                    "sampled_teacher_top": top == int(batch.completion_ids[row, position]),
                    "teacher_p_answer": float(teacher_logp[row, position, top].exp()) if top in answer_ids[index]
                    else float("nan"),
                })
    return RolloutSignal(pd.DataFrame(records), len(rows))


@dataclass
class Preflight:
    table: pd.DataFrame  # one row per context: accuracy metrics and demonstration log-prob
    signal: dict  # RolloutSignal.summary()
    best_context: str
    primary_metric: str
    details: dict = field(default_factory=dict)  # per-token rollout table, answers per context

    @property
    def verdict(self) -> str:
        """One line. Rules: the teacher must beat the student by MIN_CEILING_GAIN on the primary metric (else there
        is nothing to distil); at least MIN_ANSWER_COVERAGE of rollouts must reach an answer position (else the
        signal has nowhere to land); and if at fewer than MIN_ON_PATH of the answer positions the student sampled the
        teacher's token, answers of several tokens will be learned slowly on-policy (each token is taught only after
        the student samples the one before), which mixture rollouts (TrainConfig.guided_fraction) address. Between
        the first two: when the demonstrations share their opening (at least FIXED_OPENING of them open with the same
        token: a format) and the best teacher context's greedy answers open that way for fewer than MIN_OPENING of
        the prompts, the student will learn the teacher's opening instead of the format's (measured on the
        extraction task: README, "The skill search")."""
        metric = self.primary_metric
        student = self.table.loc[STUDENT, metric]
        ceiling = self.table.loc[self.best_context, metric]
        coverage = self.signal["rollouts reaching an answer position"]
        on_path = self.signal.get("answer positions where the student sampled the teacher's token", 1.0)
        numbers = (f"teacher ceiling {100 * ceiling:.0f}% ({self.best_context}) vs student {100 * student:.0f}% "
                   f"{metric}; {100 * coverage:.0f}% of rollouts reach an answer position")
        if ceiling - student < MIN_CEILING_GAIN:
            return (f"UNLIKELY: the demonstration-conditioned teacher is barely better than the student ({numbers}); "
                    f"SDFT has little to distil here: try another teacher template or context, a larger model, or "
                    f"SFT.")
        fixed = self.signal.get("demonstrations opening with the same token", 0.0)
        if fixed >= FIXED_OPENING and "opens like the demonstration" in self.table:
            opening = self.table.loc[self.best_context, "opens like the demonstration"]
            if opening < MIN_OPENING:
                return (f"WRONG OPENING: the teacher knows more ({numbers}), but {100 * fixed:.0f}% of the "
                        f"demonstrations open with the same token and the teacher's answers open that way for only "
                        f"{100 * opening:.0f}% of the prompts: the student learns the teacher's opening, not the "
                        f"format's; try a teacher template that asks for the format (teacher_template "
                        f"'same_format'), or SFT.")
        if coverage < MIN_ANSWER_COVERAGE:
            return (f"WEAK SIGNAL: the teacher knows more, but the student's rollouts rarely reach the point where "
                    f"it would state the answer ({numbers}); lower the rollout temperature or lengthen rollouts.")
        if on_path < MIN_ON_PATH:
            return (f"SLOW ON-POLICY: the teacher knows more and the rollouts reach the answer ({numbers}), but at only "
                    f"{100 * on_path:.0f}% of answer positions did the student sample the teacher's token, so an "
                    f"answer of several tokens is learned one token per round of rollouts: expect pure on-policy "
                    f"SDFT to need many epochs; mixture rollouts (guided_fraction) put whole answers on the path.")
        return (f"LIKELY: SDFT has something to teach and the rollouts carry it ({numbers}); expect SDFT to approach, "
                f"not exceed, the teacher ceiling on these prompts.")


def run_preflight(model, tokenizer, task, template: str = "paper", contexts: list[str] | None = None,
                  max_examples: int = 40, rollouts_per_prompt: int = 1, temperature: float = 1.0,
                  max_new_tokens: int | None = None, batch_size: int = 8, seed: int = 0,
                  divergence: Divergence = Divergence("forward")) -> Preflight:
    """All three measurements on the first `max_examples` training examples of `task` (the task must have a "train"
    evaluation split: the training questions' answer keys)."""
    if "train" not in task.eval_splits:
        raise ValueError(f"task {task.name!r} has no 'train' answer keys (eval_splits['train']): the teacher ceiling "
                         f"needs them")
    keys = {item.id: item for item in task.eval_splits["train"]}
    examples = [e for e in task.train if e.id in keys][:max_examples]
    if not examples:
        raise ValueError(f"task {task.name!r}: no training example has an answer key in eval_splits['train']")
    items = [keys[e.id] for e in examples]
    max_new_tokens = max_new_tokens or task.max_new_tokens
    contexts = contexts or teacher_contexts_of(examples)
    demonstrations = [encode(tokenizer, e.demonstration) for e in examples]
    rows, answers = {}, {}
    for context in [STUDENT, *contexts]:
        prompts = _prompts(tokenizer, examples, context, template)
        answers[context] = generate_texts(model, tokenizer, prompts, max_new_tokens, batch_size, progress=False)
        scores = [task.score(text, item.reference) for text, item in zip(answers[context], items)]
        row = {key: sum(s[key] for s in scores) / len(scores) for key in scores[0]}
        # Long answers under a teacher context are a template's artefacts (text besides the answer), which the
        # student would learn and which crowd the answer out of its token budget.
        row["answer tokens"] = sum(len(encode(tokenizer, text)) for text in answers[context]) / len(examples)
        # The student learns how the teacher opens; for a format (a JSON object, a call) the opening decides it.
        row["opens like the demonstration"] = sum(opens_alike(tokenizer, text, ids) for text, ids in
                                                  zip(answers[context], demonstrations)) / len(examples)
        logp = completion_logprobs(model, prompts, demonstrations, tokenizer.pad_token_id, batch_size)
        row["demonstration log-prob per token"] = float(torch.cat(logp).mean())
        rows[context] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "context"
    primary = "correct"
    best = max(contexts, key=lambda c: (table.loc[c, primary], table.loc[c, "demonstration log-prob per token"]))
    signal = rollout_signal(model, tokenizer, examples, [i.reference for i in items], best, template,
                            rollouts_per_prompt, temperature, max_new_tokens, seed, batch_size, divergence)
    summary = {**signal.summary(), "demonstrations opening with the same token": fixed_opening_share(
        tokenizer, demonstrations)}
    return Preflight(table, summary, best, primary, {"tokens": signal.tokens, "answers": answers,
                                                     "examples": [e.id for e in examples]})


def plot_preflight(result: Preflight, title: str = ""):
    """Left: greedy accuracy per context (the teacher ceiling), in % of the training prompts. Middle: the
    demonstration's log-prob per token. Right: mean reward of Eq. 3 on answer positions vs elsewhere, and the share of
    rollouts reaching one. One measurement per context on the same prompts (no seeds: no intervals)."""
    table = result.table
    prompts = len(result.details.get("examples", [])) or None
    rollouts = result.signal.get("rollouts")
    labels = [label.replace("_and_", " + ").replace("student (question only)", "student\n(question only)")
              for label in table.index]
    metrics = [c for c in table.columns if c not in ("demonstration log-prob per token", "answer tokens")]  # shares
    width = 0.8 / len(metrics)
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1.5, 1, 0.8]})
        for k, metric in enumerate(metrics):
            x = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(table))]
            axes[0].bar(x, 100 * table[metric], width * 0.95, label=metric, color=OTHER_COLOURS[k % len(OTHER_COLOURS)],
                        zorder=2)
            for position, value in zip(x, 100 * table[metric]):  # the number, so that a 0 shows too
                axes[0].text(position, value + 1.5, f"{value:.0f}", ha="center", va="bottom", fontsize=6.5,
                             color="0.3")
        axes[0].set_xticks(range(len(table)), labels, rotation=15, ha="right")
        limit_axis(axes[0], PERCENT, full=True)
        axes[0].set_ylabel("share of the training prompts (%)")
        axes[0].set_title("Teacher ceiling: greedy answers per context", fontsize=9.5)
        axes[0].legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=len(metrics))
        axes[1].bar(range(len(table)), table["demonstration log-prob per token"], color="#6A3D9A", zorder=2)
        axes[1].set_xticks(range(len(table)), labels, rotation=15, ha="right")
        axes[1].set_ylabel("log π(demonstration | context), per token")
        axes[1].set_title("How likely the demonstration becomes", fontsize=9.5)
        signal = result.signal
        rewards = [signal["mean reward on answer positions"], signal["mean reward elsewhere"]]
        axes[2].bar(["answer\npositions", "elsewhere"], rewards, 0.6, zorder=2,
                    color=[SIGN_COLOURS["positive"] if r > 0 else SIGN_COLOURS["negative"] for r in rewards])
        axes[2].axhline(0, color="black", linewidth=0.8)
        axes[2].set_ylabel("mean reward r_t (Eq. 3) on student rollouts")
        axes[2].set_title(f"{100 * signal['rollouts reaching an answer position']:.0f}% of rollouts reach an answer "
                          f"position", fontsize=9.5)
        size = n_label(None, prompts, "training prompts") + (f", {rollouts} rollouts" if rollouts else "")
        fig.suptitle((title or "Pre-flight: will SDFT work here?") + (f" ({size})" if prompts else ""))
        fig.tight_layout()
        caption(fig, f"Verdict: {result.details.get('verdict') or result.verdict}", fontsize=7.5)
    return fig


def load_preflight(path_stem: str | Path) -> Preflight:
    """A Preflight back from what `save_preflight` wrote (<stem>.csv: the table in its order; <stem>.json: the rest;
    the per-token rows stay in <stem>_tokens.csv): to draw its figure again without running the model."""
    saved = read_json(f"{path_stem}.json")
    table = pd.read_csv(f"{path_stem}.csv", index_col=0)
    table.index.name = "context"
    return Preflight(table, saved["signal"], saved["best_context"], "correct",
                     {"answers": saved.get("answers", {}), "examples": saved.get("examples", []),
                      "verdict": saved.get("verdict")})  # as written then (the rules may have changed since)


def save_preflight(result: Preflight, path_stem: str | Path, title: str = "") -> None:
    """`<stem>.md` (table, rollout signal, verdict), `.csv` (the table), `.json` (everything but the per-token rows,
    which go to `<stem>_tokens.csv`), `.png`/`.pdf` (the figure)."""
    signal = pd.Series(result.signal, name="value").to_frame()
    write_text(f"{path_stem}.md", f"{result.table.round(3).to_markdown()}\n\n{signal.round(3).to_markdown()}\n\n"
                                  f"**Verdict:** {result.verdict}\n")
    write_text(f"{path_stem}.csv", result.table.to_csv())
    write_text(f"{path_stem}_tokens.csv", result.details["tokens"].to_csv(index=False))
    write_json(f"{path_stem}.json", {"table": result.table.to_dict(orient="index"), "signal": result.signal,
                                     "best_context": result.best_context, "verdict": result.verdict,
                                     "answers": result.details["answers"], "examples": result.details["examples"]})
    save_figure(plot_preflight(result, title), path_stem)
