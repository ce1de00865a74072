"""The workshop notebook (notebooks/workshop_learning_facts, helpers in teaching/workshop.py) runs under
papermill at smoke sizes and writes real outputs: one answer row per fact, the three runs trained by the kit's loop,
the forgetting table and the figures. On the tiny random model (the mechanics, fast) and, marked slow, on the embedded
model."""

import json

import nbformat
import papermill
import pytest

from experiments.pipeline import NOTEBOOKS
from teaching import workshop

NOTEBOOK = NOTEBOOKS / "workshop_learning_facts.ipynb"
RUNS = ("SFT", "SDFT on-policy", "SDFT mixture")
SMOKE = {"num_facts": 2, "steps": 2, "rollout_tokens": 6, "answer_tokens": 6, "general_prompts": 1, "kl_prompts": 2,
         "general_tokens": 6}


def run_workshop(tmp_path, model: str) -> tuple[dict, nbformat.NotebookNode]:
    output = tmp_path / "workshop.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(output), parameters={
        **SMOKE, "results_dir": str(tmp_path / "results"), "model": model}, kernel_name="sdft-kit",
        cwd=str(NOTEBOOKS.parent), progress_bar=False)
    return json.loads((tmp_path / "results" / "workshop" / "summary.json").read_text()), nbformat.read(output, 4)


def check_outputs(summary: dict, notebook, tmp_path) -> None:
    facts = SMOKE["num_facts"]
    assert len(summary["answers"]) == facts  # one before/after row per fact
    assert len({row["question"] for row in summary["answers"]}) == facts and all(row["fact"] for row in
                                                                                   summary["answers"])
    for row in summary["answers"]:
        assert set(RUNS) <= set(row) and all(row[run][:1] in "✓✗" for run in ("base", *RUNS))
    assert set(summary["facts_known"]) == {"base", *RUNS}
    assert all(0 <= n <= facts for n in summary["facts_known"].values())
    assert summary["forgetting"]["base"]["KL to base, mean (nats)"] == pytest.approx(0.0, abs=1e-4)
    assert all(summary["forgetting"][run]["prompts"] == SMOKE["kl_prompts"] for run in RUNS)
    assert set(summary["train_seconds"]) == set(RUNS)
    assert summary["fact_tokens"] and all(0.0 <= row["SDFT mixture"] <= 1.0 for row in summary["fact_tokens"])
    scratch = tmp_path / "results" / "workshop"
    for label in RUNS:  # trained by the kit's loop: finished, SMOKE["steps"] optimizer steps
        folder = workshop.run_folder(scratch, label)
        assert json.loads((folder / "summary.json").read_text())["steps"] == SMOKE["steps"]
    mixture = [json.loads(line) for line in (workshop.run_folder(scratch, "SDFT mixture") / "metrics.jsonl")
               .read_text().splitlines()]
    assert mixture[0]["guided_fraction"] == 1.0  # the first step's rollouts are all guided
    for name in ("training", "fact_tokens"):
        assert (scratch / f"{name}.png").stat().st_size > 0
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2


def test_workshop_notebook_runs_on_the_tiny_model(tmp_path, tiny_model_dir):
    summary, notebook = run_workshop(tmp_path, tiny_model_dir)
    check_outputs(summary, notebook, tmp_path)


@pytest.mark.slow
def test_workshop_notebook_runs_on_the_embedded_model(tmp_path):
    summary, notebook = run_workshop(tmp_path, "embedded:smollm2-135m-instruct")
    check_outputs(summary, notebook, tmp_path)


def test_configs_differ_only_in_rollouts_and_method():
    from experiments.plans import MIXTURE_ROLLOUTS, TINY_KNOWLEDGE

    configs = workshop.workshop_configs(TINY_KNOWLEDGE["sdft"], MIXTURE_ROLLOUTS, TINY_KNOWLEDGE["sft"], 6, 20,
                                        sdft_learning_rate=3e-4, sft_learning_rate=1e-4, rollout_tokens=32)
    pure, mixture, sft = configs["SDFT on-policy"], configs["SDFT mixture"], configs["SFT"]
    assert (pure.guided_fraction, mixture.guided_fraction, mixture.guided_by) == (0.0, 1.0, "demonstration")
    assert {**pure.__dict__, **MIXTURE_ROLLOUTS} == mixture.__dict__
    assert (sft.method, sft.learning_rate, pure.learning_rate, pure.max_new_tokens) == ("sft", 1e-4, 3e-4, 32)
    assert all(c.batch_size == 6 and c.epochs == 20.0 for c in configs.values())  # 20 steps of all 6 facts
