"""Learning facts, SDFT beside SFT: the pieces of `notebooks/workshop_learning_facts.py` (a workshop notebook).

A handful of invented facts (`Fact`: a question, a one-sentence demonstration, the fact it must contain) is learned
by three runs of the kit's own training loop (`sdft_core.train.train`): SFT, pure on-policy SDFT (the paper's
Algorithm 1) and SDFT with mixture rollouts (`TrainConfig.guided_fraction`), built by `workshop_configs` from one
recipe. What each run did is measured with the library's evaluation helpers:

- `answers_table`: each model's greedy answer to every question, and whether it states the fact (`fact_matcher`);
- `fact_token_table`: the probability of every token of every fact, read along the demonstration with the question
  alone (the student's context): why a fact of several tokens is learned one token at a time on-policy;
- `on_path_share`: the pre-flight's "answer positions where the student sampled the teacher's token", on the
  student's own rollouts (`preflight.rollout_signal`);
- `forgetting_table`: the sequence-level KL to the base model on unrelated prompts (`evaluate.sampled_sequence_kl`,
  the paper's Fig. 2 metric) and the answers to a few of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sdft_core.config import TrainConfig
from sdft_core.data import EvalItem, Example, read_jsonl
from sdft_core.eval.evaluate import generate_texts, prompt_ids, sampled_sequence_kl
from sdft_core.eval.fact_matcher import contains
from sdft_core.eval.preflight import STUDENT, completion_logprobs, fact_token_mask, rollout_signal
from sdft_core.io import write_json
from sdft_core.loss import Divergence
from sdft_core.model import load_model
from sdft_core.prompts import student_prompt_ids, teacher_prompt_ids
from sdft_core.train import train

ON_PATH = "answer positions where the student sampled the teacher's token"


@dataclass(frozen=True)
class Fact:
    question: str
    answer: str  # the demonstration: one sentence that states the fact
    fact: str  # what a correct answer must contain (whole words, case-insensitive)


def examples_of(facts: list[Fact]) -> list[Example]:
    """Training examples: the question is the prompt, the answer sentence the demonstration."""
    return [Example(f"fact{i}", f.question, f.answer) for i, f in enumerate(facts)]


def items_of(facts: list[Fact]) -> list[EvalItem]:
    """Evaluation items with the fact matcher's answer key (one required fact, no wrong strings)."""
    return [EvalItem(f"fact{i}", f.question, {"facts": [[f.fact]], "wrong": []}, demonstration=f.answer)
            for i, f in enumerate(facts)]


def knows(answer: str, fact: Fact) -> bool:
    return contains(answer, fact.fact)


def context_ids(tokenizer, facts: list[Fact], context: str = STUDENT, template: str = "paper") -> list[list[int]]:
    """The prompts as the model reads them: the student's (STUDENT: the question alone) or the teacher's
    ("demonstration": the question and the answer sentence in the teacher `template`, paper §3)."""
    examples = examples_of(facts)
    if context == STUDENT:
        return [student_prompt_ids(tokenizer, e, 1 << 20) for e in examples]
    return [teacher_prompt_ids(tokenizer, e, 1 << 20, context, template=template) for e in examples]


# --- The runs ---------------------------------------------------------------------------------------------------------

