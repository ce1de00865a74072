"""Paper-scale data preparation, offline: demonstrations and Q&A through the fake OpenAI-compatible server, dataset
builders on small fixture rows (hub loading replaced, HTTP sources served by the same local server)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import pytest
from test_openai_client import client_config, fake_server  # noqa: F401 (fixtures shared with the client tests)

from data_prep import paper_datasets
from data_prep.demonstrations import DemonstrationConfig, build_demonstrations
from data_prep.paper_datasets import PaperDatasetsConfig
from data_prep.qa_generation import EXAM_PROMPT, QAGenerationConfig, generate_qa, parse_qa
from sdft_core.data import DatasetError, Example
from sdft_core.openai_client import MissingCredentialsError
from tasks.knowledge import load_articles
from tasks.multiple_choice import extract_choice, multiple_choice_matches


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def as_example(row: dict) -> Example:
    """Rows meant for training must carry the fields of sdft_core.data.Example."""
    return Example(**{f.name: row[f.name] for f in dataclasses.fields(Example) if f.name in row})


# --- Multiple-choice answers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("response, letter", [
    ("Esters hydrolyse in base.\nAnswer: B", "B"),
    ("The correct answer is (C).", "C"),
    ("**Answer:** D", "D"),
    ("So the final answer is \\boxed{A}.", "A"),
    ("Option A is wrong and option C too. The answer is B because it is aromatic.", "B"),
    ("Answer: B\nOn reflection that is wrong.\nFinal answer: C", "C"),
    ("Working...\n\n(C)", "C"),
    ("C.", "C"),
    ("The answer is a mixture of isomers.", None),
    ("The answer is A typical ester, so I cannot tell.", None),
    ("It could be B or C.", None),
    ("", None),
])
def test_extract_choice(response, letter):
    assert extract_choice(response) == letter


def test_multiple_choice_matches_ground_truth_forms():
    assert multiple_choice_matches("Answer: B", "B") and multiple_choice_matches("Answer: B", "(b)")
    assert not multiple_choice_matches("Answer: C", "B")
    with pytest.raises(ValueError, match="one option letter"):
        multiple_choice_matches("Answer: B", "benzene")


# --- Demonstrations --------------------------------------------------------------------------------------------------
PROMPTS = [{"id": "q1", "prompt": "Q1?", "answer": "B"}, {"id": "q2", "prompt": "Q2?", "answer": "C"},
           {"id": "q3", "prompt": "Q3?", "answer": "A"}]


def scripted_solver(body):
    """q1 is right at once, q2 from its third sample on (seed 2), q3 never."""
    prompt, seed = body["messages"][-1]["content"], body["seed"]
    if prompt == "Q1?":
        return "Reasoning.\nAnswer: B"
    if prompt == "Q2?":
        return "Answer: C" if seed >= 2 else "Answer: A"
    return "Answer: D"


def test_demonstration_yield_and_resume(fake_server, client_config, tmp_path):
    fake_server.responder = scripted_solver
    output = tmp_path / "demos.jsonl"
    config = client_config(DemonstrationConfig, input_path=write_jsonl(tmp_path / "train.jsonl", PROMPTS),
                           output_path=str(output), max_samples=8, seed=0)
    summary = build_demonstrations(config)
    assert summary["yield"] == pytest.approx(2 / 3) and summary["with_demonstration"] == 2
    assert summary["samples_used"] == {"1": 1, "3": 1} and summary["without_demonstration"] == ["q3"]
    # Round 1 asks all three, rounds 2–3 ask q2 and q3, rounds 4–8 ask q3 alone.
    assert len(fake_server.posts) == 3 + 2 * 2 + 5
    assert sorted(b["seed"] for b in fake_server.posts if b["messages"][-1]["content"] == "Q3?") == list(range(8))
    assert all(b["temperature"] == 1.0 for b in fake_server.posts)
    rows = read_jsonl(output)
    assert [(r["id"], r["demonstration"], r["samples_used"]) for r in rows] == [
        ("q1", "Reasoning.\nAnswer: B", 1), ("q2", "Answer: C", 3)]
    assert as_example(rows[0]) == Example("q1", "Q1?", "Reasoning.\nAnswer: B")
    saved = json.loads((tmp_path / "demos.summary.json").read_text())
    assert saved["yield"] == pytest.approx(2 / 3)

    # Rerun: q1 and q2 are skipped as done, q3's eight samples come from the cache: no request at all.
    before = output.read_text()
    again = build_demonstrations(config)
    assert len(fake_server.posts) == 12 and output.read_text() == before and again["yield"] == summary["yield"]


def test_demonstrations_with_a_custom_matcher(fake_server, client_config, tmp_path):
    fake_server.responder = lambda body: "The product is ethanol."
    rows = [{"id": "x", "prompt": "P", "answer": "ethanol"}]
    config = client_config(DemonstrationConfig, output_path=str(tmp_path / "out.jsonl"), max_samples=2,
                           input_path=write_jsonl(tmp_path / "in.jsonl", rows))
    summary = build_demonstrations(config, answer_matches=lambda response, truth: truth in response)
    assert summary["yield"] == 1.0 and len(fake_server.posts) == 1


def test_demonstrations_missing_key_stops_before_any_work(fake_server, client_config, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    config = client_config(DemonstrationConfig, input_path=str(tmp_path / "not-even-read.jsonl"),
                           output_path=str(tmp_path / "out.jsonl"))
    with pytest.raises(MissingCredentialsError, match="OPENAI_API_KEY"):
        build_demonstrations(config)
    assert fake_server.posts == [] and not (tmp_path / "out.jsonl").exists()


def test_demonstrations_bad_input_names_row_and_field(fake_server, client_config, tmp_path):
    bad = write_jsonl(tmp_path / "in.jsonl", [PROMPTS[0], {"id": "q2", "prompt": "Q2?"}])
    config = client_config(DemonstrationConfig, input_path=bad, output_path=str(tmp_path / "out.jsonl"))
    with pytest.raises(DatasetError, match=r"in\.jsonl, row 2, field 'answer': missing field"):
        build_demonstrations(config)
    assert fake_server.posts == []


# --- Q&A generation --------------------------------------------------------------------------------------------------
REPLY = """Here are the questions:

1. **Question:** When did the earthquake strike?
**Answer:** On 28 March 2025.

Question 2: Which city
was worst hit?
Answer: Mandalay, with
most damage near the river.

Question: What was the magnitude?

Question: when did the  earthquake strike?
Answer: In March 2025.

Answer: A stray answer.

Question: Who led the response?
Answer: The national rescue agency.

I hope these help!"""


def test_parse_qa_reads_pairs_reports_unparseable_and_drops_duplicates():
    parsed = parse_qa(REPLY)
    assert parsed.pairs == [
        ("When did the earthquake strike?", "On 28 March 2025."),
        ("Which city\nwas worst hit?", "Mandalay, with\nmost damage near the river."),
        ("Who led the response?", "The national rescue agency."),
    ]
    assert parsed.unparseable == ["Question: What was the magnitude?", "Answer: A stray answer."]
    assert parsed.duplicates == 1
    assert parse_qa("I cannot help with that.").pairs == []


ARTICLES = [{"id": "a1", "title": "2025 Myanmar earthquake", "text": "A strong earthquake struck in March 2025."},
            {"id": "a2", "title": "Hurricane Melissa", "text": "Melissa hit Jamaica in October 2025."}]


def qa_writer(body):
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    title = user.splitlines()[0]
    if system == EXAM_PROMPT:
        return (f"Question: What happened in {title}?\nAnswer: Something.\n\n"
                "Question: Which year is this corpus about?\nAnswer: 2025.\n\nQuestion: Unanswered?")
    return f"Question: Which country needed aid after {title}?\nAnswer: One.\n"


def test_generate_qa_end_to_end_and_resume(fake_server, client_config, tmp_path):
    fake_server.responder = qa_writer
    output = tmp_path / "qa.jsonl"
    config = client_config(QAGenerationConfig, articles_path=write_jsonl(tmp_path / "articles.jsonl", ARTICLES),
                           output_path=str(output), indirect_questions_per_article=3)
    summary = generate_qa(config)
    assert len(fake_server.posts) == 4
    assert all(b["model"] == "gpt-5" and "temperature" not in b for b in fake_server.posts)
    assert {b["messages"][0]["content"] for b in fake_server.posts} >= {EXAM_PROMPT}
    assert any("Write 3 questions" in b["messages"][0]["content"] for b in fake_server.posts)
    users = {b["messages"][1]["content"] for b in fake_server.posts}
    assert users == {"2025 Myanmar earthquake\n\nA strong earthquake struck in March 2025.",
                     "Hurricane Melissa\n\nMelissa hit Jamaica in October 2025."}
    rows = read_jsonl(output)
    assert [(r["id"], r["kind"]) for r in rows] == [
        ("a1-direct-001", "direct"), ("a1-direct-002", "direct"), ("a1-indirect-001", "indirect"),
        ("a2-direct-001", "direct"), ("a2-indirect-001", "indirect")]  # a2's "Which year" question was a duplicate
    assert summary["pairs"] == {"direct": 3, "indirect": 2}
    assert summary["unparseable_blocks"] == 2 and summary["duplicates_dropped"] == 1

    before = output.read_text()
    generate_qa(config)
    assert len(fake_server.posts) == 4 and output.read_text() == before


# --- ToolAlpaca ------------------------------------------------------------------------------------------------------
DOCS = ("getRandomAxolotlImage: A random picture.\nParameters: {}\n"
        "searchAxolotlImages: Search.\nParameters: {\"color\": \"string\"}")
TRAIN_APIS = [
    {"Name": "Axolotl", "Description": "Axolotl pictures and facts", "NLDocumentation": DOCS,
     "Function_Description": {"getRandomAxolotlImage": "..."},
     "Instances": [
         {"input": "Show me a random axolotl.\nHint: the API has an image endpoint", "output": "Here it is.",
          "intermediate_steps": [[["getDetails", "{}", "Thought: read docs"], "docs"],
                                 [["getRandomAxolotlImage", "{}", "Thought: call it"], "{\"url\": \"u\"}"]]},
         {"input": "Hello!", "output": "Hi.", "intermediate_steps": []},
         {"input": "Docs only", "intermediate_steps": [[["getDetails", "{}", "t"], "docs"]]},
         {"input": "Albino ones, then a random one.",
          "intermediate_steps": [[["searchAxolotlImages", "{\"color\": \"albino\"}", "t"], "o"],
                                 [["getRandomAxolotlImage", "{}", "t"], "o"]]},
     ]},
    {"Name": "Undocumented", "Description": "No docs", "Function_Description": None, "Instances": []},
]
TEST_APIS = [
    {"Name": "Axolotl", "Description": "Axolotl pictures and facts", "NLDocumentation": DOCS,
     "Function_Description": {"getRandomAxolotlImage": "..."},
     "Instructions": ["A random axolotl, please.", "Albino axolotls?"],
     "Golden_Answers": [[{"Action": "getRandomAxolotlImage", "Action_Input": "{}"}],
                        [{"Action": "searchAxolotlImages", "Action_Input": "{\"color\": \"albino\"}"}]]},
]


def test_toolalpaca_builder_over_http_and_rerun_skips(fake_server, tmp_path):
    fake_server.get_routes = {"/train_data.json": lambda q: TRAIN_APIS, "/eval_simulated.json": lambda q: TEST_APIS}
    config = PaperDatasetsConfig(datasets="toolalpaca", output_dir=str(tmp_path),
                                 toolalpaca_train=f"{fake_server.root}/train_data.json",
                                 toolalpaca_test=f"{fake_server.root}/eval_simulated.json")
    paper_datasets.build(config)
    train = read_jsonl(tmp_path / "toolalpaca" / "train.jsonl")
    assert [row["id"] for row in train] == ["toolalpaca-train-0001-00", "toolalpaca-train-0001-03"]
    first = as_example(train[0])
    assert DOCS in first.prompt and "User request: Show me a random axolotl." in first.prompt
    assert "Hint" not in first.prompt
    assert first.demonstration == "Action: getRandomAxolotlImage\nAction Input: {}"  # getDetails dropped
    assert train[1]["demonstration"] == ("Action: searchAxolotlImages\nAction Input: {\"color\": \"albino\"}\n\n"
                                         "Action: getRandomAxolotlImage\nAction Input: {}")
    test = read_jsonl(tmp_path / "toolalpaca" / "test.jsonl")
    assert [row["golden_actions"] for row in test] == [
        [{"action": "getRandomAxolotlImage", "action_input": "{}"}],
        [{"action": "searchAxolotlImages", "action_input": "{\"color\": \"albino\"}"}]]
    summary = json.loads((tmp_path / "toolalpaca" / "summary.json").read_text())
    assert summary["train_stats"]["skipped"] == {"API without Function_Description": 1,
                                                 "instance without tool calls": 1,
                                                 "instance calling only getDetails": 1}
    assert len(fake_server.gets) == 2
    paper_datasets.build(config)
    assert len(fake_server.gets) == 2  # up to date: nothing fetched again


def test_toolalpaca_schema_errors_name_the_field():
    broken = [{key: value for key, value in TRAIN_APIS[0].items() if key != "NLDocumentation"}]
    with pytest.raises(DatasetError, match=r"train\.json, row 1, field 'NLDocumentation': missing field"):
        paper_datasets.toolalpaca_train_rows("train.json", broken)
    bad_step = [dict(TRAIN_APIS[0], Instances=[{"input": "x", "intermediate_steps": [["oops"]]}])]
    with pytest.raises(DatasetError, match=r"field 'Instances\[0\]\.intermediate_steps\[0\]'"):
        paper_datasets.toolalpaca_train_rows("train.json", bad_step)
    uneven = [dict(TEST_APIS[0], Golden_Answers=TEST_APIS[0]["Golden_Answers"][:1])]
    with pytest.raises(DatasetError, match=r"field 'Golden_Answers': has 1 entries for 2 Instructions"):
        paper_datasets.toolalpaca_test_rows("eval.json", uneven)


# --- SciKnowEval -----------------------------------------------------------------------------------------------------
def sciknoweval_row(number, domain="Chemistry", level="L3", **overrides):
    row = {"question": f"Which reagent works in reaction {number}?", "domain": domain, "type": "mcq-4-choices",
           "choices": {"text": [f"reagent {number}-{k}" for k in range(4)], "label": ["A", "B", "C", "D"]},
           "answerKey": "ABCD"[number % 4], "details": {"level": level, "task": "reaction", "source": "x"}}
    row.update(overrides)
    return row


SCIKNOWEVAL_ROWS = ([sciknoweval_row(i) for i in range(40)]
                    + [sciknoweval_row(100, domain="Biology"), sciknoweval_row(101, level="L2"),
                       sciknoweval_row(102, choices={"text": [], "label": []}, answerKey="", type="open-ended-qa"),
                       sciknoweval_row(103, answerKey="E"), sciknoweval_row(5)])


def test_sciknoweval_split_is_filtered_deterministic_and_order_free():
    splits, stats = paper_datasets.sciknoweval_splits("hub", SCIKNOWEVAL_ROWS, seed=0)
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 30, "val": 2, "test": 8}
    assert stats["skipped"] == {"other domain or level": 2, "not multiple choice": 1,
                                "answerKey not among the option labels": 1, "duplicate question and options": 1}
    ids = [row["id"] for rows in splits.values() for row in rows]
    assert len(set(ids)) == 40
    again, _ = paper_datasets.sciknoweval_splits("hub", list(reversed(SCIKNOWEVAL_ROWS)), seed=0)
    assert again == splits  # same seed, same split, whatever order the hub returns rows in
    other, _ = paper_datasets.sciknoweval_splits("hub", SCIKNOWEVAL_ROWS, seed=1)
    assert [r["id"] for r in other["train"]] != [r["id"] for r in splits["train"]]
    example = splits["test"][0]
    assert "\nA. reagent" in example["prompt"] and example["prompt"].endswith("letter of the correct option.")
    assert example["answer"] in "ABCD"


def test_hub_rows_are_checked_for_the_fields_the_builders_read(monkeypatch):
    calls = []

    def load_dataset(dataset, config, split):
        calls.append((dataset, config, split))
        return [sciknoweval_row(1), {k: v for k, v in sciknoweval_row(2).items() if k != "answerKey"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DatasetError, match=r"hf://hicai-zju/SciKnowEval \(v2\) \[test\], row 2, field 'answerKey'"):
        paper_datasets.load_hub_rows(paper_datasets.SCIKNOWEVAL)
    assert calls == [("hicai-zju/SciKnowEval", "v2", "test")]


def test_sciknoweval_builder_writes_splits_and_skips_when_up_to_date(monkeypatch, tmp_path):
    loads = []
    monkeypatch.setattr(paper_datasets, "load_hub_rows", lambda source: loads.append(source) or SCIKNOWEVAL_ROWS)
    config = PaperDatasetsConfig(datasets="sciknoweval", output_dir=str(tmp_path), seed=3)
    paper_datasets.build(config)
    folder = tmp_path / "sciknoweval"
    assert [len(read_jsonl(folder / f"{name}.jsonl")) for name in ("train", "val", "test")] == [30, 2, 8]
    paper_datasets.build(config)
    assert len(loads) == 1
    paper_datasets.build(dataclasses.replace(config, seed=4))  # other settings: rebuilt
    assert len(loads) == 2


# --- HuatuoGPT-o1 ----------------------------------------------------------------------------------------------------
MEDICAL_SFT_ROWS = [{"Question": f"Case {i}: what is the diagnosis?", "Complex_CoT": "long reasoning",
                     "Response": f"Diagnosis {i}."} for i in range(5)]
VERIFIABLE_ROWS = [{"Open-ended Verifiable Question": f"Case {i}: what is the diagnosis?",
                    "Ground-True Answer": f"Diagnosis {i}"} for i in range(3, 15)]


def test_medical_rows_sampled_by_seed_without_training_overlap(monkeypatch, tmp_path):
    sources = {paper_datasets.MEDICAL_SFT: MEDICAL_SFT_ROWS, paper_datasets.MEDICAL_VERIFIABLE: VERIFIABLE_ROWS}
    monkeypatch.setattr(paper_datasets, "load_hub_rows", lambda source: sources[source])
    config = PaperDatasetsConfig(datasets="medical", output_dir=str(tmp_path), medical_eval_size=5, seed=0)
    paper_datasets.build(config)
    train = read_jsonl(tmp_path / "medical" / "train.jsonl")
    assert as_example(train[0]) == Example("medical-train-00001", "Case 0: what is the diagnosis?", "Diagnosis 0.")
    test = read_jsonl(tmp_path / "medical" / "test.jsonl")
    assert len(test) == 5 and not {row["prompt"] for row in test} & {row["prompt"] for row in train}
    summary = json.loads((tmp_path / "medical" / "summary.json").read_text())
    assert summary["eval_stats"] == {"rows": 12, "excluded_as_in_training": 2, "eligible": 10, "sampled": 5}
    same, _ = paper_datasets.medical_eval_rows("hub", VERIFIABLE_ROWS, 5, 0, set())
    other, _ = paper_datasets.medical_eval_rows("hub", VERIFIABLE_ROWS, 5, 1, set())
    assert same == paper_datasets.medical_eval_rows("hub", VERIFIABLE_ROWS, 5, 0, set())[0] and same != other
    with pytest.raises(ValueError, match="asked for 13 evaluation questions, only 12 are eligible"):
        paper_datasets.medical_eval_rows("hub", VERIFIABLE_ROWS, 13, 0, set())
    with pytest.raises(DatasetError, match=r"row 1, field 'Ground-True Answer': missing field"):
        paper_datasets.medical_eval_rows("hub", [{"Open-ended Verifiable Question": "q"}], 1, 0, set())


# --- Wikipedia -------------------------------------------------------------------------------------------------------
PAGES = {
    "2025 Myanmar earthquake": {"pageid": 1, "title": "2025 Myanmar earthquake", "revisions": [{"revid": 111}],
                                "fullurl": "https://en.wikipedia.org/wiki/2025_Myanmar_earthquake",
                                "extract": "On 28 March 2025, a magnitude 7.7 earthquake struck Myanmar."},
    "Hurricane Melissa": {"pageid": 2, "title": "Hurricane Melissa", "revisions": [{"revid": 222}],
                          "extract": "Hurricane Melissa struck Jamaica in October 2025."},
    "Typhoon Old": {"pageid": 3, "title": "Typhoon Old", "extract": "A typhoon of 1999."},
    "Storm": {"pageid": 4, "title": "Storm", "pageprops": {"disambiguation": ""}, "extract": "Storm may refer to"},
}


def mediawiki(query):
    if query.get("list") == "search":
        return {"query": {"search": [{"title": "2025 Myanmar earthquake"}, {"title": "Hurricane Melissa"}]}}
    assert query["explaintext"] == "1" and query["redirects"] == "1" and "extracts" in query["prop"]
    title = query["titles"]
    return {"query": {"pages": [PAGES.get(title, {"title": title, "missing": True})]}}


def test_wikipedia_articles_through_the_mediawiki_api(fake_server, monkeypatch, tmp_path):
    fake_server.get_routes = {"/w/api.php": mediawiki}
    api = f"{fake_server.root}/w/api.php"
    monkeypatch.setattr(paper_datasets, "DISASTER_ARTICLES", {"2025 Myanmar earthquake": "2025 Myanmar earthquake",
                                                              "Hurricane Melissa": "Hurricane Melissa"})
    paper_datasets.build(PaperDatasetsConfig(datasets="wikipedia", output_dir=str(tmp_path), wikipedia_api=api))
    articles = load_articles(tmp_path / "knowledge")  # the format the knowledge task already reads
    assert sorted(articles) == ["2025-myanmar-earthquake", "hurricane-melissa"]
    assert articles["hurricane-melissa"].text == "Hurricane Melissa struck Jamaica in October 2025."
    row = read_jsonl(tmp_path / "knowledge" / "articles.jsonl")[0]
    assert (row["revision_id"], row["paper_name"]) == (111, "2025 Myanmar earthquake")

    with pytest.raises(LookupError, match=r"no article 'Cyclone Nowhere'; closest titles: \['2025 Myanmar"):
        paper_datasets.fetch_wikipedia_article(api, "Cyclone Nowhere")
    with pytest.raises(LookupError, match="disambiguation page"):
        paper_datasets.fetch_wikipedia_article(api, "Storm")
    with pytest.raises(LookupError, match="never mentions 2025"):
        paper_datasets.fetch_wikipedia_article(api, "Typhoon Old")


def test_paper_datasets_config_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="unknown \\['toolbench'\\]"):
        PaperDatasetsConfig(datasets="toolalpaca,toolbench")
