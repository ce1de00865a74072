"""Users' own data (tasks/own_data.py, experiments/own_data.py, notebooks/own_data.py): every scorer, every bad row
stopping before training with its file, row and field, the preset chosen by model size, and the whole command at
smoke size with a tiny random model, twice (the rerun skips everything)."""

import json
from pathlib import Path

import papermill
import pytest

from experiments.own_data import choose_preset, main, plan_own_data
from sdft_core.config import PRESETS, SMALL_MODEL_PARAMETERS, preset_for_size
from sdft_core.data import DatasetError
from tasks.own_data import load_own_task

REPO = Path(__file__).resolve().parent.parent

# Invented facts, none from the kit's tasks.
TRAIN = [
    {"prompt": "What is the capital of Brellia?", "demonstration": "The capital of Brellia is Ostrivane.",
     "facts": [["Ostrivane", "Ostrivan"]]},
    {"prompt": "Who painted The Amber Gate?", "demonstration": "The Amber Gate was painted by Tomas Wyle.",
     "context": "Tomas Wyle (1801-1870) painted The Amber Gate in his last years.", "facts": ["Tomas Wyle"]},
    {"prompt": "How many moons does Pellucid have?", "demonstration": "Pellucid has three moons.",
     "facts": [["three", "3"]]},
]
EVAL = [
    {"id": "capital", "prompt": "Name the capital city of Brellia.", "facts": [["Ostrivane"]], "wrong": ["Brelton"]},
    {"id": "painter", "prompt": "Which painter made The Amber Gate?", "facts": [["Tomas Wyle", "Wyle"]]},
]
SMOKE = ["--max-new-tokens", "4", "--batch-size", "2", "--micro-batch-size", "2", "--epochs", "0.5",
         "--warmup-steps", "0", "--preflight-examples", "2", "--max-general-prompts", "1", "--eval-batch-size", "4"]


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def eval_task(tmp_path, scorer: str, eval_rows: list[dict]):
    return load_own_task(write_rows(tmp_path / "train.jsonl", TRAIN), write_rows(tmp_path / "eval.jsonl", eval_rows),
                         scorer, train_keys=False)


def scores(task, responses: list[str], split: str = "eval") -> list[dict]:
    return [task.score(response, item.reference) for response, item in zip(responses, task.eval_splits[split])]


# --- Scorers --------------------------------------------------------------------------------------------------------

def test_exact_match_compares_the_whole_answer_up_to_case_and_spacing(tmp_path):
    task = eval_task(tmp_path, "exact", [{"prompt": "Capital of Brellia?", "answer": ["Ostrivane", "Ostrivan"]},
                                         {"prompt": "Moons of Pellucid?", "answer": "3"}])
    assert [s["correct"] for s in scores(task, ["  ostrivan ", "3 moons"])] == [True, False]


def test_contains_finds_any_accepted_answer_in_the_response(tmp_path):
    task = eval_task(tmp_path, "contains", [{"prompt": "Capital of Brellia?", "answer": ["Ostrivane", "Ostrivan"]},
                                            {"prompt": "Moons of Pellucid?", "answer": "three  moons"}])
    assert [s["correct"] for s in scores(task, ["It is OSTRIVANE.", "It has three\nmoons"])] == [True, True]
    assert [s["correct"] for s in scores(task, ["Brelton", "two moons"])] == [False, False]


def test_facts_uses_the_fact_matcher_with_aliases_and_wrong_strings(tmp_path):
    task = eval_task(tmp_path, "facts", [{"prompt": "Capital and painter?", "facts": [["Ostrivane", "Ostrivan"],
                                                                                      "Tomas Wyle"],
                                          "wrong": ["Brelton"]}])
    assert scores(task, ["Ostrivan, and Tomas Wyle painted it."]) == [{"correct": True, "lenient": True}]
    assert scores(task, ["Ostrivane; the painter I do not know."]) == [{"correct": False, "lenient": True}]
    assert scores(task, ["Ostrivane or Brelton, by Tomas Wyle"]) == [{"correct": False, "lenient": False}]


