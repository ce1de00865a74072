"""Paper B.1's model selection: the candidate with the best validation score, retrained with every seed and tested.
Orchestration over training, evaluation and the prior-capabilities suite, so it sits above all three."""

from __future__ import annotations

from pathlib import Path

from experiments.launch import train_step
from experiments.layout import result_path, run_dir, seeded
from sdft_core.config import TrainConfig
from sdft_core.eval.evaluate import evaluate_model
from sdft_core.eval.prior_capabilities import evaluate_prior_capabilities
from sdft_core.io import read_json, write_json
from sdft_core.model import EMBEDDED_MODEL


def select_best(results_dir: str, task, name: str, candidates: list[str], val_split: str, test_splits: list[str],
                general_prompts: list[str], prior: dict | None = None, base_model_name: str = EMBEDDED_MODEL,
                seeds: tuple[int, ...] = (0,), overwrite: bool = False, **evaluation) -> dict:
    """Paper B.1: "We report test results for the model checkpoint that achieved the best validation performance".
    Reads eval/<candidate>_val.json for every candidate run (trained with seed 0), picks the best validation
    accuracy (ties: the first), trains the chosen configuration again with each other seed of `seeds` (B.2: results
    are means over seeds) as runs/<best>_seed<s>, and evaluates every seed on the test splits as
    eval/<name>[_seed<s>].json and, if `prior` is given, its prior capabilities as prior/<name>[_seed<s>].json.
    The choice and every validation score go to best/<name>.json. overwrite: retrain a seed's run folder that holds
    another run (the pipeline's choice after a change; sdft_core.train.train refuses it otherwise)."""
    results = Path(results_dir)
    scores = {run: read_json(result_path(results, "eval", f"{run}_val"))[val_split]["correct"] for run in candidates}
    best = max(candidates, key=lambda run: scores[run])
    chosen = read_json(run_dir(results, best) / "config.json")
    for seed in seeds:
        seed_run = run_dir(results, seeded(best, seed))
        if seed != 0:  # where the candidate trained: in this process or through accelerate launch
            config = TrainConfig(**{**chosen["config"], "seed": seed})
            train_step(config, task, chosen["num_examples"], seed_run, chosen["processes"], overwrite=overwrite)
        evaluate_model(str(seed_run / "model"), task, test_splits, general_prompts,
                       str(result_path(results, "eval", seeded(name, seed))), base_model_name=base_model_name,
                       **evaluation)
        if prior is not None:
            evaluate_prior_capabilities(str(seed_run / "model"), result_path(results, "prior", seeded(name, seed)),
                                        **prior)
    choice = {"name": name, "best": best, "val_split": val_split, "val_scores": scores, "seeds": list(seeds)}
    write_json(result_path(results, "best", name), choice)
    return choice
