"""The embedded skill tasks (tool use, extraction): loaders validate, scorers are exact, and the data is consistent."""

import json
import re
import shutil

import pytest

from data_prep import generate_skills
from sdft_core.data import DatasetError
from tasks.registry import load_task
from tasks.skills import (EXTRACTION_DIR, SPLITS, TOOL_USE_DIR, load_extraction, load_tool_use, parse_tool_call,
                              score_extraction, score_tool_call, values_match)

LOADERS = {"tool_use": (load_tool_use, TOOL_USE_DIR), "extraction": (load_extraction, EXTRACTION_DIR)}


def corrupt_row(path, row_number, change):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows[row_number - 1])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def copied(tmp_path):
    def copy(task):
        target = tmp_path / task
        shutil.copytree(LOADERS[task][1], target)
        return target
    return copy


# --- loaders --------------------------------------------------------------------------------------------------------

def _set_reference(**changes):
    return lambda r: r["reference"].update(changes)


@pytest.mark.parametrize("task,change,field,problem", [
    ("tool_use", lambda r: r.pop("prompt"), "prompt", "missing field"),
    ("tool_use", lambda r: r.update(demonstration="  "), "demonstration", "is empty"),
    ("tool_use", lambda r: r.update(reference="getForecast"), "reference", "expected dict, got str"),
    ("tool_use", _set_reference(action="getHoroscope"), "reference", "'getHoroscope' is not documented"),
    ("tool_use", lambda r: r["reference"]["arguments"].update(colour="red"), "reference", "are not parameters"),
    ("tool_use", lambda r: r["reference"].update(arguments={}), "reference", "required parameters"),
    ("tool_use", lambda r: r.update(demonstration=r["demonstration"].replace("Action Input:", "Input:")),
     "demonstration", "must be the reference call"),
    ("extraction", lambda r: r.update(id=7), "id", "expected str, got int"),
    ("extraction", _set_reference(date="14 May 2026"), "reference", "'date' must be YYYY-MM-DD"),
    ("extraction", _set_reference(date="2026-02-30"), "reference", "not a calendar date"),
    ("extraction", _set_reference(guests="4"), "reference", "'guests' must be an integer, got '4'"),
    ("extraction", lambda r: r["reference"].pop("city"), "reference", "keys must be exactly"),
    ("extraction", lambda r: r.update(demonstration=r["demonstration"].replace('"guests": ', '"guests": 1')),
     "demonstration", "does not score correct"),
])
def test_bad_rows_name_file_row_and_field(copied, task, change, field, problem):
    directory = copied(task)
    corrupt_row(directory / "train.jsonl", 5, change)
    with pytest.raises(DatasetError) as caught:
        LOADERS[task][0]("train", directory=directory)
    message = str(caught.value)
    assert str(directory / "train.jsonl") in message and "row 5" in message and repr(field) in message
    assert problem in message


def test_duplicate_ids_and_unknown_splits_are_refused(copied):
    directory = copied("extraction")
    first = json.loads((directory / "test.jsonl").read_text().splitlines()[0])["id"]
    corrupt_row(directory / "test.jsonl", 3, lambda r: r.update(id=first))
    with pytest.raises(DatasetError, match=rf"row 3, field 'id': duplicate id '{first}'"):
        load_extraction("test", directory=directory)
    with pytest.raises(ValueError, match="split must be one of"):
        load_tool_use("ood")


# --- scorers --------------------------------------------------------------------------------------------------------

CALL = {"action": "getForecast", "arguments": {"town": "Tarnwick", "days": 3}}


@pytest.mark.parametrize("response,correct,action_correct", [
    ('Action: getForecast\nAction Input: {"town": "Tarnwick", "days": 3}', True, True),
    ('Action: getForecast\nAction Input: {"days": 3, "town": "Tarnwick"}', True, True),  # argument order
    ('Action:  getForecast \n\nAction Input:{"town": "  tarnwick ", "days": 3.0}', True, True),  # spaces, case, 3.0
    ('Thought: the user wants a forecast.\nAction: getForecast\nAction Input: {"town": "Tarnwick", "days": 3}\n'
     'Observation: sunny', True, True),  # text before and after the call
    ('Action: getForecast\nAction Input: ```json\n{"town": "Tarnwick", "days": 3}\n```', True, True),  # fenced
    ('Action: getAirQuality\nAction Input: {"town": "Tarnwick", "days": 3}', False, False),  # wrong action
    ('Action: getforecast\nAction Input: {"town": "Tarnwick", "days": 3}', False, False),  # names are exact
    ('Action: getForecast\nAction Input: {"town": "Tarnwick", "days": 3', False, True),  # broken JSON
    ('Action: getForecast\nAction Input: town=Tarnwick, days=3', False, True),  # not JSON
    ('Action: getForecast\nAction Input: {"town": "Tarnwick", "days": "3"}', False, True),  # "3" is not 3
    ('Action: getForecast\nAction Input: {"town": "Tarnwick"}', False, True),  # missing argument
    ('Action: getForecast\nAction Input: {"town": "Tarnwick", "days": 3, "units": "metric"}', False, True),  # extra
    ('Action: getForecast\nAction Input: {"town": "Tarnwick", "days": 4}', False, True),  # wrong value
    ('getForecast({"town": "Tarnwick", "days": 3})', False, False),  # not the format
    ('Action: getForecast', False, False),  # no input
    ('Action: getAirQuality\nAction Input: {"town": "Tarnwick"}\nAction: getForecast\nAction Input: '
     '{"town": "Tarnwick", "days": 3}', False, False),  # only the first call counts
])
def test_tool_call_scorer(response, correct, action_correct):
    assert score_tool_call(response, CALL) == {"correct": correct, "action_correct": action_correct}