def test_json_fields_compares_the_named_fields_of_the_first_json_object(tmp_path):
    task = eval_task(tmp_path, "json_fields", [{"prompt": "Book it", "fields": {"city": "Ostrivane", "guests": 2}}])
    assert scores(task, ['Sure: {"city": " ostrivane", "guests": 2.0, "extra": 1}']) == [
        {"correct": True, "valid_json": True}]
    assert scores(task, ['{"city": "Ostrivane", "guests": "2"}']) == [{"correct": False, "valid_json": True}]
    assert scores(task, ["no json here"]) == [{"correct": False, "valid_json": False}]


def test_a_dotted_path_names_the_users_own_scorer(tmp_path, monkeypatch):
    (tmp_path / "my_scorers.py").write_text(
        "def starts_with(response, reference):\n"
        "    return {'correct': response.startswith(reference['start']), 'short': len(response) < 20}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = eval_task(tmp_path, "my_scorers:starts_with", [{"prompt": "Capital?", "reference": {"start": "Ostri"}}])
    assert scores(task, ["Ostrivane"]) == [{"correct": True, "short": True}]
    # Without an answer key in the training rows the demonstration is the reference; this function cannot read it.
    with pytest.raises(DatasetError, match="train.jsonl, row 1, field 'reference': scorer my_scorers:starts_with "
                                           "fails on it"):
        load_own_task(tmp_path / "train.jsonl", tmp_path / "eval.jsonl", "my_scorers:starts_with")


def test_training_rows_default_their_answer_key_to_the_demonstration(tmp_path):
    task = load_own_task(write_rows(tmp_path / "train.jsonl", TRAIN), None, "exact")
    assert [s["correct"] for s in scores(task, [row["demonstration"] for row in TRAIN], "train")] == [True] * 3
    assert task.train[1].context == TRAIN[1]["context"] and [e.id for e in task.train] == ["row1", "row2", "row3"]


def test_json_fields_take_a_training_rows_key_from_the_json_object_of_its_demonstration(tmp_path):
    rows = [{"prompt": "Book it", "demonstration": 'Done: {"city": "Ostrivane"}'},
            {"prompt": "Book that", "demonstration": "Done, no JSON"}]
    task = load_own_task(write_rows(tmp_path / "train.jsonl", rows[:1]), None, "json_fields")
    assert task.eval_splits["train"][0].reference == {"fields": {"city": "Ostrivane"}}
    with pytest.raises(DatasetError, match="row 2, field 'fields': missing field, and the demonstration gives none"):
        load_own_task(write_rows(tmp_path / "train.jsonl", rows), None, "json_fields")


def test_the_task_name_changes_with_the_scorer_or_the_keys_so_no_cached_evaluation_is_reused(tmp_path):
    rows = [{"prompt": "Capital of Brellia?", "answer": "Ostrivane"}]
    names = {eval_task(tmp_path, "exact", rows).name, eval_task(tmp_path, "contains", rows).name,
             eval_task(tmp_path, "exact", [{**rows[0], "answer": "Brelton"}]).name}
    assert len(names) == 3


@pytest.mark.parametrize("scorer", ["levenshtein", "no_such_module:score", "json:no_such_function"])
def test_an_unknown_scorer_is_refused(tmp_path, scorer):
    with pytest.raises(ValueError, match="scorer"):
        eval_task(tmp_path, scorer, EVAL)


# --- Bad rows -------------------------------------------------------------------------------------------------------

BAD_TRAINING_ROWS = {
    "missing prompt": ({"demonstration": "x"}, "prompt", "missing field"),
    "empty demonstration": ({"prompt": "q", "demonstration": "  "}, "demonstration", "is empty"),
    "non-string prompt": ({"prompt": 7, "demonstration": "x"}, "prompt", "expected str, got int"),
    "non-string context": ({"prompt": "q", "demonstration": "x", "context": ["a"]}, "context", "expected str"),
    "misspelt field": ({"prompt": "q", "demonstation": "x"}, "demonstation", "unknown field"),
    "facts key missing (the pre-flight needs it)": ({"prompt": "q", "demonstration": "x"}, "facts", "missing field"),
    "bad alias list": ({"prompt": "q", "demonstration": "x", "facts": [["a", 3]]}, "facts", "fact 1 must be"),
    "duplicate id": ({"id": "row1", "prompt": "q", "demonstration": "x", "facts": ["x"]}, "id", "duplicate id"),
}


@pytest.mark.parametrize("case", BAD_TRAINING_ROWS, ids=list(BAD_TRAINING_ROWS))
def test_a_bad_training_row_names_the_file_the_row_and_the_field(tmp_path, case):
    row, field, problem = BAD_TRAINING_ROWS[case]
    path = write_rows(tmp_path / "train.jsonl", [TRAIN[0], TRAIN[2], row])  # the bad one on line 3
    with pytest.raises(DatasetError, match=problem) as caught:
        load_own_task(path, None, "facts")
    assert (caught.value.path, caught.value.row, caught.value.field) == (path, 3, field)


BAD_EVAL_ROWS = {
    "answer key missing for exact": ("exact", {"prompt": "q"}, "answer", "missing field"),
    "answer of the wrong type": ("contains", {"prompt": "q", "answer": 3}, "answer", "expected str or list"),
    "empty fields": ("json_fields", {"prompt": "q", "fields": {}}, "fields", "is empty"),
    "only another scorer's key": ("facts", {"prompt": "q", "answer": "x"}, "facts", "missing field"),
    "misspelt key": ("contains", {"prompt": "q", "answer": "x", "answers": "y"}, "answers", "unknown field"),
    "wrong strings not strings": ("facts", {"prompt": "q", "facts": ["x"], "wrong": [1]}, "wrong", "item 1"),
    "reference missing for a function": ("json:dumps", {"prompt": "q"}, "reference", "missing field"),
}


@pytest.mark.parametrize("case", BAD_EVAL_ROWS, ids=list(BAD_EVAL_ROWS))
def test_a_bad_evaluation_row_names_the_file_the_row_and_the_field(tmp_path, case):
    scorer, row, field, problem = BAD_EVAL_ROWS[case]
    path = write_rows(tmp_path / "eval.jsonl", [row])
    with pytest.raises(DatasetError, match=problem) as caught:
        load_own_task(write_rows(tmp_path / "train.jsonl", TRAIN), path, scorer, train_keys=False)
    assert (caught.value.path, caught.value.row, caught.value.field) == (path, 1, field)


def test_invalid_json_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(TRAIN[0]) + "\n{\"prompt\": \"q\",\n")
    with pytest.raises(DatasetError, match="not valid JSON") as caught:
        load_own_task(path, None, "facts")
    assert (caught.value.path, caught.value.row) == (str(path), 2)


