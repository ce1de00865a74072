"""The embedded skill-learning tasks (paper §4 "Skill Learning"): `tool_use` (ToolAlpaca-style tool calls, paper B.3)
and `extraction` (booking messages to a fixed JSON schema the prompt never states).

Files: tasks/embedded/<task>/{train,val,test}.jsonl, written by `python -m data_prep.generate_skills`. Every row
has `id`, `prompt`, `demonstration` and `reference` (the answer key the scorer compares against); the loaders check
each row, and that its demonstration scores correct against its reference, before anything trains: a bad row stops
with the file, the row and the field (DatasetError).

Both scorers are exact and deterministic, and compare JSON values the same way (`values_match`): strings after
case folding and trimming surrounding whitespace, numbers by value (2 == 2.0), booleans and null exactly, objects
key by key (the same keys, in any order), lists item by item. A string never equals a number ("2" != 2): a tool
call with the wrong JSON type is a wrong call.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdft_core.data import DatasetError, Example, check_unique_ids, read_jsonl, require

EMBEDDED = Path(__file__).parent / "embedded"
TOOL_USE_DIR = EMBEDDED / "tool_use"
EXTRACTION_DIR = EMBEDDED / "extraction"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SkillRow:
    id: str
    prompt: str
    demonstration: str
    reference: dict


# --------------------------------------------------------------------------------------------------------------------
# Comparing JSON values.

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def values_match(got: Any, expected: Any) -> bool:
    """JSON equality up to string case and surrounding whitespace, numeric type (int vs float) and key order."""
    if isinstance(expected, str):
        return isinstance(got, str) and got.strip().casefold() == expected.strip().casefold()
    if _is_number(expected):
        return _is_number(got) and got == expected
    if isinstance(expected, bool) or expected is None:
        return got is expected
    if isinstance(expected, dict):
        return isinstance(got, dict) and got.keys() == expected.keys() and all(
            values_match(got[key], expected[key]) for key in expected)
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(
            values_match(g, e) for g, e in zip(got, expected))
    raise TypeError(f"not a JSON value: {expected!r}")


_DECODER = json.JSONDecoder()


def first_json_object(text: str) -> dict | None:
    """The first `{...}` in `text` that parses as a JSON object (text around it is ignored), or None."""
    for match in re.finditer(r"\{", text):
        try:
            value, _ = _DECODER.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


# --------------------------------------------------------------------------------------------------------------------
# Tool use.

# An "Action: <name>" line followed (on the next non-blank line) by "Action Input:". "Action Input:" itself does not
# match "Action:", so the name can never be taken from the input line.
_CALL_HEADER = re.compile(r"Action:[ \t]*(?P<action>[^\n]*?)[ \t]*\r?\n\s*Action Input:[ \t]*")
_FENCE = re.compile(r"```(?:json)?[ \t]*\n?")


@dataclass(frozen=True)
class ToolCall:
    """One `Action:` / `Action Input:` pair of a response."""

    action: str
    input_text: str
    """The input as written: the JSON value when one parses (code fence removed), else the rest of its line."""
    value: Any = None
    """The parsed JSON value of the input (any JSON type); meaningful only when `valid_json`."""
    valid_json: bool = False


def parse_tool_calls(response: str) -> list[ToolCall]:
    """Every `Action:` / `Action Input:` pair in `response`, in order. Text before, between and after the pairs (a
    thinking process, `Observation:` lines, a final answer) is ignored; an input may sit in a ``` code fence. An
    input that is not JSON is kept as text (valid_json False), so a broken call still counts as a call."""
    headers = list(_CALL_HEADER.finditer(response))
    calls = []
    for position, header in enumerate(headers):
        end = headers[position + 1].start() if position + 1 < len(headers) else len(response)
        rest = response[header.end():end].lstrip()
        fence = _FENCE.match(rest)
        if fence:
            rest = rest[fence.end():].lstrip()
        try:
            value, length = _DECODER.raw_decode(rest)
        except json.JSONDecodeError:
            calls.append(ToolCall(header["action"], rest.split("\n", 1)[0].strip()))
            continue
        calls.append(ToolCall(header["action"], rest[:length], value, valid_json=True))
    return calls


def parse_tool_call(response: str) -> tuple[str, dict | None] | None:
    """(action, arguments) of the first `Action:` / `Action Input:` pair in `response`; arguments is None when the
    input is not a JSON object. None when there is no such pair. Text before the pair (a thinking process) and after
    the JSON object (e.g. an `Observation:`) is ignored; the object may sit in a ``` code fence."""
    calls = parse_tool_calls(response)
    if not calls:
        return None
    first = calls[0]
    return first.action, first.value if first.valid_json and isinstance(first.value, dict) else None


def score_tool_call(response: str, reference: dict) -> dict:
    """"correct": the first call names the reference action exactly and its arguments equal the reference's as JSON
    objects (any order; strings by case and surrounding whitespace, numbers by value); unparseable input is wrong.
    "action_correct": the action name alone is right."""
    call = parse_tool_call(response)
    if call is None:
        return {"correct": False, "action_correct": False}
    action, arguments = call
    action_correct = action == reference["action"]
    return {"correct": action_correct and arguments is not None and values_match(arguments, reference["arguments"]),
            "action_correct": action_correct}


def tool_call_text(action: str, arguments: dict) -> str:
    """A call in ToolAlpaca's format (what every demonstration is)."""
    return f"Action: {action}\nAction Input: {json.dumps(arguments)}"


