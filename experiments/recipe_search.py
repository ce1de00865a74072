"""A budgeted search for an SDFT recipe on the knowledge task: successive halving, chosen on validation only.

    python -m experiments.recipe_search                  # the search recorded in results/tiny/recipe_search/
    python -m experiments.recipe_search --list           # the candidates and the rungs, nothing run
    python -m experiments.recipe_search --lora           # LoRA SDFT's learning rate (results/tiny/recipe_search_lora/)
    python -m experiments.recipe_search --task extraction  # a task-appropriate SDFT form for the skill task
                                                         # (results/tiny/recipe_search_extraction/)

Every candidate is a set of TrainConfig fields on top of SEARCH_BASE. Rung 1 trains every candidate on the training
questions of a few articles and scores it on the *validation* questions of those articles; the best `keep` go on to
rung 2, trained on all training questions and scored on the whole validation split; and so on. The test and OOD
splits are never read here. Each candidate's run is cached under runs/ (keyed by its run id) and its validation score
under eval/ (keyed by its weights and the evaluated items), so a killed search resumes, and `summary.json` and
`summary.md` list every candidate's score at every rung it reached.

Why these candidates: the pre-flight diagnostic (sdft_core/eval/preflight.py, notebooks/preflight) shows that the base
model's teacher *does* know the facts (greedy, demonstration in context), and that at the first step about 5% of the
rollout tokens (the positions where the teacher would state a fact) carry over a third of the divergence. The levers
below change how much of that signal reaches the student's greedy answer: which teacher context and template, how
the student samples (temperature, rollouts per prompt), how hard the optimiser pushes (learning rate), and which
divergence and teacher.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import pandas as pd

from experiments.plans import MIXTURE_ROLLOUTS, PLAN_TRAINING, TINY_SIZES, TINY_SKILL
from sdft_core.config import TrainConfig
from sdft_core.data import Task
from sdft_core.eval.evaluate import evaluate_model, up_to_date
from sdft_core.eval.preflight import STUDENT, answer_logprobs, opening_token
from sdft_core.io import fingerprint, read_json, write_json, write_text
from sdft_core.model import load_model, load_tokenizer, weights_fingerprint
from sdft_core.train import train
from tasks.registry import load_task

# Shared by every candidate: the demo's batch and epochs, a short warm-up (the rung-1 runs have 15 steps), rollouts
# long enough for a two-fact answer (the base model's greedy answers run 20-45 tokens).
SEARCH_BASE = {"method": "sdft", "epochs": 4.0, "batch_size": 8, "micro_batch_size": 8, "warmup_steps": 4,
               "max_new_tokens": 48, "direction": "forward", "teacher_kind": "ema", "ema_alpha": 0.01,
               "learning_rate": 3e-4, "teacher_context": "demonstration", "temperature": 1.0}

CANDIDATES: dict[str, dict] = {
    # The demo's setting before this search (docs/searches.md), as the reference point.
    "demo_before": {"learning_rate": 1.5e-4, "max_new_tokens": 32, "warmup_steps": 10,
                    "teacher_context": "context_and_demonstration"},
    # Pure on-policy (the paper's SDFT) with the better teacher context of the pre-flight (answer only), at two
    # rollout temperatures.
    "answer_ctx_T1": {},
    "answer_ctx_T0.5": {"temperature": 0.5},
    # DAgger-style mixture rollouts (TrainConfig.guided_fraction): the first steps take part of their rollouts from
    # the guide, so that multi-token facts are on the path whole; the share falls to 0 by the last step.
    "guided_teacher_0.5": {"guided_fraction": 0.5},
    "guided_teacher_1.0": {"guided_fraction": 1.0},
    "guided_teacher_0.5_T0.5": {"guided_fraction": 0.5, "temperature": 0.5},
    "guided_demonstration_0.5": {**MIXTURE_ROLLOUTS, "guided_fraction": 0.5},
    "guided_teacher_1.0_T0.5": {"guided_fraction": 1.0, "temperature": 0.5},
    "guided_demonstration_1.0": MIXTURE_ROLLOUTS,
    # The teacher template (second round, after the pre-flight of the first winner): the paper's template asks for
    # "the thinking process", and the 135M teacher adds artefacts to its answers ("This is a classic example of
    # thinking outside the box"), which the student learns and which crowd the facts out of its answer budget.
    # "own_words" drops that phrase, "same_facts" also says the example is correct (pre-flight on 40 training
    # questions, results/tiny/preflight_knowledge_template_*.md: strict/lenient 65/88, 65/90, 70/95; the teacher's
    # greedy answers 33, 28 and 26 tokens long).
    "guided_demonstration_1.0_own_words": {**MIXTURE_ROLLOUTS, "teacher_template": "own_words"},
    "guided_demonstration_1.0_same_facts": {**MIXTURE_ROLLOUTS, "teacher_template": "same_facts"},
    "guided_teacher_1.0_same_facts": {"guided_fraction": 1.0, "teacher_template": "same_facts"},
    "answer_ctx_T1_same_facts": {"teacher_template": "same_facts"},
    # The first answer tokens out of the loss (the public Qwen3-0.6B recipe masks 3): the opening words are where the
    # template's artefacts start.
    "guided_demonstration_1.0_same_facts_mask3": {**MIXTURE_ROLLOUTS, "teacher_template": "same_facts",
                                                  "mask_first_tokens": 3},
    # Which teacher (third round): the pre-flight of the first recipe's trained model as a teacher gave 28.8% strict
    # with the answer in context, against 62.5% for the base model: the EMA teacher (a third of the way to the student
    # after 40 steps at α = 0.01) loses the in-context copying that makes it a teacher. A frozen teacher keeps the
    # base model's ceiling.
    "guided_demonstration_1.0_same_facts_frozen": {**MIXTURE_ROLLOUTS, "teacher_template": "same_facts",
                                                   "teacher_kind": "frozen"},
    # How hard the optimiser pushes (fourth round): trained by the recipe, the student reaches 38.8% strict on its own
    # training questions (results/tiny/preflight_knowledge_after_sdft.md) where SFT reaches 96%, while the teacher is
    # sure of the answers it reads (base model, answer in context: validation fact-token log-prob -0.10, against
    # -0.85 for the recipe's student; reference.json). The student is far from its teacher even on what it trained
    # on: an optimisation gap, not a teacher one. Twice the learning rate, within the demo's time budget.
    "guided_demonstration_1.0_lr6e-4": {**MIXTURE_ROLLOUTS, "learning_rate": 6e-4},
}
# LoRA SDFT (`--lora`, one rung on all training and validation questions): the chosen recipe with a rank-16 adapter on
# every linear layer of the decoder (TrainConfig.lora_*), at the recipe's learning rate and higher (an adapter's
# update is a low-rank product that starts at 0: it usually needs a larger step than full fine-tuning).
RECIPE = "guided_demonstration_1.0"
LORA_CANDIDATES: dict[str, dict] = {
    "lora16_lr3e-4": {**CANDIDATES[RECIPE], "lora_rank": 16},
    "lora16_lr3e-3": {**CANDIDATES[RECIPE], "lora_rank": 16, "learning_rate": 3e-3},
    # Added after the first two: 3e-3 was the best and at the edge of the grid (3e-4: 0 / 2.5 validation strict /
    # lenient, 3e-3: 5.0 / 50.0), so the grid goes one step further.
    "lora16_lr1e-2": {**CANDIDATES[RECIPE], "lora_rank": 16, "learning_rate": 1e-2},
}

# The skill task (`--task extraction`, one rung on all 72 training and 16 validation prompts): does a form of SDFT learn
# the new output format at 135M? Shared settings: the tiny profile's SDFT run on the skill task (experiments/plans.py,
# TINY_SIZES.skill_runs at its first learning rate), which learned nothing (0% test, 0% valid JSON). Its pre-flight
# (results/tiny/preflight_extraction_paper.md) says the teacher copies the demonstrated JSON (81%) but the student's
# rollouts are prose, and after training 31 of 32 test answers open with the paper template's prose ("This is a
# classic example of ..."). The first candidate's trained student shows why (`opening_token`, in the table): it gives
# the JSON's first token p ≈ 0.001 and opens with "This" on every validation prompt, yet with the "{" forced it writes
# the right JSON for 88% of them. It learned the teacher's opening: the base teacher, demonstration in context under
# the paper's template, opens with "This" too (15 of 16) and gives "{" p ≈ 0.008. Two levers: the knowledge recipe's
# optimisation (3e-4, 4 epochs: the skill run has 18 steps, so its guided share is gone after a few updates), and
# with it the teacher template that asks for the demonstration's format (same_format), under which the base teacher
# opens with the JSON more often (`reference_openings`, in the table, for SKILL_REFERENCE_TEMPLATES). own_words is
# measured there and not trained (its pre-flight, preflight_extraction_own_words.md: ceiling 62% against 81%). A few
# wordings without "This is an example" were tried by hand on the base teacher while building this: they opened
# with '"', "I" or "Hi" rather than "{", and were not kept.
SKILL_SEARCH_BASE = {**PLAN_TRAINING, **TINY_SIZES.skill_runs["sdft"], "learning_rate": TINY_SIZES.learning_rates[0]}
SKILL_OPTIMISATION = {"learning_rate": 3e-4, "epochs": 4.0, "warmup_steps": 4}
SKILL_CANDIDATES: dict[str, dict] = {
    "skill_setting": {},
    "skill_lr3e-4_4ep": SKILL_OPTIMISATION,
    "skill_same_format_lr3e-4_4ep": {**SKILL_OPTIMISATION, "teacher_template": "same_format"},
}
SKILL_CONTROLS: dict[str, dict] = {"sft_control": {**TINY_SIZES.skill_runs["sft"],
                                                   "learning_rate": TINY_SIZES.learning_rates[0]}}

# Reference points trained and scored like the candidates, never promoted. SFT at the demo's setting (every rung)
# tells whether a rung is long enough for anything to learn.
CONTROLS: dict[str, dict] = {"sft_control": {"method": "sft"}}
# Rung 1 only: the same optimisation lever at twice the training time (8 epochs), outside the 30-minute budget of
# `make demo`, so never a candidate: it says whether more training moves the score as the learning rate does.
BUDGET_PROBES: dict[str, dict] = {"guided_demonstration_1.0_8ep": {**CANDIDATES[RECIPE], "epochs": 8.0}}


@dataclasses.dataclass(frozen=True)
class Rung:
    articles: int  # training and validation questions of the first N articles (0: all)
    keep: int  # how many candidates go on to the next rung


RUNGS = (Rung(articles=3, keep=2), Rung(articles=0, keep=1))
LORA_RUNGS = (Rung(articles=0, keep=1),)
SKILL_RUNGS = (Rung(articles=0, keep=1),)
SKILL_REFERENCE_TEMPLATES = ("paper", "own_words", "same_format")  # the base teacher's opening under each


def article_subset(task: Task, articles: int) -> Task:
    """The task restricted to the training and validation questions of its first `articles` articles (ids start with
    the article id: "a01-q1-t1"); 0 keeps everything. Test and OOD splits are dropped: the search never sees them."""
    def article(item_id: str) -> str:
        return item_id.split("-")[0]

    chosen = sorted({article(e.id) for e in task.train})[: articles or None]
    return dataclasses.replace(task, train=[e for e in task.train if article(e.id) in chosen],
                               eval_splits={"val": [i for i in task.eval_splits["val"] if article(i.id) in chosen]})


def run_candidate(results_dir: Path, name: str, overrides: dict, rung: int, task: Task,
                  base_overrides: dict | None = None, base: dict = SEARCH_BASE, opening: bool = False) -> dict:
    """Train (or reuse) one candidate at one rung and score it on that rung's validation questions.
    base: the shared settings (SEARCH_BASE, or SKILL_SEARCH_BASE); base_overrides: fields changed for every candidate
    (the test suite's smoke sizes). `val_strict` is the task's strict score: all facts right for knowledge, `correct`
    for the skill tasks; the task's other validation metrics follow as `val_<metric>`. opening: also measure how the
    trained student opens its answers (`opening_token`: for the skill tasks, whose format is decided by the first
    token)."""
    config = TrainConfig(**{"max_new_tokens": task.max_new_tokens, **base, **(base_overrides or {}), **overrides,
                            "extra": {"search": name, "rung": rung}})
    run = f"r{rung}_{name}"
    # The search's own run folder, named by candidate and rung: a candidate whose settings or code changed retrains.
    train(config, task.train, results_dir / "runs" / run, overwrite=True)
    model_dir = results_dir / "runs" / run / "model"
    result = evaluate_model(str(model_dir), task, ["val"], [], str(results_dir / "eval" / f"{run}.json"))
    summary = read_json(results_dir / "runs" / run / "summary.json")
    likelihood = cached_measure(results_dir / "eval" / f"{run}_answer_logprob.json", str(model_dir), task,
                                lambda model, tokenizer: answer_logprobs(model, tokenizer, task.eval_splits["val"]))
    scores = result["val"]
    openings = {}
    if opening:
        measured = cached_measure(results_dir / "eval" / f"{run}_opening.json", str(model_dir), task,
                                  lambda model, tokenizer: opening_token(model, tokenizer, task.eval_splits["val"],
                                                                         task.score, config.max_new_tokens),
                                  tag="opening")
        openings = {f"val_{key}": measured[key] for key in OPENING_COLUMNS}
    return {"candidate": name, "rung": rung, "train_questions": len(task.train), "val_questions": scores["n"],
            "val_strict": scores.get("strict", scores["correct"]),
            **{f"val_{metric}": value for metric, value in scores.items() if metric not in ("n", "strict", "correct")},
            "val_fact_logprob": likelihood["fact_logprob"], "val_answer_logprob": likelihood["answer_logprob"],
            **openings, "train_seconds": summary["train_seconds_this_session"], "config": overrides}


# What `opening_token` reports that the skill search's table shows.
OPENING_COLUMNS = ("greedy opens like the demonstration", "p(demonstration's first token)",
                   "most common greedy openings", "greedy accuracy, demonstration's first token forced")


def reference_openings(results_dir: Path, rung: int, task: Task, templates: list[str]) -> list[dict]:
    """How the *base* model opens its answers on the rung's validation prompts: as the student, and as SDFT's teacher
    (the demonstration in context) under each teacher template the candidates use. The student learns the teacher's
    opening; for a format skill the opening decides whether the answer is in the format at all."""
    model_name = TrainConfig(**SEARCH_BASE).model
    roles = [("student (question only)", STUDENT, "paper")] + [(f"teacher (demonstration in context, {template})",
                                                                "demonstration", template) for template in templates]

    def measure(model, tokenizer) -> dict:
        rows = []
        for label, context, template in roles:
            measured = opening_token(model, tokenizer, task.eval_splits["val"], task.score, task.max_new_tokens,
                                     context=context, template=template)
            rows.append({"rung": rung, "model": f"base, {label}",
                         **{key: measured[key] for key in ("greedy accuracy", *OPENING_COLUMNS)}})
        return {"rows": rows}

    key_path = results_dir / "eval" / f"r{rung}_base_reference_opening_{fingerprint(templates)}.json"
    return cached_measure(key_path, model_name, task, measure, tag="opening")["rows"]


def tie_break(row: dict) -> float:
    """The log-prob that separates candidates at equal strict accuracy: of the facts' tokens where the task marks facts
    (knowledge), of the whole answer otherwise (the skill tasks, whose fact log-prob is NaN)."""
    return row["val_answer_logprob"] if math.isnan(row["val_fact_logprob"]) else row["val_fact_logprob"]


def cached_measure(path: Path, model_path: str, task: Task, measure, tag: str = "answer log-prob") -> dict:
    """measure(model, tokenizer) on the model at model_path, cached at path under the fingerprint of its weights and
    of the validation questions (`tag` names the measurement in the skip message)."""
    key = fingerprint(weights_fingerprint(model_path), [i.id for i in task.eval_splits["val"]])
    if (cached := up_to_date(str(path), key, tag)) is None:
        cached = {"fingerprint": key, **measure(load_model(model_path).eval(), load_tokenizer(model_path))}
        write_json(path, cached)
    return cached


def reference_logprobs(results_dir: Path, rung: int, task: Task) -> list[dict]:
    """The base model's fact-token log-prob on the rung's validation answers, as the student (question alone: where
    every candidate starts) and as SDFT's teacher (the answer in its context, the recipe's template: the sharpest
    target the loss can distil on those tokens). Cached like a candidate's score."""
    recipe = TrainConfig(**{**SEARCH_BASE, **CANDIDATES[RECIPE]})
    roles = (("student (question only)", STUDENT), (f"teacher ({recipe.teacher_context} in context)",
                                                    recipe.teacher_context))

    def measure(model, tokenizer) -> dict:
        return {"rows": [{"rung": rung, "model": f"base, {label}",
                          **answer_logprobs(model, tokenizer, task.eval_splits["val"], context=context,
                                            template=recipe.teacher_template)} for label, context in roles]}

    return cached_measure(results_dir / "eval" / f"r{rung}_base_reference_logprob.json", recipe.model, task,
                           measure)["rows"]


