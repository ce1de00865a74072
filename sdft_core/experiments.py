"""What each profile runs: the paper's figures and tables as a graph of notebook steps.

A step is one notebook run (train one model, evaluate one model, draw one figure). Steps are named by what they
produce, so a training run that several figures need ("knowledge_sft") is one step, trained once. `Plan` collects the
steps of a profile and refuses two different definitions under one name.

Profiles:
- "tiny": the embedded model on CPU, every figure and table at a size this machine finishes (README gives the time);
- "paper": Qwen2.5-7B-Instruct with the paper's hyperparameters (Tables 3 and 4), for GPU users with the paper's
  datasets built by data_prep (not run by the kit's own CI);
- "demo": the knowledge-acquisition table of the tiny profile (make demo);
- "smoke": the demo's steps on a tiny configuration (tests, CI).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Step:
    name: str
    notebook: str
    parameters: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()


class Plan:
    def __init__(self, results_dir: str):
        self.results_dir = results_dir
        self.steps: dict[str, Step] = {}

    def add(self, name: str, notebook: str, parameters: dict, after: tuple[str, ...] = ()) -> str:
        step = Step(name, notebook, {"results_dir": self.results_dir, **parameters}, tuple(after))
        if name in self.steps and self.steps[name] != step:
            raise ValueError(f"step {name!r} is defined twice with different parameters")
        self.steps[name] = step
        return name

    def model_dir(self, run: str) -> str:
        return "base" if run == "base" else f"{self.results_dir}/runs/{run}/model"

    def train(self, run: str, task: str, after: tuple[str, ...] = (), **parameters) -> str:
        return self.add(f"train_{run}", "train", {"task": task, "run_name": run, **parameters}, after)

    def evaluate(self, name: str, task: str, run: str, **parameters) -> str:
        after = () if run == "base" else (f"train_{run}",)
        return self.add(f"eval_{name}", "evaluate",
                        {"task": task, "name": name, "model_dir": self.model_dir(run), **parameters}, after)

    def restricted_to(self, targets: list[str]) -> list[Step]:
        """The steps needed for `targets`, in dependency order."""
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name not in ordered:
                for dependency in self.steps[name].after:
                    visit(dependency)
                ordered.append(name)

        for target in targets:
            visit(target)
        return [self.steps[name] for name in ordered]

    def all_steps(self) -> list[Step]:
        return self.restricted_to(list(self.steps))


# Knowledge acquisition on the embedded model. The hyperparameters are the best of the settings measured on this
# machine within the demo's time budget (README "The demo on this machine"): SFT memorises with lr 3e-4 over 4
# epochs; SDFT uses the per-token forward KL (the authors' code), which taught the 135M model more than the reverse KL.
TINY_KNOWLEDGE = {
    "sft": {"method": "sft", "learning_rate": 3e-4, "epochs": 4.0, "batch_size": 8, "micro_batch_size": 8},
    "sdft": {"method": "sdft", "learning_rate": 1.5e-4, "epochs": 4.0, "batch_size": 8, "micro_batch_size": 8,
             "max_new_tokens": 32, "direction": "forward", "teacher_kind": "ema", "ema_alpha": 0.01,
             "teacher_context": "context_and_demonstration"},
}
SMOKE_KNOWLEDGE = {
    "sft": {"method": "sft", "learning_rate": 1e-4, "epochs": 1.0, "batch_size": 2, "micro_batch_size": 1,
            "max_train_examples": 4},
    "sdft": {"method": "sdft", "learning_rate": 1e-4, "epochs": 1.0, "batch_size": 2, "micro_batch_size": 1,
             "max_train_examples": 4, "max_new_tokens": 8, "teacher_context": "context_and_demonstration"},
}


def knowledge_table(plan: Plan, runs: dict, evaluation: dict) -> str:
    """Paper Table 1's core on the knowledge task: base, SFT, SDFT with forgetting measures → table and figure."""
    plan.add("knowledge_data", "knowledge_data", {})
    names = ["base"]
    plan.evaluate("knowledge_base", "knowledge", "base", splits=["test", "ood"], **evaluation)
    for method, parameters in runs.items():
        plan.train(f"knowledge_{method}", "knowledge", after=("knowledge_data",), **parameters)
        plan.evaluate(f"knowledge_{method}", "knowledge", f"knowledge_{method}", splits=["test", "ood"],
                      **evaluation)
        names.append(method)
    return plan.add("knowledge_report", "knowledge_report", {"models": names},
                    tuple(f"eval_knowledge_{n}" for n in names))


def demo_plan(results_dir: str) -> list[Step]:
    plan = Plan(results_dir)
    return plan.restricted_to([knowledge_table(plan, TINY_KNOWLEDGE, {})])


def smoke_plan(results_dir: str) -> list[Step]:
    plan = Plan(results_dir)
    evaluation = {"max_items": 2, "max_general_prompts": 2, "max_new_tokens": 8}
    return plan.restricted_to([knowledge_table(plan, SMOKE_KNOWLEDGE, evaluation)])


PROFILES = {"demo": demo_plan, "smoke": smoke_plan}
DEFAULT_RESULTS = {"demo": "results/tiny", "smoke": "results/smoke"}
