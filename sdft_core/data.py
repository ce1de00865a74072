"""Training examples, tasks (training examples, evaluation items with answer keys, a scorer), and strict JSONL
reading: a bad row stops everything with the file, the row and the field."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class Example:
    """One demonstration: the task input x, the expert answer c, and optional privileged text for the teacher."""

    id: str
    prompt: str
    demonstration: str
    context: str | None = None


@dataclass(frozen=True)
class EvalItem:
    id: str
    prompt: str
    reference: dict
    """Task-specific answer key (JSON-serialisable), passed to the task's scorer."""
    context: str | None = None
    """Source text, for oracle-RAG evaluation (knowledge acquisition)."""
    demonstration: str | None = None
    """A correct answer, where the task has one per item (knowledge): lets a model be scored by how likely it finds
    the answer (sdft_core.eval.preflight.answer_logprobs), a finer measure than greedy accuracy."""


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    train: list[Example]
    eval_splits: dict[str, list[EvalItem]]
    """Items with answer keys per split; "train" (where present) holds the training questions' keys, for the
    pre-flight diagnostic's teacher ceiling and for checking what a model learned on its own training questions."""
    score: Callable[[str, dict], dict]
    max_new_tokens: int
    """Generation budget for evaluation answers and training rollouts on this task."""


class DatasetError(ValueError):
    """A dataset file is malformed. The message names the file, the 1-based row and the field."""

    def __init__(self, path: Path | str, row: int | None, field: str | None, problem: str):
        where = f"{path}" + (f", row {row}" if row is not None else "") + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}")
        self.path, self.row, self.field, self.problem = str(path), row, field, problem


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Read a JSONL file (gzip-compressed if it ends in .gz); every line must be a JSON object, so row numbers are
    line numbers."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, None, None, "file not found")
    rows = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for row_number, line in enumerate(handle, start=1):
            if not line.strip():
                raise DatasetError(path, row_number, None, "empty line")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(path, row_number, None, f"not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(path, row_number, None, f"expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    if not rows:
        raise DatasetError(path, None, None, "file has no rows")
    return rows


def require(path: Path | str, row_number: int, row: dict, field: str, kind: type | tuple[type, ...], non_empty=True):
    """Return row[field], checking presence, type and (for strings and lists) non-emptiness."""
    if field not in row:
        raise DatasetError(path, row_number, field, "missing field")
    value = row[field]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetError(path, row_number, field, f"expected {expected}, got {type(value).__name__}")
    if non_empty and isinstance(value, (str, list)) and not (value.strip() if isinstance(value, str) else value):
        raise DatasetError(path, row_number, field, "is empty")
    return value


def check_unique_ids(path: Path | str, rows: Iterable[dict]) -> None:
    seen: dict[str, int] = {}
    for row_number, row in enumerate(rows, start=1):
        identifier = row["id"]
        if identifier in seen:
            raise DatasetError(path, row_number, "id", f"duplicate id {identifier!r} (first at row {seen[identifier]})")
        seen[identifier] = row_number


def read_rows(path: Path | str, string_fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """read_jsonl, then every row must have the given non-empty string fields and a unique "id"."""
    rows = read_jsonl(path)
    for row_number, row in enumerate(rows, start=1):
        for name in string_fields:
            require(path, row_number, row, name, str)
    check_unique_ids(path, rows)
    return rows
