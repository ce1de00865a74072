"""The LLM judge: the paper's rubrics, strict verdict parsing, accuracies, agreement with the fact matcher; judge calls
go through the real client to the fake OpenAI-compatible server of test_openai_client.py."""

from __future__ import annotations

import json

import pytest
from test_openai_client import API_KEY, client_config, fake_server  # noqa: F401 (fixtures shared with the client tests)

from sdft_core.eval.fact_matcher import score_facts
from sdft_core.eval.judge import KNOWLEDGE_PROMPT, MEDICAL_PROMPT, RUBRICS, UNPARSEABLE, JudgeConfig, JudgeItem, \
    agreement, cohen_kappa, fact_matcher_agreement, judge_responses, make_verdict, parse_verdict, run_judge, \
    summarize
from sdft_core.openai_client import ChatClient, MissingCredentialsError

KNOWLEDGE, MEDICAL = RUBRICS["knowledge"], RUBRICS["medical"]


def test_rubrics_are_the_papers():
    assert KNOWLEDGE_PROMPT.startswith(
        "You are an expert evaluator assessing whether a model's response correctly answers a question.\n\n")
    assert ("2. PARTIALLY_CORRECT: The response contains most of the key information from the reference answer but "
            "misses some details.") in KNOWLEDGE_PROMPT
    assert KNOWLEDGE_PROMPT.endswith('Output ONLY one of: "CORRECT", "PARTIALLY_CORRECT", or "INCORRECT".')
    assert MEDICAL_PROMPT.startswith("You are an expert medical evaluator assessing whether a model’s response")
    assert MEDICAL_PROMPT.endswith('Output ONLY one of: "CORRECT" or "INCORRECT".')
    filled = MEDICAL.prompt("What causes {this}?", "Iron deficiency.", "Low iron {probably}.")
    assert "[Medical Question]\nWhat causes {this}?\n[Reference Answer]\nIron deficiency.\n[Model Response]\n" \
           "Low iron {probably}.\nEvaluate" in filled


@pytest.mark.parametrize("output, rubric, label", [
    ("CORRECT", KNOWLEDGE, "CORRECT"),
    ("  PARTIALLY_CORRECT\n", KNOWLEDGE, "PARTIALLY_CORRECT"),
    ('"INCORRECT".', KNOWLEDGE, "INCORRECT"),
    ("**Correct**", KNOWLEDGE, "CORRECT"),
    ("`INCORRECT`", MEDICAL, "INCORRECT"),
    ("PARTIALLY_CORRECT", MEDICAL, UNPARSEABLE),  # not a label of the medical rubric
    ("The response is CORRECT.", KNOWLEDGE, UNPARSEABLE),
    ("CORRECT or INCORRECT", KNOWLEDGE, UNPARSEABLE),
    ("PARTIALLY CORRECT", KNOWLEDGE, UNPARSEABLE),
    ("", KNOWLEDGE, UNPARSEABLE),
])
def test_parse_verdict_is_strict(output, rubric, label):
    assert parse_verdict(output, rubric) == label


def test_verdicts_map_to_strict_and_lenient():
    right = make_verdict("a", "CORRECT", KNOWLEDGE)
    assert (right.strict, right.lenient) == (True, True)
    partial = make_verdict("b", "PARTIALLY_CORRECT", KNOWLEDGE)
    assert (partial.strict, partial.lenient) == (False, True)
    wrong = make_verdict("c", "INCORRECT", KNOWLEDGE)
    assert (wrong.strict, wrong.lenient) == (False, False)
    garbled = make_verdict("d", "I think it is fine", KNOWLEDGE)
    assert (garbled.label, garbled.strict, garbled.lenient) == (UNPARSEABLE, None, None)


def test_summary_counts_unparseable_apart_from_the_accuracies():
    verdicts = [make_verdict(str(i), output, KNOWLEDGE) for i, output in
                enumerate(["CORRECT", "PARTIALLY_CORRECT", "INCORRECT", "CORRECT", "no idea"])]
    summary = summarize(verdicts, "knowledge")
    assert summary.counts == {"CORRECT": 2, "PARTIALLY_CORRECT": 1, "INCORRECT": 1, UNPARSEABLE: 1}
    assert summary.unparseable_ids == ["4"]
    assert (summary.strict_accuracy, summary.lenient_accuracy) == (0.5, 0.75)  # over the 4 parsed verdicts
    assert "1 unparseable" in summary.line()
    assert summarize([make_verdict("x", "??", MEDICAL)], "medical").strict_accuracy is None


def test_cohen_kappa_and_agreement():
    assert cohen_kappa([True, True, False, False], [True, False, False, False]) == pytest.approx(0.5)
    assert cohen_kappa([True, False], [True, False]) == pytest.approx(1.0)
    assert cohen_kappa([True, False], [False, True]) == pytest.approx(-1.0)
    assert cohen_kappa([True, True], [True, True]) is None  # chance agreement is 1: kappa undefined
    result = agreement([True, None, False, True], [True, True, True, True])
    assert (result.compared, result.skipped_unparseable, result.agreement) == (3, 1, pytest.approx(2 / 3))
    assert result.kappa == pytest.approx(0.0)  # the matcher says yes to everything: no agreement beyond chance


