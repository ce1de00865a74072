"""A task from the user's own files: a JSONL training file, an optional JSONL evaluation file, and a scorer named
without code (or a dotted path to the user's own function). The result is the registry's Task, so training, the
pre-flight and evaluation take it as they take an embedded task. docs/own_data.md is the user's page.

Training file, one JSON object per line:
  prompt         the task input the student sees (non-empty string)
  demonstration  a correct answer (non-empty string): SFT's target, the SDFT teacher's privileged example
  context        optional privileged text for the teacher (a source document)
  id             optional unique string (default "row<line number>")
  + optionally the scorer's answer-key fields (below): the pre-flight scores the teacher on the training prompts.
    Where a row has none, "exact", "contains" and a custom scorer take the demonstration as the key, and
    "json_fields" the demonstration's JSON object; "facts" needs them written.

Evaluation file, one JSON object per line: `prompt`, optional `id`, and the scorer's answer-key fields:
  exact        `answer`: a string or a list of accepted strings; correct when the whole response equals one of them
               after case folding and collapsing whitespace
  contains     `answer`: a string or a list of accepted strings; correct when the response contains one of them
               (case folded, whitespace collapsed)
  facts        `facts`: a list of facts, each a string or a list of aliases; optional `wrong`: strings that mark a
               wrong answer. The kit's fact matcher (sdft_core/eval/fact_matcher.py, the knowledge task's judge):
               "correct" is its strict accuracy (every fact, no wrong string), "lenient" beside it (at least one
               fact, no wrong string)
  json_fields  `fields`: a JSON object; correct when the first JSON object in the response has every one of these
               keys with a matching value (tasks/skills.py values_match: strings by case and surrounding whitespace,
               numbers by value); keys not named are ignored. "valid_json": the response holds a JSON object at all
  pkg.mod:fn   `reference`: any JSON value; the user's function fn(response, reference) returns a bool or a dict of
               bools with "correct" (further bools, e.g. "lenient", are reported beside it)

Every problem stops before anything trains, with the file, the row (its line number) and the field (DatasetError).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sdft_core.data import DatasetError, EvalItem, Example, Task, read_jsonl, require
from sdft_core.eval.fact_matcher import score_facts
from sdft_core.io import fingerprint
from tasks.skills import first_json_object, values_match

EVAL_SPLIT = "eval"  # the evaluation file's split; "train" holds the training prompts' answer keys


def _folded(text: str) -> str:
    return " ".join(text.casefold().split())


def _score_exact(response: str, reference: dict) -> dict:
    return {"correct": any(_folded(response) == _folded(answer) for answer in reference["answer"])}


def _score_contains(response: str, reference: dict) -> dict:
    return {"correct": any(_folded(answer) in _folded(response) for answer in reference["answer"])}


def _score_facts(response: str, reference: dict) -> dict:
    result = score_facts(response, reference["facts"], reference["wrong"])
    return {"correct": result.strict, "lenient": result.lenient}


def _score_json_fields(response: str, reference: dict) -> dict:
    found = first_json_object(response)
    expected = reference["fields"]
    return {"correct": found is not None and all(key in found and values_match(found[key], value)
                                                 for key, value in expected.items()),
            "valid_json": found is not None}


def _strings(path: Path, row_number: int, row: dict, field: str) -> list[str]:
    """A non-empty string or a non-empty list of non-empty strings, as a list."""
    value = require(path, row_number, row, field, (str, list))
    values = [value] if isinstance(value, str) else value
    for number, item in enumerate(values, start=1):
        if not isinstance(item, str) or not item.strip():
            raise DatasetError(path, row_number, field, f"item {number} must be a non-empty string, got {item!r}")
    return values


def _answer_key(path: Path, row_number: int, row: dict) -> dict:
    return {"answer": _strings(path, row_number, row, "answer")}


def _facts_key(path: Path, row_number: int, row: dict) -> dict:
    facts = require(path, row_number, row, "facts", list)
    aliases = []
    for number, fact in enumerate(facts, start=1):
        names = [fact] if isinstance(fact, str) else fact
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise DatasetError(path, row_number, "facts", f"fact {number} must be a non-empty string or a non-empty "
                                                          f"list of non-empty strings (its aliases), got {fact!r}")
        aliases.append(names)
    wrong = _strings(path, row_number, row, "wrong") if "wrong" in row else []
    return {"facts": aliases, "wrong": wrong}


def _fields_key(path: Path, row_number: int, row: dict) -> dict:
    fields = require(path, row_number, row, "fields", dict)
    if not fields:  # no field to compare: every JSON object would count as correct
        raise DatasetError(path, row_number, "fields", "is empty")
    return {"fields": fields}


def _fields_of(demonstration: str) -> dict | None:
    found = first_json_object(demonstration)
    return None if found is None else {"fields": found}


def _reference_key(path: Path, row_number: int, row: dict) -> dict:
    """A user's function reads any JSON value; it is wrapped because Task scorers take a dict."""
    if "reference" not in row:
        raise DatasetError(path, row_number, "reference", "missing field")
    return {"reference": row["reference"]}