# --------------------------------------------------------------------------------------------------------------------
# Extraction.

EXTRACTION_SCHEMA = {"name": str, "date": str, "guests": int, "city": str}
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def score_extraction(response: str, reference: dict) -> dict:
    """"correct": the first JSON object in the response has exactly the schema's keys and every value matches
    (`values_match`: names and cities by case and surrounding whitespace, the ISO date exactly, guests by value).
    "valid_json": the response contains a JSON object at all."""
    found = first_json_object(response)
    return {"correct": found is not None and values_match(found, reference), "valid_json": found is not None}


def _check_extraction_reference(path: Path, number: int, reference: dict) -> None:
    if reference.keys() != EXTRACTION_SCHEMA.keys():
        raise DatasetError(path, number, "reference",
                           f"keys must be exactly {sorted(EXTRACTION_SCHEMA)}, got {sorted(reference)}")
    for key, kind in EXTRACTION_SCHEMA.items():
        value = reference[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
            expected = "a non-empty string" if kind is str else "an integer"
            raise DatasetError(path, number, "reference", f"{key!r} must be {expected}, got {value!r}")
    if not _ISO_DATE.fullmatch(reference["date"]):
        raise DatasetError(path, number, "reference", f"'date' must be YYYY-MM-DD, got {reference['date']!r}")
    try:
        datetime.date.fromisoformat(reference["date"])
    except ValueError:
        raise DatasetError(path, number, "reference", f"'date' {reference['date']!r} is not a calendar date") from None
    if reference["guests"] < 1:
        raise DatasetError(path, number, "reference", "'guests' must be at least 1")


def _check_tool_reference(path: Path, number: int, reference: dict, prompt: str) -> None:
    action = reference.get("action")
    if not isinstance(action, str) or not action.strip():
        raise DatasetError(path, number, "reference", "'action' must be a non-empty string")
    arguments = reference.get("arguments")
    if not isinstance(arguments, dict):
        raise DatasetError(path, number, "reference", "'arguments' must be a JSON object")
    if set(reference) != {"action", "arguments"}:
        raise DatasetError(path, number, "reference", f"keys must be 'action' and 'arguments', got {sorted(reference)}")
    # The prompt's documentation must define the function and every argument the call uses.
    documentation = re.search(rf"(?m)^{re.escape(action)}: [^\n]*\nParameters: (\{{[^\n]*\}})$", prompt)
    if documentation is None:
        raise DatasetError(path, number, "reference", f"action {action!r} is not documented in the prompt")
    parameters = json.loads(documentation[1])
    undocumented = sorted(set(arguments) - set(parameters))
    if undocumented:
        raise DatasetError(path, number, "reference", f"arguments {undocumented} are not parameters of {action!r}")
    missing = sorted(name for name, text in parameters.items()
                     if text.startswith("Required.") and name not in arguments)
    if missing:
        raise DatasetError(path, number, "reference", f"required parameters {missing} of {action!r} are missing")


# --------------------------------------------------------------------------------------------------------------------
# Loading.

def _load(task: str, split: str, directory: Path) -> list[SkillRow]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = directory / f"{split}.jsonl"
    rows = read_jsonl(path)
    loaded = []
    for number, row in enumerate(rows, start=1):
        fields = {name: require(path, number, row, name, str) for name in ("id", "prompt", "demonstration")}
        reference = require(path, number, row, "reference", dict)
        if task == "tool_use":
            _check_tool_reference(path, number, reference, fields["prompt"])
            if fields["demonstration"] != tool_call_text(reference["action"], reference["arguments"]):
                raise DatasetError(path, number, "demonstration",
                                   "must be the reference call: 'Action: <action>\\nAction Input: <arguments JSON>'")
            correct = score_tool_call(fields["demonstration"], reference)["correct"]
        else:
            _check_extraction_reference(path, number, reference)
            correct = score_extraction(fields["demonstration"], reference)["correct"]
        if not correct:
            raise DatasetError(path, number, "demonstration", "does not score correct against the reference")
        loaded.append(SkillRow(**fields, reference=reference))
    check_unique_ids(path, rows)
    return loaded


def load_tool_use(split: str, directory: Path = TOOL_USE_DIR) -> list[SkillRow]:
    return _load("tool_use", split, directory)


def load_extraction(split: str, directory: Path = EXTRACTION_DIR) -> list[SkillRow]:
    return _load("extraction", split, directory)


def training_examples(rows: list[SkillRow]) -> list[Example]:
    """Skill learning has no privileged text: the teacher sees the prompt and the demonstration (paper §3)."""
    return [Example(row.id, row.prompt, row.demonstration) for row in rows]
