"""Paper B.1's model selection: the candidate with the best validation score, retrained with every seed and tested.
Orchestration over training, evaluation and the prior-capabilities suite, so it sits above all three."""

from __future__ import annotations

from pathlib import Path

from sdft_core.config import TrainConfig
from sdft_core.evaluate import evaluate_model
from sdft_core.experiments import seeded
from sdft_core.io import read_json, write_json
from sdft_core.model import EMBEDDED_MODEL
from sdft_core.prior_capabilities import evaluate_prior_capabilities
from sdft_core.train import train


def select_best(results_dir: str, task, name: str, candidates: list[str], val_split: str, test_splits: list[str],
                general_prompts: list[str], prior: dict | None = None, base_model_name: str = EMBEDDED_MODEL,
                seeds: tuple[int, ...] = (0,), **evaluation) -> dict:
    """Paper B.1: "We report test results for the model checkpoint that achieved the best validation performance".
    Reads eval/<candidate>_val.json for every candidate run (trained with seed 0), picks the best validation
    accuracy (ties: the first), trains the chosen configuration again with each other seed of `seeds` (B.2: results
    are means over seeds) as runs/<best>_seed<s>, and evaluates every seed on the test splits as
    eval/<name>[_seed<s>].json and, if `prior` is given, its prior capabilities as prior/<name>[_seed<s>].json.
    The choice and every validation score go to best/<name>.json."""
    results = Path(results_dir)
    scores = {run: read_json(results / "eval" / f"{run}_val.json")[val_split]["correct"] for run in candidates}
    best = max(candidates, key=lambda run: scores[run])
    chosen = read_json(results / "runs" / best / "config.json")
    for seed in seeds:
        run_dir = results / "runs" / seeded(best, seed)
        if seed != 0:
            config = TrainConfig(**{**chosen["config"], "seed": seed})
            train(config, task.train[: chosen["num_examples"]], run_dir)
        evaluate_model(str(run_dir / "model"), task, test_splits, general_prompts,
                       str(results / "eval" / f"{seeded(name, seed)}.json"), base_model_name=base_model_name,
                       **evaluation)
        if prior is not None:
            evaluate_prior_capabilities(str(run_dir / "model"), results / "prior" / f"{seeded(name, seed)}.json",
                                        **prior)
    choice = {"name": name, "best": best, "val_split": val_split, "val_scores": scores, "seeds": list(seeds)}
    write_json(results / "best" / f"{name}.json", choice)
    return choice