FACTS = [["Kessrin"], ["March 2025"]]
ITEMS = [
    JudgeItem("r1", "Where and when?", "Kessrin, March 2025.", "In Kessrin, in March 2025.", FACTS, ["Oldrey"]),
    JudgeItem("r2", "Where and when?", "Kessrin, March 2025.", "In Kessrin.", FACTS, ["Oldrey"]),
    JudgeItem("r3", "Where and when?", "Kessrin, March 2025.", "In Oldrey, March 2025.", FACTS, ["Oldrey"]),
    JudgeItem("r4", "Where and when?", "Kessrin, March 2025.", "Somewhere, some time.", FACTS, ["Oldrey"]),
    JudgeItem("r5", "Where and when?", "Kessrin, March 2025.", "Kessrin, 2025.", FACTS, ["Oldrey"]),
]
# What the scripted judge answers to each response (r5's verdict is garbled).
JUDGE_SAYS = {"In Kessrin, in March 2025.": "CORRECT", "In Kessrin.": "PARTIALLY_CORRECT",
              "In Oldrey, March 2025.": "PARTIALLY_CORRECT", "Somewhere, some time.": "INCORRECT",
              "Kessrin, 2025.": "Mostly correct, I would say."}


def scripted_judge(body):
    prompt = body["messages"][-1]["content"]
    response = prompt.split("[Model Response]\n")[1].split("\n\nEvaluate")[0]
    return JUDGE_SAYS[response]


def test_judge_through_the_client_and_agreement_with_the_fact_matcher(fake_server, client_config):
    fake_server.responder = scripted_judge
    client = ChatClient(client_config(model="gpt-5-mini"))
    verdicts = judge_responses(client, "knowledge", ITEMS)
    assert [v.label for v in verdicts] == ["CORRECT", "PARTIALLY_CORRECT", "PARTIALLY_CORRECT", "INCORRECT",
                                           UNPARSEABLE]
    expected = KNOWLEDGE.prompt("Where and when?", "Kessrin, March 2025.", "In Kessrin, in March 2025.")
    assert expected in [b["messages"][0]["content"] for b in fake_server.posts]
    assert all("temperature" not in b for b in fake_server.posts)  # GPT-5-mini takes only its default temperature
    # Fact matcher: r1 strict; r2 lenient only; r3 wrong ("Oldrey"); r4 nothing; r5 lenient only.
    assert [score_facts(i.response, i.facts, i.wrong).lenient for i in ITEMS] == [True, True, False, False, True]
    agreements = fact_matcher_agreement(ITEMS, verdicts)
    strict, lenient = agreements["strict"], agreements["lenient"]
    assert (strict.compared, strict.skipped_unparseable, strict.agreement) == (4, 1, 1.0)
    assert strict.kappa == pytest.approx(1.0)
    # Lenient: judge [T, T, T, F] vs matcher [T, T, F, F]: 3 of 4 agree; chance = .75·.5 + .25·.5 = .5 → kappa .5.
    assert lenient.agreement == pytest.approx(0.75) and lenient.kappa == pytest.approx(0.5)

    judge_responses(ChatClient(client_config(model="gpt-5-mini")), "knowledge", ITEMS)
    assert len(fake_server.posts) == 5  # the second judging came from the cache


def test_run_judge_entry_point(fake_server, client_config, tmp_path):
    fake_server.responder = scripted_judge
    rows = [{"id": i.id, "question": i.question, "reference_answer": i.reference_answer, "response": i.response,
             "facts": i.facts, "wrong": i.wrong} for i in ITEMS]
    (tmp_path / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = client_config(JudgeConfig, input_path=str(tmp_path / "responses.jsonl"),
                           output_path=str(tmp_path / "verdicts.jsonl"))
    summary = run_judge(config)
    assert summary["counts"] == {"CORRECT": 1, "PARTIALLY_CORRECT": 2, "INCORRECT": 1, UNPARSEABLE: 1}
    assert summary["unparseable_ids"] == ["r5"] and summary["strict_accuracy"] == 0.25
    assert summary["fact_matcher_agreement"]["lenient"]["kappa"] == pytest.approx(0.5)
    verdicts = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert verdicts[4] == {"id": "r5", "verdict": UNPARSEABLE, "strict": None, "lenient": None,
                           "judge_output": "Mostly correct, I would say."}
    saved = json.loads((tmp_path / "verdicts.summary.json").read_text())
    assert saved["lenient_accuracy"] == 0.75
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(encoding="utf-8")


def test_run_judge_needs_a_key_before_anything(fake_server, client_config, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    config = client_config(JudgeConfig, input_path=str(tmp_path / "absent.jsonl"),
                           output_path=str(tmp_path / "verdicts.jsonl"))
    with pytest.raises(MissingCredentialsError, match="OPENAI_API_KEY is not set"):
        run_judge(config)
    assert fake_server.posts == []


def test_judge_config_rejects_unknown_rubric(fake_server, client_config):
    with pytest.raises(ValueError, match="rubric must be one of"):
        client_config(JudgeConfig, rubric="legal", input_path="a", output_path="b")
