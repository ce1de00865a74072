"""The paper's four tasks loaded from tiny fixture folders in the builders' exact formats (SDFT_PAPER_DATA points at
them); the judge-based scorers through the fake OpenAI-compatible server."""

from __future__ import annotations

import json
import random

import pytest
from test_openai_client import API_KEY, client_config, fake_server  # noqa: F401 (fixtures shared with the client tests)

from sdft_core.data import DatasetError
from sdft_core.eval.judge import KNOWLEDGE_PROMPT, MEDICAL_PROMPT
from sdft_core.openai_client import MissingCredentialsError
from tasks import paper_tasks
from tasks.paper_tasks import MissingPaperData, knowledge_splits, score_multiple_choice, score_tool_calls
from tasks.registry import TASKS, load_task


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


# --- Fixture data, in the formats paper_datasets / demonstrations / qa_generation write ------------------------------
TOOL_PROMPT = "You can use the following API.\n\nAPI: Axolotl\n...\nUser request: {}"
SEARCH, RANDOM = "searchAxolotlImages", "getRandomAxolotlImage"
GOLDEN = [{"action": SEARCH, "action_input": "{\"color\": \"albino\", \"limit\": 3}"},
          {"action": RANDOM, "action_input": "{}"}]


def toolalpaca(root):
    write_jsonl(root / "toolalpaca" / "train.jsonl", [
        {"id": "toolalpaca-train-0001-00", "prompt": TOOL_PROMPT.format("A random axolotl."),
         "demonstration": f"Action: {RANDOM}\nAction Input: {{}}"},
        {"id": "toolalpaca-train-0001-03", "prompt": TOOL_PROMPT.format("Albino ones, then a random one."),
         "demonstration": f"Action: {SEARCH}\nAction Input: {{\"color\": \"albino\"}}\n\n"
                          f"Action: {RANDOM}\nAction Input: {{}}"}])
    write_jsonl(root / "toolalpaca" / "test.jsonl", [
        {"id": f"toolalpaca-test-001-{i:02d}", "prompt": TOOL_PROMPT.format(f"request {i}"),
         "demonstration": "\n\n".join(f"Action: {g['action']}\nAction Input: {g['action_input']}" for g in golden),
         "golden_actions": golden}
        for i, golden in enumerate([GOLDEN, GOLDEN[:1], [{"action": RANDOM, "action_input": "{}"}]])])


def mc_prompt(i):
    return f"Question {i}?\n\nA. one\nB. two\nC. three\n\nAnswer the multiple-choice question above."


def sciknoweval(root):
    folder = root / "sciknoweval"
    rows = {split: [{"id": f"sciknoweval-chem-l3-{split}{i}", "prompt": mc_prompt(f"{split}{i}"), "answer": "ABC"[i]}
                    for i in range(count)] for split, count in (("train", 3), ("val", 1), ("test", 2))}
    for split, split_rows in rows.items():
        write_jsonl(folder / f"{split}.jsonl", split_rows)
    # data_prep.demonstrations output: train prompt 1 got no valid demonstration in 8 samples.
    write_jsonl(folder / "train_demonstrations.jsonl", [
        {**rows["train"][i], "demonstration": f"Reasoning...\nAnswer: {rows['train'][i]['answer']}",
         "samples_used": 1 + i} for i in (0, 2)])


def medical(root):
    write_jsonl(root / "medical" / "train.jsonl", [
        {"id": f"medical-train-{i:05d}", "prompt": f"Clinical question {i}?", "demonstration": f"Answer {i}."}
        for i in range(1, 5)])
    write_jsonl(root / "medical" / "test.jsonl", [
        {"id": f"medical-eval-{i:05d}", "prompt": f"Verifiable question {i}?", "answer": f"Diagnosis {i}"}
        for i in (7, 9)])


