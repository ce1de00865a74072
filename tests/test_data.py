"""Dataset validation: a malformed row stops with the file, the row and the field, before anything trains."""

import json
import shutil

import pytest

from sdft_core.data import DatasetError, read_jsonl
from sdft_core.eval.fact_matcher import score_facts
from tasks.knowledge import KNOWLEDGE_DIR, SPLITS, load_articles, load_general_prompts, load_questions


@pytest.fixture
def data_dir(tmp_path):
    target = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE_DIR, target)
    return target


def corrupt_row(path, row_number, change):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows[row_number - 1])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("change,field,problem", [
    (lambda r: r.pop("answer"), "answer", "missing field"),
    (lambda r: r.update(answer="   "), "answer", "is empty"),
    (lambda r: r.update(question=42), "question", "expected str, got int"),
    (lambda r: r.update(facts="Kessrin"), "facts", "expected list, got str"),
    (lambda r: r.update(facts=[["Kessrin"], []]), "facts", "fact 1 must be a non-empty list"),
    (lambda r: r.update(article_id="a99"), "article_id", "unknown article 'a99'"),
    (lambda r: r.update(wrong=[""]), "wrong", "list of non-empty strings"),
])
def test_bad_question_rows_name_file_row_and_field(data_dir, change, field, problem):
    corrupt_row(data_dir / "train.jsonl", 7, change)
    with pytest.raises(DatasetError) as caught:
        load_questions("train", directory=data_dir)
    message = str(caught.value)
    assert str(data_dir / "train.jsonl") in message and "row 7" in message and repr(field) in message
    assert problem in message


def test_invalid_json_and_empty_lines_name_the_row(data_dir):
    path = data_dir / "articles.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    with pytest.raises(DatasetError, match=r"articles.jsonl, row 3: not valid JSON"):
        load_articles(data_dir)
    path.write_text("\n".join(lines[:1] + [""] + lines[1:]) + "\n")
    with pytest.raises(DatasetError, match=r"articles.jsonl, row 2: empty line"):
        read_jsonl(path)


def test_duplicate_ids_are_refused(data_dir):
    corrupt_row(data_dir / "test.jsonl", 2, lambda r: r.update(id="a01-q1-x1"))
    with pytest.raises(DatasetError, match=r"row 2, field 'id': duplicate id 'a01-q1-x1' \(first at row 1\)"):
        load_questions("test", directory=data_dir)


def test_shipped_dataset_is_valid_and_consistent():
    articles = load_articles()
    splits = {split: load_questions(split, articles=articles) for split in SPLITS}
    assert {s: len(q) for s, q in splits.items()} == {"train": 80, "val": 40, "test": 40, "ood": 16}
    for split, questions in splits.items():
        for q in questions:
            # The demonstration answers its own question (the matcher and the data agree) ...
            assert score_facts(q.answer, q.facts, q.wrong).strict, q.id
            # ... and the question does not give the answer away.
            assert score_facts(q.question, q.facts, []).facts_found == 0, q.id
            for aliases in q.facts:
                assert aliases[0] in articles[q.article_id].text, q.id
    train_questions = {q.question for q in splits["train"]}
    assert not train_questions & {q.question for s in ("val", "test", "ood") for q in splits[s]}
    assert len(load_general_prompts("eval")) == len(load_general_prompts("train")) == 32