def search(results_dir: Path, candidates: dict[str, dict] = CANDIDATES, rungs: tuple[Rung, ...] = RUNGS,
           controls: dict[str, dict] = CONTROLS, task_name: str = "knowledge",
           base_overrides: dict | None = None, probes: dict[str, dict] = BUDGET_PROBES,
           base: dict = SEARCH_BASE, opening_templates: tuple[str, ...] = ()) -> pd.DataFrame:
    """Successive halving on validation: strict accuracy first, then the mean log-probability of the validation
    answers' fact tokens (greedy accuracy stays at 0 until a whole multi-token fact is the argmax, so at short rungs
    the log-probability is what tells candidates apart; `tie_break`), then the order of `candidates`. `base`: the
    settings every candidate shares (`run_candidate`); opening_templates: if given, also measure how each trained
    model opens its answers, and how the base model does as the student and as the teacher under each of these
    templates (`reference_openings`; the skill search)."""
    task = load_task(task_name)
    alive = list(candidates)
    rows, base_rows = [], []
    for number, rung in enumerate(rungs, start=1):
        subset = article_subset(task, rung.articles)
        base_rows += reference_logprobs(results_dir, number, subset)
        if opening_templates:
            base_rows += reference_openings(results_dir, number, subset, list(opening_templates))
        scored = [run_candidate(results_dir, name, candidates[name], number, subset, base_overrides, base=base,
                                opening=bool(opening_templates)) for name in alive]
        reference_points = {**controls, **(probes if number == 1 else {})}
        rows += scored + [run_candidate(results_dir, name, values, number, subset, base_overrides, base=base,
                                        opening=bool(opening_templates))
                          for name, values in reference_points.items()]
        write_json(results_dir / "summary.json", rows)  # after every rung: a killed search shows what it has
        ranked = sorted(scored, key=lambda r: (-r["val_strict"], -tie_break(r), alive.index(r["candidate"])))
        alive = [r["candidate"] for r in ranked[: rung.keep]]
    table = pd.DataFrame(rows).drop(columns="config")
    table["chosen"] = [r["candidate"] == alive[0] and r["rung"] == len(rungs) for r in rows]
    table["control"] = [r["candidate"] in controls or r["candidate"] in probes for r in rows]
    reference = pd.DataFrame(base_rows)
    write_text(results_dir / "summary.md", table.to_markdown(index=False, floatfmt=".3f") + "\n\n"
               "Reference: how sure the base model is of the validation answers' tokens\n\n"
               + reference.to_markdown(index=False, floatfmt=".3f") + "\n")
    write_json(results_dir / "summary.json", rows)
    write_json(results_dir / "reference.json", base_rows)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.recipe_search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results/tiny/recipe_search")
    parser.add_argument("--list", action="store_true", help="print the candidates and rungs and stop")
    parser.add_argument("--lora", action="store_true", help="choose LoRA SDFT's learning rate on validation "
                        "(LORA_CANDIDATES) instead; results in <results-dir>_lora")
    parser.add_argument("--task", choices=["knowledge", TINY_SKILL], default="knowledge",
                        help=f"{TINY_SKILL}: search SKILL_CANDIDATES on the skill task instead; results in "
                        f"<results-dir>_{TINY_SKILL}")
    args = parser.parse_args(argv)
    if args.task == TINY_SKILL and args.list:
        for name, overrides in SKILL_CANDIDATES.items():
            print(f"{name}: {TrainConfig(**{**SKILL_SEARCH_BASE, **overrides})}")
        return
    if args.task == TINY_SKILL:
        print(search(Path(f"{args.results_dir}_{TINY_SKILL}"), SKILL_CANDIDATES, SKILL_RUNGS, SKILL_CONTROLS,
                     task_name=TINY_SKILL, probes={}, base=SKILL_SEARCH_BASE,
                     opening_templates=SKILL_REFERENCE_TEMPLATES)
              .to_markdown(index=False, floatfmt=".3f"))
        return
    if args.lora:
        print(search(Path(args.results_dir + "_lora"), LORA_CANDIDATES, LORA_RUNGS, {}, probes={})
              .to_markdown(index=False, floatfmt=".3f"))
        return
    if args.list:
        for name, overrides in CANDIDATES.items():
            print(f"{name}: {TrainConfig(**{**SEARCH_BASE, **overrides})}")
        runs = [len(CANDIDATES) + len(CONTROLS) + len(BUDGET_PROBES)] + [r.keep + len(CONTROLS) for r in RUNGS[:-1]]
        print(f"rungs: {RUNGS}; runs per rung: {runs}; total {sum(runs)} (≈ {math.ceil(sum(runs) * 5)} min here)")
        return
    print(search(Path(args.results_dir)).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
