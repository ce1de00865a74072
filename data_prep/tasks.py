"""The task registry: every embedded task exposes the same shape, so notebooks and the training loop are generic.

A task has training examples (student prompt, demonstration, optional privileged context), evaluation splits of
items with a task-specific answer key, and a deterministic scorer `score(response, reference) -> dict of bools`
whose "correct" entry is the task's accuracy (other entries, e.g. knowledge's "lenient", are reported beside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sdft_core.data import Example


@dataclass(frozen=True)
class EvalItem:
    id: str
    prompt: str
    reference: dict
    """Task-specific answer key (JSON-serialisable), passed to the task's scorer."""
    context: str | None = None
    """Source text, for oracle-RAG evaluation (knowledge acquisition)."""


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    train: list[Example]
    eval_splits: dict[str, list[EvalItem]]
    score: Callable[[str, dict], dict]
    max_new_tokens: int
    """Generation budget for evaluation answers and training rollouts on this task."""


def _knowledge() -> Task:
    from data_prep import knowledge
    from sdft_core.scoring import score_facts

    articles = knowledge.load_articles()

    def items(split: str) -> list[EvalItem]:
        return [EvalItem(q.id, q.question, {"facts": q.facts, "wrong": q.wrong}, articles[q.article_id].text)
                for q in knowledge.load_questions(split, articles=articles)]

    def score(response: str, reference: dict) -> dict:
        result = score_facts(response, reference["facts"], reference["wrong"])
        return {"correct": result.strict, "strict": result.strict, "lenient": result.lenient}

    return Task("knowledge", "Knowledge acquisition: invented 2025-2026 disasters (paper §4, Table 1)",
                knowledge.training_examples(knowledge.load_questions("train", articles=articles), articles),
                {split: items(split) for split in ("val", "test", "ood")}, score, max_new_tokens=48)


def _skill(name: str) -> Task:
    from data_prep import skills

    load, score, description, max_new_tokens = {
        "tool_use": (skills.load_tool_use, skills.score_tool_call,
                     "Tool use: invented APIs in ToolAlpaca's format, one call per request (paper §4, B.3)", 64),
        "extraction": (skills.load_extraction, skills.score_extraction,
                       "Extraction: booking messages to a fixed JSON schema learned from demonstrations", 56),
    }[name]

    def items(split: str) -> list[EvalItem]:
        return [EvalItem(row.id, row.prompt, row.reference) for row in load(split)]

    return Task(name, description, skills.training_examples(load("train")),
                {split: items(split) for split in ("val", "test")}, score, max_new_tokens=max_new_tokens)


TASKS: dict[str, Callable[[], Task]] = {"knowledge": _knowledge,
                                        "tool_use": lambda: _skill("tool_use"),
                                        "extraction": lambda: _skill("extraction")}


def load_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name]()