ARTICLES = [{"id": "2025-myanmar-earthquake", "paper_name": "2025 Myanmar earthquake",
             "title": "2025 Myanmar earthquake", "text": "On 28 March 2025 a magnitude 7.7 earthquake struck...",
             "revision_id": 1, "url": "https://en.wikipedia.org/wiki/2025_Myanmar_earthquake"},
            {"id": "hurricane-melissa", "paper_name": "Hurricane Melissa", "title": "Hurricane Melissa",
             "text": "Hurricane Melissa was a Category 5 hurricane in October 2025...", "revision_id": 2,
             "url": "https://en.wikipedia.org/wiki/Hurricane_Melissa"}]


def qa_rows(articles=ARTICLES, direct=10, indirect=2):
    return [{"id": f"{a['id']}-{kind}-{i:03d}", "article_id": a["id"], "kind": kind,
             "question": f"{kind} question {i} about {a['title']}?", "answer": f"answer {i}"}
            for a in articles for kind, count in (("direct", direct), ("indirect", indirect))
            for i in range(1, count + 1)]


def knowledge(root):
    write_jsonl(root / "knowledge" / "articles.jsonl", ARTICLES)
    write_jsonl(root / "knowledge" / "qa.jsonl", qa_rows())


@pytest.fixture
def paper_data(tmp_path, monkeypatch):
    root = tmp_path / "paper"
    for build in (toolalpaca, sciknoweval, medical, knowledge):
        build(root)
    monkeypatch.setenv("SDFT_PAPER_DATA", str(root))
    return root


# --- Loading ---------------------------------------------------------------------------------------------------------
def test_paper_tasks_are_registered():
    assert {"paper_tool_use", "paper_science", "paper_medical", "paper_knowledge"} <= set(TASKS)


def test_tool_use_task_loads(paper_data):
    task = load_task("paper_tool_use")
    assert (task.name, task.max_new_tokens, len(task.train), list(task.eval_splits)) == \
        ("paper_tool_use", 2048, 2, ["test"])
    assert task.train[1].demonstration.endswith(f"Action: {RANDOM}\nAction Input: {{}}")
    first = task.eval_splits["test"][0]
    assert first.reference == {"golden_actions": GOLDEN} and "request 0" in first.prompt
    assert [len(item.reference["golden_actions"]) for item in task.eval_splits["test"]] == [2, 1, 1]
    # Every golden call rendered as the builder's demonstration scores correct.
    for item in task.eval_splits["test"]:
        text = "\n\n".join(f"Action: {g['action']}\nAction Input: {g['action_input']}"
                           for g in item.reference["golden_actions"])
        assert task.score(text, item.reference) == {"correct": True, "action_correct": True}


def test_science_task_joins_demonstrations_and_counts_the_missing(paper_data):
    task = load_task("paper_science")
    assert (task.max_new_tokens, [e.id for e in task.train]) == (2048, ["sciknoweval-chem-l3-train0",
                                                                         "sciknoweval-chem-l3-train2"])
    assert task.train[1].demonstration.endswith("Answer: C") and task.train[1].prompt == mc_prompt("train2")
    assert "1 of 3 training prompts left out" in task.description
    assert {split: len(items) for split, items in task.eval_splits.items()} == {"train": 2, "val": 1, "test": 2}
    assert task.eval_splits["test"][1].reference == {"answer": "B"}
    # The training questions' answer keys (pre-flight teacher ceiling): the ones with a demonstration.
    assert [i.id for i in task.eval_splits["train"]] == [e.id for e in task.train]