def test_action_input_line_is_never_taken_for_the_action():
    assert parse_tool_call("Action Input: {}\nAction Input: {}") is None


BOOKING = {"name": "Liesl Ashgrove", "date": "2026-12-11", "guests": 4, "city": "Nethercombe"}


@pytest.mark.parametrize("response,correct,valid_json", [
    ('{"name": "Liesl Ashgrove", "date": "2026-12-11", "guests": 4, "city": "Nethercombe"}', True, True),
    ('Here it is:\n```json\n{"city": " nethercombe", "guests": 4, "date": "2026-12-11", "name": "LIESL ASHGROVE"}\n```',
     True, True),  # text around it, key order, case, whitespace
    ('{"name": "Liesl Ashgrove", "date": "11 December 2026", "guests": 4, "city": "Nethercombe"}', False, True),
    ('{"name": "Liesl Ashgrove", "date": "2026-12-11", "guests": "4", "city": "Nethercombe"}', False, True),
    ('{"name": "Liesl Ashgrove", "date": "2026-12-11", "guests": 4}', False, True),  # missing field
    ('{"name": "Liesl Ashgrove", "date": "2026-12-11", "guests": 4, "city": "Nethercombe", "time": "19:00"}',
     False, True),  # extra field
    ('{"name": "Liesl Ashgrove", "date": "2026-12-11", "guests": 4, "city": "Nethercombe"', False, False),  # broken
    ('Liesl Ashgrove, 2026-12-11, 4 guests, Nethercombe', False, False),
    ('{oops} {"name": "Liesl Ashgrove", "date": "2026-12-11", "guests": 4, "city": "Nethercombe"}', True, True),
])
def test_extraction_scorer(response, correct, valid_json):
    assert score_extraction(response, BOOKING) == {"correct": correct, "valid_json": valid_json}


def test_values_match_types():
    assert values_match(2.0, 2) and values_match([" A "], ["a"]) and values_match(None, None)
    assert not values_match(True, 1) and not values_match(1, True) and not values_match("2", 2)
    assert not values_match({"a": 1}, {"a": 1, "b": 2}) and not values_match([1], [1, 2])


# --- the shipped data -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["tool_use", "extraction"])
def test_shipped_data_is_valid_disjoint_and_does_not_leak(task):
    load = LOADERS[task][0]
    splits = {split: load(split) for split in SPLITS}
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 72, "val": 16, "test": 32}
    scorer = score_tool_call if task == "tool_use" else score_extraction
    for rows in splits.values():
        for row in rows:
            assert scorer(row.demonstration, row.reference)["correct"], row.id
            assert row.demonstration not in row.prompt, row.id
            if task == "tool_use":
                assert f"Action: {row.reference['action']}" not in row.prompt, row.id
                assert json.dumps(row.reference["arguments"]) not in row.prompt, row.id
            else:
                assert row.reference["date"] not in row.prompt and not re.search(r"\d{4}-\d{2}-\d{2}", row.prompt)
                assert "{" not in row.prompt, row.id  # the schema is never spelled out
    ids = [row.id for rows in splits.values() for row in rows]
    prompts = [row.prompt for rows in splits.values() for row in rows]
    assert len(set(ids)) == len(ids) and len(set(prompts)) == len(prompts)
    train_answers = {json.dumps(r.reference, sort_keys=True) for r in splits["train"]}
    for split in ("val", "test"):
        assert not train_answers & {json.dumps(r.reference, sort_keys=True) for r in splits[split]}


def test_tool_use_splits_share_the_apis_and_cover_every_function():
    splits = {split: load_tool_use(split) for split in SPLITS}
    apis = {split: {row.id.split("-")[0] for row in rows} for split, rows in splits.items()}
    assert apis["train"] == apis["val"] == apis["test"] and len(apis["train"]) == 8
    train_actions = {row.reference["action"] for row in splits["train"]}
    assert len(train_actions) == 24
    assert {row.reference["action"] for row in splits["test"]} <= train_actions


def test_generator_reproduces_the_shipped_files():
    for path, text in generate_skills.build().items():
        assert path.read_text(encoding="utf-8") == text, f"{path} differs: run python -m data_prep.generate_skills"


@pytest.mark.parametrize("name,budget", [("tool_use", 64), ("extraction", 56)])
def test_registered_tasks(name, budget):
    task = load_task(name)
    assert task.name == name and task.max_new_tokens == budget
    assert len(task.train) == 72 and {s: len(i) for s, i in task.eval_splits.items()} == {"train": 72, "val": 16, "test": 32}
    assert all(example.context is None for example in task.train)
    item = task.eval_splits["test"][0]
    demonstration = {"tool_use": load_tool_use, "extraction": load_extraction}[name]("test")[0].demonstration
    assert task.score(demonstration, item.reference)["correct"]
    assert not task.score("I cannot help with that.", item.reference)["correct"]