def test_bad_data_stops_the_command_before_anything_is_written(tmp_path, tiny_model_dir):
    train_file = write_rows(tmp_path / "train.jsonl", [TRAIN[0], {"prompt": "q", "demonstration": ""}])
    with pytest.raises(SystemExit, match=r"train.jsonl, row 2, field 'demonstration': is empty"):
        main(["--train-file", train_file, "--output-dir", str(tmp_path / "out"), "--model", tiny_model_dir])
    assert not (tmp_path / "out").exists()


# --- Presets --------------------------------------------------------------------------------------------------------

def test_the_preset_follows_the_model_size_unless_one_is_named(tiny_model_dir):
    assert preset_for_size(SMALL_MODEL_PARAMETERS - 1)[0] == "small_model"
    assert preset_for_size(SMALL_MODEL_PARAMETERS)[0] == "paper_as_run"
    name, why = choose_preset(tiny_model_dir)
    assert name == "small_model" and "parameters < 1B" in why
    assert choose_preset(tiny_model_dir, "paper_as_written") == ("paper_as_written", "named by --preset")


def test_the_small_model_preset_is_the_recipe_and_given_fields_win(tmp_path, tiny_model_dir):
    run = plan_own_data(write_rows(tmp_path / "train.jsonl", TRAIN), tmp_path / "out",
                        write_rows(tmp_path / "eval.jsonl", EVAL), scorer="facts", model=tiny_model_dir,
                        config={"learning_rate": 1e-4})
    sdft, sft = run.configs["sdft"], run.configs["sft"]
    recipe = {k: v for k, v in PRESETS["small_model"].items() if k != "learning_rate"}
    assert all(getattr(sdft, k) == v for k, v in recipe.items()) and sdft.learning_rate == 1e-4
    assert sft.method == "sft" and (sft.epochs, sft.batch_size, sft.learning_rate) == (4.0, 8, 1e-4)
    with pytest.raises(ValueError, match="method"):
        plan_own_data(tmp_path / "train.jsonl", tmp_path / "out", config={"method": "dft"}, model=tiny_model_dir)