@dataclass(frozen=True)
class Scorer:
    """A scorer a user names: the answer-key fields it reads from a row, how it checks them, and how it scores."""

    name: str
    fields: tuple[str, ...]
    """The row fields that make up the answer key (the first is required, the others optional)."""
    read_key: Callable[[Path, int, dict], dict]
    """The row's answer key, checked; a problem raises DatasetError with the file, row and field."""
    score: Callable[[str, dict], dict]
    """score(response, answer key) -> dict of bools with "correct" (the Task's scorer)."""
    identity: str
    """What cached evaluations are keyed by besides the data: the name, and for a user's function its source."""
    from_demonstration: Callable[[str], dict | None] | None
    """The answer-key fields taken from a demonstration (a correct answer), for training rows without a key; None
    (or a None result): the key must be written."""

    def training_key(self, path: Path, row_number: int, row: dict) -> dict:
        """A training row's answer key: its own, else the one its demonstration gives."""
        if self.fields[0] in row or self.from_demonstration is None:
            return self.read_key(path, row_number, row)
        taken = self.from_demonstration(row["demonstration"])
        if taken is None:
            raise DatasetError(path, row_number, self.fields[0], "missing field, and the demonstration gives none")
        return self.read_key(path, row_number, {**row, **taken})


BUILT_IN: dict[str, Scorer] = {
    "exact": Scorer("exact", ("answer",), _answer_key, _score_exact, "exact", lambda text: {"answer": text}),
    "contains": Scorer("contains", ("answer",), _answer_key, _score_contains, "contains",
                       lambda text: {"answer": text}),
    "facts": Scorer("facts", ("facts", "wrong"), _facts_key, _score_facts, "facts", None),
    "json_fields": Scorer("json_fields", ("fields",), _fields_key, _score_json_fields, "json_fields", _fields_of),
}


def _as_result(name: str, value: Any) -> dict:
    """A user's function's return value as the Task's dict of bools."""
    if isinstance(value, bool):
        return {"correct": value}
    if isinstance(value, dict) and isinstance(value.get("correct"), bool):
        return value
    raise TypeError(f"scorer {name} must return a bool or a dict with a bool 'correct', got {value!r}")


def _custom(name: str) -> Scorer:
    """The user's function `pkg.module:function`, called as function(response, reference)."""
    module_name, _, function_name = name.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"scorer {name!r}: cannot import it ({err})") from None
    if not callable(function):
        raise ValueError(f"scorer {name!r} is not a function")
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # defined without a source file: its name stands for it
        source = ""
    return Scorer(name, ("reference",), _reference_key,
                  lambda response, key: _as_result(name, function(response, key["reference"])),
                  f"{name}:{fingerprint(source)}", lambda text: {"reference": text})


# Every scorer's answer-key fields: a file may carry the keys of several scorers, to be scored either way.
KEY_FIELDS = {"answer", "facts", "wrong", "fields", "reference"}


