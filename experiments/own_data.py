"""SFT and SDFT on your own data in one command: the pre-flight, both trainings, evaluation with forgetting, and the
base / SFT / SDFT table. docs/own_data.md is the user's page (file formats, scorers, presets, the Python API).

    python -m experiments.own_data --train-file my.jsonl --eval-file my_eval.jsonl --output-dir results/own/my_run \\
        [--model embedded:smollm2-135m-instruct] [--preset small_model] [--scorer contains] [--learning-rate 1e-4 ...]

The preset is the one that suits the model's size (sdft_core/config.py preset_for_size) unless --preset names one;
every TrainConfig field is a flag over it (as in experiments/train_run.py) and applies to both the SFT and the SDFT
run, which share the preset's optimisation budget. The output folder holds:

    own_data.json             what was run: files, scorer, preset and why, both training configs
    preflight.{md,json,...}   the pre-flight diagnostic on the training prompts (sdft_core/eval/preflight.py)
    runs/{sft,sdft}/          the two training runs (sdft_core/train.py documents their files)
    eval/{base,sft,sdft}.json every answer and score, and forgetting on general prompts (evaluate_model)
    comparison.{md,csv}       the table

A rerun skips finished work: a finished training run with the same configuration and data (train), an evaluation of
unchanged weights on the same items (evaluate_model), a pre-flight of the same model, data and settings. Every file
is written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.report import KNOWLEDGE_COLUMNS, save_table
from sdft_core.config import PRESETS, TrainConfig, preset_config, preset_for_size
from sdft_core.data import Task
from sdft_core.eval.evaluate import evaluate_model, up_to_date
from sdft_core.eval.preflight import run_preflight, save_preflight
from sdft_core.io import fingerprint, read_json, write_json
from sdft_core.model import BASE, EMBEDDED_MODEL, load_model, load_tokenizer, parameter_count, weights_fingerprint
from sdft_core.options import add_field_options
from sdft_core.prompts import encode, student_prompt_ids
from sdft_core.train import RunFolderInUse, train
from tasks.knowledge import load_general_prompts
from tasks.own_data import EVAL_SPLIT, load_own_task, resolve_scorer

METHODS = ("sft", "sdft")


@dataclass(frozen=True)
class OwnDataRun:
    """One own-data run, decided and checked before anything trains (plan_own_data), then run (execute)."""

    output_dir: Path
    record: dict
    """What own_data.json holds: the files, the scorer, the preset and why, the evaluated split."""
    task: Task
    configs: dict[str, TrainConfig]
    """The training run of each method ("sft", "sdft")."""
    split: str
    """The evaluated split: "eval" (the evaluation file) or, without one, "train" (the training prompts)."""
    preflight: bool
    preflight_examples: int
    max_eval_items: int
    general_prompts: list[str]
    batch_size: int
    overwrite: bool
    """Replace a training run the output folder holds for another configuration or data (train's overwrite)."""


def choose_preset(model: str, preset: str = "") -> tuple[str, str]:
    """The named preset, or the one that suits the model's size; and why, in words."""
    return (preset, "named by --preset") if preset else preset_for_size(parameter_count(model))


def _check_lengths(task: Task, config: TrainConfig, train_file: str) -> None:
    """A student prompt over max_prompt_tokens would stop training midway: stop now, naming the row. A demonstration
    longer than max_new_tokens is allowed (SFT trains on all of it) but rollouts and evaluated answers stop at the
    budget: say so."""
    tokenizer = load_tokenizer(config.model)
    longer = 0
    for row_number, example in enumerate(task.train, start=1):
        try:
            student_prompt_ids(tokenizer, example, config.max_prompt_tokens)
        except ValueError as err:
            raise ValueError(f"{train_file}, row {row_number}, field 'prompt': {err}") from None
        longer += len(encode(tokenizer, example.demonstration)) > config.max_new_tokens
    if longer:
        print(f"[own_data] warning: {longer} of {len(task.train)} demonstrations are longer than max_new_tokens="
              f"{config.max_new_tokens} tokens: rollouts and evaluated answers stop there; raise --max-new-tokens if "
              f"answers should be as long.")


def plan_own_data(train_file: str | Path, output_dir: str | Path, eval_file: str | Path | None = None,
                  scorer: str = "contains", model: str = EMBEDDED_MODEL, preset: str = "", config: dict | None = None,
                  preflight: bool = True, preflight_examples: int = 40, max_train_examples: int = 0,
                  max_eval_items: int = 0, max_general_prompts: int = 0, batch_size: int = 8,
                  overwrite: bool = False) -> OwnDataRun:
    """Read and check the files, choose the preset and build both training configs. Every problem with the data
    (the file, row and field), the scorer or the configuration raises ValueError here, before anything trains.

    config: TrainConfig fields over the preset, for both runs (not `method`: the runs are SFT and SDFT).
    preflight_examples: training prompts the pre-flight measures; max_train_examples, max_eval_items,
    max_general_prompts (forgetting): only the first N (0: all). overwrite: retrain into run folders that hold a
    run of another configuration or data (without it, train refuses them and says what differs)."""
    config = dict(config or {})
    if "method" in config:
        raise ValueError("config must not set 'method': the command trains both SFT and SDFT")
    if "model" in config:
        raise ValueError("give the model as `model`, not inside config")
    eval_file = eval_file or None  # the notebook's "" means none
    preset, why = choose_preset(model, preset)
    fields = {**config, "model": model, "extra": {"task": "own_data"}}
    configs = {method: preset_config(preset, **{**fields, "method": method}) for method in METHODS}
    print(f"[own_data] preset {preset}: {why}")
    task = load_own_task(train_file, eval_file, scorer, configs["sdft"].max_new_tokens,
                         train_keys=preflight or eval_file is None)
    if max_train_examples:  # the "train" split holds one item per training row, in the same order
        cut = {split: items[:max_train_examples] if split == "train" else items
               for split, items in task.eval_splits.items()}
        task = dataclasses.replace(task, train=task.train[:max_train_examples], eval_splits=cut)
    _check_lengths(task, configs["sdft"], str(train_file))
    split = EVAL_SPLIT if eval_file is not None else "train"
    if eval_file is None:
        print("[own_data] no evaluation file: the models are evaluated on the training prompts (what they learned, "
              "not how it generalises).")
    general = [row["prompt"] for row in load_general_prompts("eval")][: max_general_prompts or None]
    record = {"train_file": str(train_file), "eval_file": None if eval_file is None else str(eval_file),
              "scorer": scorer, "scorer_identity": resolve_scorer(scorer).identity, "task": task.name,
              "evaluated_split": split, "preset": preset, "preset_reason": why,
              "configs": {method: dataclasses.asdict(c) for method, c in configs.items()}}
    return OwnDataRun(Path(output_dir), record, task, configs, split, preflight, preflight_examples, max_eval_items,
                      general, batch_size, overwrite)


def _eval_dtype(config: TrainConfig) -> str:
    return "float32" if config.dtype == "float32" else "bfloat16"


def preflight_step(run: OwnDataRun) -> str:
    """The pre-flight of the base model on the training prompts under the SDFT run's template, rollout temperature
    and divergence; cached by model weights, data and settings. Returns its verdict."""
    config = run.configs["sdft"]
    stem = run.output_dir / "preflight"
    key = fingerprint(weights_fingerprint(config.model), run.record["scorer_identity"],
                      [dataclasses.asdict(e) for e in run.task.train],
                      [dataclasses.asdict(i) for i in run.task.eval_splits["train"]], run.preflight_examples,
                      config.teacher_template,
                      config.rollouts_per_prompt, config.temperature, config.max_new_tokens, config.seed,
                      dataclasses.asdict(config.divergence()))
    if (cached := up_to_date(f"{stem}.json", key, "preflight")) is not None:
        return cached["verdict"]
    model = load_model(config.model, _eval_dtype(config), config.device).eval()
    result = run_preflight(model, load_tokenizer(config.model), run.task, template=config.teacher_template,
                           max_examples=run.preflight_examples, rollouts_per_prompt=config.rollouts_per_prompt,
                           temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                           batch_size=run.batch_size, seed=config.seed, divergence=config.divergence())
    save_preflight(result, stem, f"Pre-flight on {run.record['train_file']}, {config.model}")
    # The fingerprint goes in last: a pre-flight killed before this line runs again.
    write_json(f"{stem}.json", {**read_json(f"{stem}.json"), "fingerprint": key})
    return result.verdict


def comparison_table(run: OwnDataRun, results: dict[str, dict]) -> pd.DataFrame:
    """One row per model: every boolean the scorer returns in % (its "correct" first), the mean answer length in
    tokens, and forgetting on general prompts (KL to base, top-1 agreement)."""
    rows = {}
    for label, result in results.items():
        scores = result[run.split]
        row = {f"{metric} (%)": 100 * value for metric, value in scores.items()
               if metric not in ("n", "mean_response_tokens")}
        row["answer tokens"] = scores["mean_response_tokens"]
        if "forgetting" in result:
            row.update({KNOWLEDGE_COLUMNS[k]: result["forgetting"][k] for k in ("kl_to_base", "top1_agreement")})
        rows[label] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = f"model ({run.split}: {results['base'][run.split]['n']} items)"
    return table


def execute(run: OwnDataRun) -> pd.DataFrame:
    """Pre-flight, SFT and SDFT training, evaluation of base / SFT / SDFT, and the table (printed and saved)."""
    write_json(run.output_dir / "own_data.json", run.record)
    if run.preflight:
        print(f"[own_data] pre-flight: {preflight_step(run)}")
    for method, config in run.configs.items():
        train(config, run.task.train, run.output_dir / "runs" / method, overwrite=run.overwrite)
    sdft = run.configs["sdft"]
    results = {}
    for label in ("base", *METHODS):
        model_dir = BASE if label == "base" else str(run.output_dir / "runs" / label / "model")
        results[label] = evaluate_model(model_dir, run.task, [run.split], run.general_prompts,
                                        str(run.output_dir / "eval" / f"{label}.json"), base_model_name=sdft.model,
                                        max_items=run.max_eval_items, batch_size=run.batch_size, seed=sdft.seed,
                                        max_new_tokens=sdft.max_new_tokens, dtype=_eval_dtype(sdft),
                                        device=sdft.device)
    table = comparison_table(run, results)
    save_table(table, run.output_dir / "comparison")
    print(table.round(2).to_markdown())
    return table


def run_own_data(train_file: str | Path, output_dir: str | Path, eval_file: str | Path | None = None,
                 **options) -> pd.DataFrame:
    """plan_own_data, then execute: the whole run on the user's files; returns the comparison table."""
    return execute(plan_own_data(train_file, output_dir, eval_file, **options))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.own_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-file", required=True, help="JSONL: prompt, demonstration, optional context and id")
    parser.add_argument("--eval-file", help="JSONL: prompt and the scorer's answer key (without it: the training "
                        "prompts are evaluated)")
    parser.add_argument("--output-dir", required=True, help="where everything is written (a rerun skips what is done)")
    parser.add_argument("--scorer", default="contains", help="exact, contains, facts, json_fields, or your own "
                        "function as pkg.module:function (tasks/own_data.py documents each and its answer key)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="default: the one that suits the model's size")
    parser.add_argument("--no-preflight", dest="preflight", action="store_false",
                        help="skip the pre-flight (then training rows need no answer key)")
    parser.add_argument("--preflight-examples", type=int, default=40, help="training prompts the pre-flight measures")
    parser.add_argument("--max-train-examples", type=int, default=0, help="use only the first N training rows (0: all)")
    parser.add_argument("--max-eval-items", type=int, default=0, help="evaluate only the first N items (0: all)")
    parser.add_argument("--max-general-prompts", type=int, default=0,
                        help="general prompts that measure forgetting (0: all)")
    parser.add_argument("--eval-batch-size", type=int, default=8, help="prompts per generation batch")
    parser.add_argument("--overwrite", action="store_true", help="retrain into run folders that hold a run of "
                        "another configuration or data (without it, the command stops and says what differs)")
    add_field_options(parser, TrainConfig, skip=("method", "extra"), given_only=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if f.name not in ("method", "extra", "model") and getattr(args, f.name) is not None}
    try:
        run = plan_own_data(args.train_file, args.output_dir, args.eval_file, scorer=args.scorer,
                            model=args.model or EMBEDDED_MODEL, preset=args.preset or "", config=given,
                            preflight=args.preflight, preflight_examples=args.preflight_examples,
                            max_train_examples=args.max_train_examples, max_eval_items=args.max_eval_items,
                            max_general_prompts=args.max_general_prompts, batch_size=args.eval_batch_size,
                            overwrite=args.overwrite)
    except ValueError as err:  # bad data, scorer or configuration: the message says where; no traceback needed
        raise SystemExit(f"own_data: {err}") from None
    try:
        execute(run)
    except RunFolderInUse as err:  # a rerun with other flags or data into the same folder: say what differs
        raise SystemExit(f"own_data: {err} Here: --overwrite.") from None


if __name__ == "__main__":
    sys.exit(main())
