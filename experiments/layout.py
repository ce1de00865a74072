"""Where results live under a results folder, and how runs and results are named. Modules and notebooks ask here
instead of spelling paths:

    runs/<run>/          one training run (sdft_core/train.py documents its files); runs/<run>/model its weights
    eval/<name>.json     an evaluation (evaluate.evaluate_model)
    prior/<name>.json    prior capabilities (prior_capabilities.evaluate_prior_capabilities)
    passk/<name>.json    pass@k counts (evaluate.pass_at_k_counts)
    best/<name>.json     a model selection (selection.select_best)

A run, or a result of a run, trained with seed s > 0 carries the suffix _seed<s>: seed 0 keeps the plain name. The
untrained base model is the run sdft_core.model.BASE, and its "model folder" is BASE too (model_to_load resolves it)."""

from __future__ import annotations

from pathlib import Path

RESULT_KINDS = ("eval", "prior", "passk", "best")


def seeded(name: str, seed: int) -> str:
    """The name of a run or a result for one training seed."""
    return name if seed == 0 else f"{name}_seed{seed}"


def sequential_run(method: str, stage: int, task: str) -> str:
    """Fig. 3: the run of `method` after its `stage`-th task (`task`) of sequential training."""
    return f"seq_{method}_{stage}_{task}"


def sequential_eval(method: str, stage: int, task: str) -> str:
    """Fig. 3: the evaluation on `task` of the model after `stage` stages of sequential training."""
    return f"seq_{method}_{stage}_on_{task}"


def run_dir(results_dir: str | Path, run: str) -> Path:
    return Path(results_dir) / "runs" / run


def model_dir(results_dir: str | Path, run: str) -> Path:
    return run_dir(results_dir, run) / "model"


def result_path(results_dir: str | Path, kind: str, name: str) -> Path:
    if kind not in RESULT_KINDS:
        raise ValueError(f"result kind must be one of {RESULT_KINDS}, got {kind!r}")
    return Path(results_dir) / kind / f"{name}.json"