def test_medical_task_loads_without_a_key(paper_data, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    task = load_task("paper_medical")
    assert (task.max_new_tokens, len(task.train), len(task.eval_splits["test"])) == (2048, 4, 2)
    assert task.train[0].demonstration == "Answer 1." and task.train[0].context is None
    assert task.eval_splits["test"][1].reference == {"answer": "Diagnosis 9", "question": "Verifiable question 9?"}
    with pytest.raises(MissingCredentialsError, match="OPENAI_API_KEY is not set"):
        task.score("anything", task.eval_splits["test"][0].reference)


def test_knowledge_task_loads_with_a_split_by_article(paper_data):
    task = load_task("paper_knowledge")
    assert task.max_new_tokens == 1024
    sizes = {split: len(items) for split, items in task.eval_splits.items()}
    assert (len(task.train), sizes) == (16, {"train": 16, "val": 2, "test": 2, "ood": 4})
    assert [i.id for i in task.eval_splits["train"]] == [e.id for e in task.train]
    texts = {a["id"]: a["text"] for a in ARTICLES}
    example = task.train[0]
    assert example.context == texts[example.id.rsplit("-direct-", 1)[0]] and example.demonstration.startswith("answer")
    item = task.eval_splits["ood"][0]
    assert item.reference == {"answer": "answer 1", "question": item.prompt} and "indirect" in item.prompt
    assert item.context == texts["2025-myanmar-earthquake"]
    for split in ("val", "test"):  # every article is in every held-out split; nothing held out is trained on
        assert {i.id.rsplit("-direct-", 1)[0] for i in task.eval_splits[split]} == set(texts)
    held_out = {i.id for split, items in task.eval_splits.items() if split != "train" for i in items}
    assert not held_out & {e.id for e in task.train}


def test_knowledge_split_is_deterministic_order_free_and_per_article():
    rows = qa_rows()
    splits = knowledge_splits(rows)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)

    def ids(result):
        return {split: sorted(row["id"] for row in chosen) for split, chosen in result.items()}
    assert ids(knowledge_splits(shuffled)) == ids(splits)
    assert ids(knowledge_splits(rows, seed=1)) != ids(splits)
    # Adding an article leaves the other articles' splits as they were.
    extra = qa_rows([{"id": "typhoon-kalmaegi", "title": "Typhoon Kalmaegi"}])
    grown = ids(knowledge_splits(rows + extra))
    assert {split: [i for i in chosen if not i.startswith("typhoon")] for split, chosen in grown.items()} == ids(splits)


def test_task_data_folder_defaults_to_data_paper(monkeypatch):
    monkeypatch.delenv("SDFT_PAPER_DATA", raising=False)
    assert paper_tasks.data_dir() == paper_tasks.DEFAULT_DATA_DIR and paper_tasks.DEFAULT_DATA_DIR.parts[-2:] == \
        ("data", "paper")


# --- Tool-call scoring -----------------------------------------------------------------------------------------------
CALL_1 = f'Action: {SEARCH}\nAction Input: {{"color": "albino", "limit": 3}}'
CALL_2 = f"Action: {RANDOM}\nAction Input: {{}}"


@pytest.mark.parametrize("response, correct, action_correct", [
    (f"{CALL_1}\n\n{CALL_2}", True, True),
    (f'Action: {SEARCH}\nAction Input: {{"limit": 3.0, "color": " Albino"}}\n{CALL_2}', True, True),  # order, 3.0
    (f"Thought: search first.\n{CALL_1}\nObservation: [...]\nThought: now one at random.\n{CALL_2}\n"
     "Observation: {...}\nFinal Answer: here they are.", True, True),  # text before, between and after
    (f'Action: {SEARCH}\nAction Input: ```json\n{{"color": "albino", "limit": 3}}\n```\n\n{CALL_2}', True, True),
    (CALL_1, False, False),  # a call missing
    (f"{CALL_2}\n\n{CALL_1}", False, False),  # right calls, wrong order
    (f"{CALL_1}\n\n{CALL_2}\n\n{CALL_2}", False, False),  # one call too many
    (f'Action: {SEARCH}\nAction Input: {{"color": "albino", "limit": 3\n\n{CALL_2}', False, True),  # broken JSON
    (f"Action: {SEARCH}\nAction Input: color=albino, limit=3\n\n{CALL_2}", False, True),  # not JSON
    (f'Action: {SEARCH}\nAction Input: {{"color": "albino", "limit": "3"}}\n\n{CALL_2}', False, True),  # "3" != 3
    (f'Action: {SEARCH}\nAction Input: {{"color": "albino"}}\n\n{CALL_2}', False, True),  # argument missing
    (f'Action: {SEARCH}\nAction Input: {{"color": "albino", "limit": 3, "x": 1}}\n\n{CALL_2}', False, True),  # extra
    (f"{CALL_1}\n\nAction: getrandomaxolotlimage\nAction Input: {{}}", False, False),  # names are exact
    (f'{SEARCH}({{"color": "albino", "limit": 3}})', False, False),  # not the format
    ("", False, False),
])
def test_tool_calls_scorer(response, correct, action_correct):
    assert score_tool_calls(response, {"golden_actions": GOLDEN}) == {"correct": correct,
                                                                      "action_correct": action_correct}