def resolve_scorer(name: str) -> Scorer:
    """A built-in scorer by name, or the user's function as `pkg.module:function`."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if ":" in name:
        return _custom(name)
    raise ValueError(f"unknown scorer {name!r}: choose one of {sorted(BUILT_IN)} or name your own function as "
                     f"pkg.module:function")


def _identifier(path: Path, row_number: int, row: dict) -> str:
    return require(path, row_number, row, "id", str) if "id" in row else f"row{row_number}"


def _check_fields(path: Path, row_number: int, row: dict, allowed: set[str]) -> None:
    """A misspelt field ("demonstation", "contxt") would be silently ignored: refuse it."""
    for field in row:
        if field not in allowed:
            raise DatasetError(path, row_number, field, f"unknown field; expected one of {sorted(allowed)}")


def _check_unique(path: Path, identifiers: list[str]) -> None:
    seen: dict[str, int] = {}
    for row_number, identifier in enumerate(identifiers, start=1):
        if identifier in seen:
            raise DatasetError(path, row_number, "id", f"duplicate id {identifier!r} (first at row {seen[identifier]})")
        seen[identifier] = row_number


def _check_custom_key(scorer: Scorer, path: Path, row_number: int, key: dict) -> None:
    """Call the user's function once on an empty response, so that a key it cannot read stops before training."""
    if scorer.name in BUILT_IN:
        return
    try:
        scorer.score("", key)
    except Exception as err:  # whatever the user's function raises, name the row that caused it
        raise DatasetError(path, row_number, "reference", f"scorer {scorer.name} fails on it: {err!r}") from None


def read_training_file(path: Path | str, scorer: Scorer, keys: bool) -> tuple[list[Example], list[EvalItem]]:
    """The training examples and, when `keys`, their answer keys (as "train" evaluation items)."""
    path = Path(path)
    rows = read_jsonl(path)
    allowed = {"id", "prompt", "demonstration", "context", *KEY_FIELDS}
    examples, items = [], []
    for row_number, row in enumerate(rows, start=1):
        _check_fields(path, row_number, row, allowed)
        identifier = _identifier(path, row_number, row)
        prompt = require(path, row_number, row, "prompt", str)
        demonstration = require(path, row_number, row, "demonstration", str)
        context = require(path, row_number, row, "context", str) if "context" in row else None
        examples.append(Example(identifier, prompt, demonstration, context))
        if keys:
            key = scorer.training_key(path, row_number, row)
            _check_custom_key(scorer, path, row_number, key)
            items.append(EvalItem(identifier, prompt, key, context, demonstration))
    _check_unique(path, [e.id for e in examples])
    return examples, items


def read_evaluation_file(path: Path | str, scorer: Scorer) -> list[EvalItem]:
    path = Path(path)
    rows = read_jsonl(path)
    allowed = {"id", "prompt", *KEY_FIELDS}
    items = []
    for row_number, row in enumerate(rows, start=1):
        _check_fields(path, row_number, row, allowed)
        identifier = _identifier(path, row_number, row)
        prompt = require(path, row_number, row, "prompt", str)
        key = scorer.read_key(path, row_number, row)
        _check_custom_key(scorer, path, row_number, key)
        items.append(EvalItem(identifier, prompt, key))
    _check_unique(path, [i.id for i in items])
    return items


def load_own_task(train_file: Path | str, eval_file: Path | str | None = None, scorer: str = "contains",
                  max_new_tokens: int = 48, train_keys: bool = True) -> Task:
    """The Task of the user's files. Its evaluation splits: "eval" (the evaluation file, if given) and "train" (the
    training prompts' answer keys, if `train_keys`: the pre-flight needs them, and without an evaluation file they
    are what is evaluated). max_new_tokens: the budget of evaluated answers. The task's name fingerprints the scorer
    and the answer keys of the evaluated split (evaluate_model's cache is keyed by it and the items' ids), so a
    cached evaluation is never reused for other keys or another scorer, and is kept when only training rows change."""
    chosen = resolve_scorer(scorer)
    examples, train_items = read_training_file(train_file, chosen, train_keys)
    splits = {"train": train_items} if train_keys else {}
    if eval_file is not None:
        splits[EVAL_SPLIT] = read_evaluation_file(eval_file, chosen)
    if not splits:
        raise ValueError("nothing to evaluate: give an evaluation file, or let the training rows carry answer keys")
    evaluated = splits[EVAL_SPLIT if eval_file is not None else "train"]
    keys = [(item.id, item.prompt, item.reference) for item in evaluated]
    source = f"{train_file}, evaluated on {eval_file}" if eval_file is not None else str(train_file)
    return Task(f"own_data_{fingerprint(chosen.identity, keys)}", f"Own data: {source}, scorer {chosen.name}",
                examples, splits, chosen.score, max_new_tokens)