# --- The whole command ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_command_runs_everything_and_a_rerun_skips_it(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "out"
    argv = ["--train-file", write_rows(tmp_path / "train.jsonl", TRAIN), "--eval-file",
            write_rows(tmp_path / "eval.jsonl", EVAL), "--output-dir", str(out), "--model", tiny_model_dir,
            "--scorer", "facts", *SMOKE]
    main(argv)
    first = capsys.readouterr().out
    assert "[own_data] preset small_model:" in first and "[own_data] pre-flight: " in first
    table = (out / "comparison.md").read_text()
    for column in ("correct (%)", "lenient (%)", "KL to base (nats)", "Top-1 agreement with base"):
        assert column in table
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["base", "sft", "sdft"]
    assert "| sdft " in first  # the table is printed too
    record = json.loads((out / "own_data.json").read_text())
    assert record["preset"] == "small_model" and record["configs"]["sdft"]["guided_fraction"] == 1.0
    evaluation = json.loads((out / "eval" / "sdft.json").read_text())
    assert evaluation["eval"]["n"] == 2 and evaluation["forgetting"]["n_prompts"] == 1
    assert json.loads((out / "eval" / "base.json").read_text())["forgetting"]["kl_to_base"] == 0.0
    assert "Verdict" in (out / "preflight.md").read_text()
    finished = {method: (out / "runs" / method / "summary.json").stat().st_mtime_ns for method in ("sft", "sdft")}

    main(argv)
    second = capsys.readouterr().out
    assert second.count("is already finished") == 2 and second.count("is up to date; skipping") == 4
    assert {m: (out / "runs" / m / "summary.json").stat().st_mtime_ns for m in finished} == finished
    assert (out / "comparison.md").read_text() == table

    # Other flags into the same folder: refused, saying what differs, until --overwrite.
    with pytest.raises(SystemExit, match=r"holds another run .*learning_rate 0.0003 → 0.001.* Here: --overwrite"):
        main([*argv, "--learning-rate", "1e-3"])
    main([*argv, "--learning-rate", "1e-3", "--overwrite"])
    assert json.loads((out / "runs" / "sdft" / "config.json").read_text())["config"]["learning_rate"] == 1e-3


@pytest.mark.slow
def test_the_notebook_runs_the_shipped_example_under_papermill(tmp_path, tiny_model_dir):
    """The notebook's defaults are the shipped example and a git-ignored scratch folder; here at smoke size."""
    notebook = REPO / "notebooks" / "own_data.ipynb"
    defaults = papermill.inspect_notebook(str(notebook))
    assert defaults["train_file"]["default"] == '"examples/own_data/train.jsonl"'
    assert defaults["output_dir"]["default"].startswith('"results/scratch/')
    out = tmp_path / "out"
    papermill.execute_notebook(
        str(notebook), str(tmp_path / "executed.ipynb"), cwd=str(REPO), progress_bar=False,
        parameters={"output_dir": str(out), "model": tiny_model_dir, "preflight": False, "max_train_examples": 2,
                    "max_eval_items": 2, "max_general_prompts": 1,
                    "config": {"max_new_tokens": 4, "batch_size": 2, "micro_batch_size": 2, "epochs": 1.0}})
    assert [line.split("|")[1].strip() for line in (out / "comparison.md").read_text().splitlines()[2:]] == [
        "base", "sft", "sdft"]
