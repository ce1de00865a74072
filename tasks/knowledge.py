"""The embedded knowledge-acquisition task: invented 2025–2026 disasters, Q&A about them, indirect (OOD) questions.

Files (tasks/embedded/knowledge/): articles.jsonl, train.jsonl, val.jsonl, test.jsonl, ood.jsonl.
Every file is validated before anything trains: a bad row stops with the file, the row and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdft_core.data import DatasetError, Example, check_unique_ids, read_jsonl, require

KNOWLEDGE_DIR = Path(__file__).parent / "embedded" / "knowledge"
GENERAL_PROMPTS = Path(__file__).parent / "embedded" / "general_prompts.jsonl"
SPLITS = ("train", "val", "test", "ood")


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    id: str
    article_id: str
    question: str
    answer: str
    facts: list[list[str]]
    wrong: list[str]


def load_articles(directory: Path = KNOWLEDGE_DIR) -> dict[str, Article]:
    path = directory / "articles.jsonl"
    rows = read_jsonl(path)
    articles = {}
    for number, row in enumerate(rows, start=1):
        fields = {name: require(path, number, row, name, str) for name in ("id", "title", "text")}
        articles[fields["id"]] = Article(**fields)
    check_unique_ids(path, rows)
    return articles


def load_questions(split: str, directory: Path = KNOWLEDGE_DIR, articles: dict[str, Article] | None = None
                   ) -> list[Question]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    articles = load_articles(directory) if articles is None else articles
    path = directory / f"{split}.jsonl"
    rows = read_jsonl(path)
    questions = []
    for number, row in enumerate(rows, start=1):
        fields = {name: require(path, number, row, name, str) for name in ("id", "article_id", "question", "answer")}
        if fields["article_id"] not in articles:
            raise DatasetError(path, number, "article_id", f"unknown article {fields['article_id']!r}")
        facts = require(path, number, row, "facts", list)
        for position, aliases in enumerate(facts):
            if not isinstance(aliases, list) or not aliases or not all(
                    isinstance(a, str) and a.strip() for a in aliases):
                raise DatasetError(path, number, "facts",
                                   f"fact {position} must be a non-empty list of non-empty strings")
        wrong = require(path, number, row, "wrong", list, non_empty=False)
        if not all(isinstance(w, str) and w.strip() for w in wrong):
            raise DatasetError(path, number, "wrong", "must be a list of non-empty strings")
        questions.append(Question(**fields, facts=facts, wrong=wrong))
    check_unique_ids(path, rows)
    return questions


def training_examples(questions: list[Question], articles: dict[str, Article]) -> list[Example]:
    """Student sees the question; the teacher may also see the source article (paper A.2)."""
    return [Example(q.id, q.question, q.answer, articles[q.article_id].text) for q in questions]


def load_general_prompts(split: str, path: Path = GENERAL_PROMPTS) -> list[dict]:
    """General-purpose prompts unrelated to the task: "eval" to measure forgetting, "train" for re-invocation."""
    rows = read_jsonl(path)
    for number, row in enumerate(rows, start=1):
        require(path, number, row, "id", str)
        require(path, number, row, "prompt", str)
        if require(path, number, row, "split", str) not in ("train", "eval"):
            raise DatasetError(path, number, "split", f"must be 'train' or 'eval', got {row['split']!r}")
    check_unique_ids(path, rows)
    return [row for row in rows if row["split"] == split]