def test_golden_inputs_empty_or_not_json():
    assert score_tool_calls(CALL_2, {"golden_actions": [{"action": RANDOM, "action_input": ""}]})["correct"]
    golden = {"golden_actions": [{"action": "lookup", "action_input": "word = axolotl"}]}
    assert score_tool_calls("Action: lookup\nAction Input: word  =  axolotl\nObservation: x", golden)["correct"]
    assert not score_tool_calls("Action: lookup\nAction Input: word = newt", golden)["correct"]


def test_tool_use_description_counts_golden_inputs_that_are_not_json(paper_data):
    rows = [json.loads(line) for line in (paper_data / "toolalpaca" / "test.jsonl").read_text().splitlines()]
    rows[2]["golden_actions"] = [{"action": "lookup", "action_input": "word = axolotl"}]
    write_jsonl(paper_data / "toolalpaca" / "test.jsonl", rows)
    assert "1 golden Action Inputs are not JSON" in load_task("paper_tool_use").description


# --- Multiple choice -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("response, correct", [
    ("Esters hydrolyse in base.\nAnswer: B", True), ("The answer is (B).", True), ("\\boxed{B}", True),
    ("Answer: C", False), ("It could be B or C.", False), ("", False),
])
def test_multiple_choice_scorer(response, correct):
    assert score_multiple_choice(response, {"answer": "B"}) == {"correct": correct}


# --- Judge-based scoring through the fake server ---------------------------------------------------------------------
def verdict_from_response(body):
    """The judge says what the model response asks for: 'say X' → X."""
    prompt = body["messages"][-1]["content"]
    response = prompt.split("[Model Response]\n", 1)[1]
    return response.split("say ", 1)[1].split("\n", 1)[0]


@pytest.fixture
def judge_server(fake_server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.base_url)
    monkeypatch.setenv("SDFT_JUDGE_CACHE_DIR", str(tmp_path / "judge_cache"))
    fake_server.responder = verdict_from_response
    return fake_server


def test_knowledge_judge_verdicts_map_to_strict_and_lenient(paper_data, judge_server):
    task = load_task("paper_knowledge")
    reference = task.eval_splits["test"][0].reference
    expected = {
        "CORRECT": {"correct": True, "strict": True, "lenient": True, "judged": True},
        "PARTIALLY_CORRECT": {"correct": False, "strict": False, "lenient": True, "judged": True},
        "INCORRECT": {"correct": False, "strict": False, "lenient": False, "judged": True},
        "I think it is mostly right": {"correct": False, "strict": False, "lenient": False, "judged": False},
    }
    for verdict, result in expected.items():
        assert task.score(f"say {verdict}", reference) == result, verdict
    body = judge_server.posts[0]
    assert body["model"] == "gpt-5-mini" and "temperature" not in body
    assert body["messages"] == [{"role": "user", "content": KNOWLEDGE_PROMPT.format(
        question=reference["question"], reference_answer=reference["answer"], model_response="say CORRECT")}]
    # A batch through score_many is concurrent, in order, and served from the same cache.
    responses = [f"say {verdict}" for verdict in expected]
    assert task.score.score_many(responses, [reference] * 4) == list(expected.values())
    assert len(judge_server.posts) == 4