def workshop_configs(recipe: dict, mixture: dict, sft: dict, num_facts: int, steps: int, *, sdft_learning_rate: float,
                     sft_learning_rate: float, rollout_tokens: int, seed: int = 0, model: str | None = None
                     ) -> dict[str, TrainConfig]:
    """Three runs on the same facts and the same number of optimizer steps, every step one batch of all facts:
    "SFT" (`sft`'s fields), "SDFT on-policy" (`recipe` without the `mixture` fields: the paper's pure on-policy
    rollouts) and "SDFT mixture" (`recipe` with them). Sizes, learning rates and `model` override the recipes'."""
    sizes = {"epochs": float(steps), "batch_size": num_facts, "micro_batch_size": num_facts,
             "warmup_steps": max(1, steps // 10), "seed": seed, **({"model": model} if model else {})}
    on_policy = {k: v for k, v in recipe.items() if k not in mixture}
    sdft = {**sizes, "learning_rate": sdft_learning_rate, "max_new_tokens": rollout_tokens}
    return {"SFT": TrainConfig(**{**sft, **sizes, "learning_rate": sft_learning_rate}),
            "SDFT on-policy": TrainConfig(**{**on_policy, **sdft}),
            "SDFT mixture": TrainConfig(**{**recipe, **mixture, **sdft})}


def run_folder(scratch: str | Path, label: str) -> Path:
    return Path(scratch) / label.lower().replace(" ", "_").replace("-", "_")


def train_runs(configs: dict[str, TrainConfig], examples: list[Example], scratch: str | Path,
               progress: bool = True) -> pd.DataFrame:
    """Train every run with the kit's `train` (a finished run with the same configuration and data is skipped) and
    return its metrics, one row per (run, step)."""
    frames = []
    for label, config in configs.items():
        folder = run_folder(scratch, label)
        summary = train(config, examples, folder, progress=progress)
        metrics = pd.DataFrame(read_jsonl(folder / "metrics.jsonl"))
        metrics.insert(0, "run", label)
        metrics["train_seconds"] = summary.get("train_seconds_this_session", np.nan)
        frames.append(metrics)
    return pd.concat(frames, ignore_index=True)


def load_trained(configs: dict[str, TrainConfig], scratch: str | Path, device: str = "cpu") -> dict:
    return {label: load_model(str(run_folder(scratch, label) / "model"), "float32", device).eval()
            for label in configs}


def training_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run: steps, seconds, and the first and last loss (SFT: next-token NLL of the demonstration; SDFT: the
    per-token forward KL(teacher ‖ student) on its rollouts)."""
    rows = {}
    for run, m in metrics.groupby("run", sort=False):
        rows[run] = {"steps": len(m), "seconds": m.seconds_step.sum(), "first loss": m.loss.iloc[0],
                     "last loss": m.loss.iloc[-1],
                     "guided share, first → last step": (f"{m.guided_fraction.iloc[0]:.2f} → "
                                                         f"{m.guided_fraction.iloc[-1]:.2f}"
                                                         if "guided_fraction" in m and m.guided_fraction.notna().any()
                                                         else "—")}
    return pd.DataFrame(rows).T


def plot_training(metrics: pd.DataFrame):
    """The loss of each run over its steps, with the share of guided rollouts of the mixture run."""
    runs = list(dict.fromkeys(metrics.run))
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.2), squeeze=False)
    for ax, run in zip(axes[0], runs):
        m = metrics[metrics.run == run]
        ax.plot(m.step, m.loss, marker="o", ms=3, color="tab:blue")
        ax.set_title(run)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("NLL per token" if run == "SFT" else "KL(teacher ‖ student) per token")
        if "guided_fraction" in m and m.guided_fraction.notna().any():
            twin = ax.twinx()
            twin.plot(m.step, m.guided_fraction, color="tab:orange", linestyle="--")
            twin.set_ylim(0, 1.05)
            twin.set_ylabel("share of guided rollouts", color="tab:orange")
    fig.tight_layout()
    return fig


# --- What was learned -------------------------------------------------------------------------------------------------

def fact_answers(models: dict, tokenizer, facts: list[Fact], max_new_tokens: int, context: str = STUDENT,
                 template: str = "paper") -> dict[str, list[str]]:
    """Each model's greedy answer to every question, asked in `context` (default: the question alone)."""
    prompts = context_ids(tokenizer, facts, context, template)
    return {label: generate_texts(model, tokenizer, prompts, max_new_tokens, progress=False)
            for label, model in models.items()}


def answers_table(facts: list[Fact], answers: dict[str, list[str]], width: int = 90) -> pd.DataFrame:
    """One row per fact: the question, the fact, and per model its answer (cut at `width` characters) marked ✓ when
    it states the fact."""
    rows = []
    for i, fact in enumerate(facts):
        row = {"question": fact.question, "fact": fact.fact}
        for label, texts in answers.items():
            text = " ".join(texts[i].split())
            row[label] = ("✓ " if knows(texts[i], fact) else "✗ ") + (text[:width] + ("…" if len(text) > width
                                                                                      else ""))
        rows.append(row)
    return pd.DataFrame(rows)


def facts_known(facts: list[Fact], answers: dict[str, list[str]]) -> pd.Series:
    """How many of the facts each model states in its greedy answer."""
    return pd.Series({label: sum(knows(t, f) for t, f in zip(texts, facts)) for label, texts in answers.items()},
                     name=f"facts known (of {len(facts)})")


def fact_token_table(models: dict, tokenizer, facts: list[Fact], template: str = "paper") -> pd.DataFrame:
    """Every token of every fact, read along the demonstration (each token given the question and the answer
    sentence's own previous tokens): its probability under each entry of `models`, label → (model, context), the
    context STUDENT (the question alone) or "demonstration" (the teacher's context). One row per fact token: fact,
    position within the fact (1 = its first token), token, and one column per entry."""
    encoded = [fact_token_mask(tokenizer, f.answer, [[f.fact]]) for f in facts]
    completions = [ids for ids, _ in encoded]
    columns = {}
    for label, (model, context) in models.items():
        columns[label] = completion_logprobs(model, context_ids(tokenizer, facts, context, template), completions,
                                             tokenizer.pad_token_id, 8)
    rows = []
    for index, (fact, (ids, mask)) in enumerate(zip(facts, encoded)):
        positions = [p for p, on in enumerate(mask) if on]
        for rank, p in enumerate(positions, start=1):
            rows.append({"fact": fact.fact, "token in fact": rank, "token": repr(tokenizer.decode([ids[p]])),
                         **{label: float(logp[index][p].exp()) for label, logp in columns.items()}})
    return pd.DataFrame(rows)


def whole_fact_probability(tokens: pd.DataFrame) -> pd.DataFrame:
    """Per fact: the product of its tokens' probabilities, the chance that a sample at temperature 1 that has reached
    the fact writes all of it (each token given the fact's own previous tokens)."""
    columns = [c for c in tokens.columns if c not in ("fact", "token in fact", "token")]
    table = tokens.groupby("fact", sort=False)[columns].prod()
    table.insert(0, "tokens", tokens.groupby("fact", sort=False).size())
    return table


def plot_fact_tokens(tokens: pd.DataFrame, title: str = ""):
    """Mean probability of the 1st, 2nd, 3rd … token of the facts under each model (teacher-forced along the
    demonstration, question only)."""
    columns = [c for c in tokens.columns if c not in ("fact", "token in fact", "token")]
    means = tokens.groupby("token in fact")[columns].mean()
    counts = tokens.groupby("token in fact").size()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / len(columns)
    for k, column in enumerate(columns):
        ax.bar(np.arange(len(means)) + (k - (len(columns) - 1) / 2) * width, means[column], width, label=column)
    ax.set_xticks(range(len(means)), [f"token {i}\n({counts[i]} fact{'s' if counts[i] > 1 else ''})"
                                      for i in means.index])
    ax.set_ylabel("p(token | question, previous tokens)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def on_path_share(models: dict, tokenizer, facts: list[Fact], teacher_model, *, template: str = "paper",
                  temperature: float = 1.0, max_new_tokens: int = 32, rollouts_per_prompt: int = 1,
                  seed: int = 0) -> pd.DataFrame:
    """The pre-flight's rollout measurements (`preflight.rollout_signal`) for each model as the student, with
    `teacher_model` behind the demonstration context as the teacher: how often its own rollouts reach the point where
    the teacher would state the fact, and at how many of those points the student sampled the teacher's token."""
    examples, items = examples_of(facts), items_of(facts)
    rows = {}
    for label, model in models.items():
        signal = rollout_signal(model, tokenizer, examples, [i.reference for i in items], "demonstration", template,
                                rollouts_per_prompt, temperature, max_new_tokens, seed, 8, Divergence("forward"),
                                teacher_model=teacher_model)
        summary = signal.summary()
        rows[label] = {key: summary[key] for key in ("rollouts", "rollouts reaching an answer position",
                                                     ON_PATH, "teacher p(answer token) at answer positions")}
    return pd.DataFrame(rows).T


# --- Forgetting -------------------------------------------------------------------------------------------------------

def forgetting_table(models: dict, base_model, tokenizer, prompts: list[str], max_new_tokens: int,
                     seed: int = 0) -> pd.DataFrame:
    """Per model: the sequence-level KL(model ‖ base) on unrelated prompts, estimated on one sample per prompt from
    the model (temperature 1), mean and max over prompts (the paper's Fig. 2 measure; 0 for the base model)."""
    ids = prompt_ids(tokenizer, prompts)
    rows = {}
    for label, model in models.items():
        kl = sampled_sequence_kl(model, ids, base_model, ids, tokenizer, max_new_tokens, seed=seed, progress=False)
        rows[label] = {"KL to base, mean (nats)": float(np.mean(kl)), "max over prompts": float(np.max(kl)),
                       "prompts": len(kl)}
    return pd.DataFrame(rows).T


def general_answers(models: dict, tokenizer, prompts: list[str], max_new_tokens: int, width: int = 160
                    ) -> pd.DataFrame:
    """Each model's greedy answer to a few unrelated prompts: one row per prompt, one column per model."""
    ids = prompt_ids(tokenizer, prompts)
    table = {"prompt": prompts}
    for label, model in models.items():
        texts = generate_texts(model, tokenizer, ids, max_new_tokens, progress=False)
        table[label] = [" ".join(t.split())[:width] for t in texts]
    return pd.DataFrame(table)


def record(path: str | Path, parameters: dict, answers: pd.DataFrame, known: pd.Series, forgetting: pd.DataFrame,
           tokens: pd.DataFrame, on_path: pd.DataFrame, metrics: pd.DataFrame) -> None:
    """The workshop's numbers as JSON (for the executed copy's readers and the test)."""
    write_json(path, {
        "parameters": parameters, "facts_known": {k: int(v) for k, v in known.items()},
        "answers": answers.to_dict(orient="records"),
        "forgetting": forgetting.to_dict(orient="index"),
        "fact_tokens": tokens.to_dict(orient="records"),
        "on_path": on_path.to_dict(orient="index"),
        "train_seconds": {run: float(m.seconds_step.sum()) for run, m in metrics.groupby("run")},
    })


def config_table(configs: dict[str, TrainConfig], fields: tuple[str, ...] = (
        "method", "learning_rate", "epochs", "batch_size", "direction", "teacher_kind", "teacher_context",
        "guided_fraction", "guided_by", "temperature", "max_new_tokens")) -> pd.DataFrame:
    """The fields that differ between runs, side by side."""
    return pd.DataFrame({label: {f: dataclasses.asdict(c)[f] for f in fields} for label, c in configs.items()})