def test_medical_judge_verdicts(paper_data, judge_server):
    task = load_task("paper_medical")
    reference = task.eval_splits["test"][0].reference
    assert task.score("say CORRECT", reference) == {"correct": True, "judged": True}
    assert task.score("say INCORRECT", reference) == {"correct": False, "judged": True}
    # The medical rubric has no PARTIALLY_CORRECT: such a verdict is unparseable, as is garbage.
    assert task.score("say PARTIALLY_CORRECT", reference) == {"correct": False, "judged": False}
    assert task.score("say The response is correct.", reference) == {"correct": False, "judged": False}
    assert judge_server.posts[0]["messages"][0]["content"] == MEDICAL_PROMPT.format(
        question="Verifiable question 7?", reference_answer="Diagnosis 7", model_response="say CORRECT")


# --- Missing files and malformed rows --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, missing, command", [
    ("paper_tool_use", "toolalpaca/test.jsonl", "python -m data_prep.paper_datasets --datasets toolalpaca"),
    ("paper_science", "sciknoweval/train_demonstrations.jsonl", "python -m data_prep.demonstrations --input-path"),
    ("paper_medical", "medical/train.jsonl", "python -m data_prep.paper_datasets --datasets medical"),
    ("paper_knowledge", "knowledge/qa.jsonl", "python -m data_prep.qa_generation --articles-path"),
    ("paper_knowledge", "knowledge/articles.jsonl", "python -m data_prep.paper_datasets --datasets wikipedia"),
])
def test_missing_file_names_the_path_and_the_command(paper_data, name, missing, command):
    (paper_data / missing).unlink()
    with pytest.raises(MissingPaperData) as raised:
        load_task(name)
    message = str(raised.value)
    assert str(paper_data / missing) in message and command in message and "SDFT_PAPER_DATA" in message


def test_nothing_built_lists_every_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SDFT_PAPER_DATA", str(tmp_path / "empty"))
    with pytest.raises(MissingPaperData) as raised:
        load_task("paper_science")
    assert str(raised.value).count("build it with") == 4


def rewrite(path, number, change):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows[number - 1])
    write_jsonl(path, rows)


@pytest.mark.parametrize("name, file, number, change, message", [
    ("paper_tool_use", "toolalpaca/train.jsonl", 2, lambda row: row.pop("demonstration"),
     r"train\.jsonl, row 2, field 'demonstration': missing field"),
    ("paper_tool_use", "toolalpaca/test.jsonl", 1, lambda row: row["golden_actions"][1].update(action_input={}),
     r"test\.jsonl, row 1, field 'golden_actions\[1\]\.action_input': missing or not a string"),
    ("paper_tool_use", "toolalpaca/test.jsonl", 3, lambda row: row.update(golden_actions=[]),
     r"test\.jsonl, row 3, field 'golden_actions': is empty"),
    ("paper_science", "sciknoweval/test.jsonl", 2, lambda row: row.update(answer="two"),
     r"test\.jsonl, row 2, field 'answer': .*one option letter"),
    ("paper_science", "sciknoweval/train_demonstrations.jsonl", 2, lambda row: row.update(id="elsewhere"),
     r"train_demonstrations\.jsonl, row 2, field 'id': 'elsewhere' is not in .*train\.jsonl"),
    ("paper_science", "sciknoweval/train_demonstrations.jsonl", 1, lambda row: row.update(demonstration="Answer: C"),
     r"train_demonstrations\.jsonl, row 1, field 'demonstration': its final answer is not 'A'"),
    ("paper_medical", "medical/test.jsonl", 2, lambda row: row.update(answer=""),
     r"test\.jsonl, row 2, field 'answer': is empty"),
    ("paper_knowledge", "knowledge/qa.jsonl", 3, lambda row: row.update(article_id="atlantis"),
     r"qa\.jsonl, row 3, field 'article_id': unknown article 'atlantis'"),
    ("paper_knowledge", "knowledge/qa.jsonl", 4, lambda row: row.update(kind="sideways"),
     r"qa\.jsonl, row 4, field 'kind': must be one of"),
])
def test_malformed_rows_name_file_row_and_field(paper_data, name, file, number, change, message):
    rewrite(paper_data / file, number, change)
    with pytest.raises(DatasetError, match=message):
        load_task(name)
