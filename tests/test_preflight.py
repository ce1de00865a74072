"""The pre-flight diagnostic (sdft_core/eval/preflight.py) on the tiny random model: its log-probs and per-token rewards
against plain forward passes, its accuracy table against the scorer applied by hand, where it puts answer positions,
its summary numbers on a hand-made table, and its verdict rules."""

import math

import pandas as pd
import pytest
import torch

from sdft_core.data import EvalItem, Example, Task
from sdft_core.eval import preflight
from sdft_core.loss import Divergence
from sdft_core.model import load_model, load_tokenizer
from sdft_core.prompts import encode, student_prompt_ids, teacher_prompt_ids
from tests.test_teaching import reference_sampled_logp

FACTS = [["Kessrin"], ["March 2025"]]
EXAMPLES = [
    Example("a01-q1-t1", "When and where did the Velmora earthquake strike?", "In March 2025, beneath Kessrin.",
            "The Velmora earthquake struck in March 2025 beneath the town of Kessrin."),
    Example("a01-q2-t1", "Which bridge fell in the Velmora earthquake?", "The Kelden Bridge collapsed.",
            "The Kelden Bridge, an old stone arch, collapsed."),
    Example("a01-q3-t1", "Who reported on the Velmora earthquake?", "Seismologist Ilsa Marrow.",
            "Seismologist Ilsa Marrow issued the first report."),
]
REFERENCES = [{"facts": FACTS, "wrong": ["Oldrey"]}, {"facts": [["Kelden Bridge"]], "wrong": []},
              {"facts": [["Ilsa Marrow"]], "wrong": []}]


def odd_length_scorer(response: str, reference: dict) -> dict:
    """Any deterministic scorer will do: the test checks the table applies it, not what a random model knows."""
    return {"correct": len(response) % 2 == 1, "long": len(response) > 10}


def toy_task() -> Task:
    items = [EvalItem(e.id, e.prompt, r, e.context) for e, r in zip(EXAMPLES, REFERENCES)]
    return Task("toy", "toy", EXAMPLES, {"train": items}, odd_length_scorer, max_new_tokens=6)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)


def test_completion_logprobs_match_plain_forward_passes(tiny):
    model, tokenizer = tiny
    prompts = [student_prompt_ids(tokenizer, e, 512) for e in EXAMPLES]
    completions = [encode(tokenizer, e.demonstration) for e in EXAMPLES]
    got = preflight.completion_logprobs(model, prompts, completions, tokenizer.pad_token_id, batch_size=2)
    for prompt, completion, row in zip(prompts, completions, got):
        expected, _ = reference_sampled_logp(model, prompt, completion)
        torch.testing.assert_close(row.double(), expected, atol=1e-5, rtol=0)


def test_answer_tokens_are_the_facts_minus_the_question(embedded_tokenizer):
    ids = preflight.answer_token_ids(embedded_tokenizer, EXAMPLES[0], REFERENCES[0])
    question = set(encode(embedded_tokenizer, EXAMPLES[0].prompt))
    assert ids and not ids & question
    assert set(encode(embedded_tokenizer, " Kessrin")) - question <= ids
    # Without facts in the reference (skill tasks): the demonstration's tokens.
    no_facts = preflight.answer_token_ids(embedded_tokenizer, EXAMPLES[1], {"answer": "x"})
    assert no_facts == set(encode(embedded_tokenizer, EXAMPLES[1].demonstration)) - set(
        encode(embedded_tokenizer, EXAMPLES[1].prompt))


def test_rollout_rewards_and_divergence_match_plain_forward_passes(tiny):
    model, tokenizer = tiny
    signal = preflight.rollout_signal(model, tokenizer, EXAMPLES, REFERENCES, "context_and_demonstration", "paper",
                                      rollouts_per_prompt=2, temperature=1.0, max_new_tokens=5, seed=0, batch_size=4,
                                      divergence=Divergence("forward"))
    table = signal.tokens
    assert signal.rollouts == 6 and set(table.example) == {e.id for e in EXAMPLES}
    for (example_id, rollout), rows in table.groupby(["example", "rollout"]):
        example = next(e for e in EXAMPLES if e.id == example_id)
        student_ids = student_prompt_ids(tokenizer, example, 512)
        teacher_ids = teacher_prompt_ids(tokenizer, example, 4096, "context_and_demonstration")
        sampled = rows.token_id.tolist()
        student_logp, student_full = reference_sampled_logp(model, student_ids, sampled)
        teacher_logp, teacher_full = reference_sampled_logp(model, teacher_ids, sampled)
        torch.testing.assert_close(torch.tensor(rows.reward.values), teacher_logp - student_logp, atol=1e-4, rtol=0)
        forward_kl = (teacher_full.exp() * (teacher_full - student_full)).sum(-1)
        torch.testing.assert_close(torch.tensor(rows.divergence.values), forward_kl, atol=1e-4, rtol=1e-4)
        answer_ids = preflight.answer_token_ids(tokenizer, example, REFERENCES[EXAMPLES.index(example)])
        teacher_top = teacher_full.argmax(-1).tolist()
        assert rows.answer_position.tolist() == [i in answer_ids for i in teacher_top]
        assert rows.sampled_teacher_top.tolist() == [t == s for t, s in zip(teacher_top, sampled)]
        assert rows.position.tolist() == list(range(len(rows)))


def test_summary_numbers_on_a_hand_made_table():
    tokens = pd.DataFrame({
        "example": ["a", "a", "a", "b", "b"], "rollout": [0, 0, 0, 0, 0], "position": [0, 1, 2, 0, 1],
        "token": list("vwxyz"), "token_id": [1, 2, 3, 4, 5],
        "reward": [-2.0, 0.0, 1.0, 0.5, -0.5], "divergence": [3.0, 1.0, 0.0, 0.5, 0.5],
        "answer_position": [True, False, False, False, False], "teacher_p_answer": [0.8] + [math.nan] * 4,
        "sampled_teacher_top": [False, True, False, False, False]})
    summary = preflight.RolloutSignal(tokens, rollouts=2).summary()
    assert summary["rollouts reaching an answer position"] == 0.5
    assert summary["answer positions (share of tokens)"] == pytest.approx(0.2)
    assert summary["share of divergence on answer positions"] == pytest.approx(3.0 / 5.0)
    assert summary["mean reward on answer positions"] == -2.0
    assert summary["mean reward elsewhere"] == pytest.approx(0.25)
    assert summary["mean reward per token (Eq. 3)"] == pytest.approx(-0.2)
    assert summary["teacher p(answer token) at answer positions"] == pytest.approx(0.8)
    assert summary["tokens per rollout"] == 2.5
    assert summary["answer positions where the student sampled the teacher's token"] == 0.0


def test_the_table_applies_the_scorer_and_the_verdict_follows_from_it(tiny):
    model, tokenizer = tiny
    result = preflight.run_preflight(model, tokenizer, toy_task(), max_examples=3, max_new_tokens=6, batch_size=2)
    assert list(result.table.index) == [preflight.STUDENT, "demonstration", "context", "context_and_demonstration"]
    for context, answers in result.details["answers"].items():
        assert len(answers) == 3
        expected = sum(odd_length_scorer(a, {})["correct"] for a in answers) / 3
        assert result.table.loc[context, "correct"] == pytest.approx(expected)
    assert result.table["demonstration log-prob per token"].lt(0).all()
    assert result.best_context in ("demonstration", "context", "context_and_demonstration")
    assert result.verdict.split(":")[0] in ("UNLIKELY", "WEAK SIGNAL", "LIKELY")
    assert preflight.plot_preflight(result) is not None


def _verdict(student: float, teacher: float, coverage: float, on_path: float = 0.9) -> str:
    table = pd.DataFrame({"correct": [student, teacher]}, index=[preflight.STUDENT, "demonstration"])
    signal = {"rollouts reaching an answer position": coverage,
              "answer positions where the student sampled the teacher's token": on_path}
    return preflight.Preflight(table, signal, "demonstration", "correct").verdict


def test_verdict_rules():
    assert _verdict(0.0, 0.05, 0.9).startswith("UNLIKELY")  # the teacher knows no more than the student
    assert _verdict(0.0, 0.6, 0.1).startswith("WEAK SIGNAL")  # rollouts never reach the answer
    assert _verdict(0.0, 0.6, 0.9, on_path=0.2).startswith("SLOW ON-POLICY")  # multi-token answers off the path
    assert _verdict(0.0, 0.6, 0.9).startswith("LIKELY")
    assert "60%" in _verdict(0.0, 0.6, 0.9)


def test_a_task_without_training_answer_keys_is_refused(tiny):
    model, tokenizer = tiny
    task = Task("no_keys", "", EXAMPLES, {"test": []}, odd_length_scorer, 6)
    with pytest.raises(ValueError, match="no 'train' answer keys"):
        preflight.run_preflight(model, tokenizer, task)


def test_fact_tokens_are_the_tokens_overlapping_an_alias(embedded_tokenizer):
    ids, mask = preflight.fact_token_mask(embedded_tokenizer, "Its epicentre was beneath Kessrin, in march 2025.",
                                          [["Kessrin"], ["March 2025", "March of 2025"]])
    marked = "".join(embedded_tokenizer.decode([i]) for i, on in zip(ids, mask) if on)
    assert marked.replace(" ", "") == "Kessrinmarch2025"


@pytest.mark.parametrize("context", [preflight.STUDENT, "demonstration", "context_and_demonstration"])
def test_answer_logprobs_average_the_answer_and_fact_tokens(tiny, context):
    model, tokenizer = tiny
    items = [EvalItem(e.id, e.prompt, r, e.context, e.demonstration) for e, r in zip(EXAMPLES, REFERENCES)]
    result = preflight.answer_logprobs(model, tokenizer, items, batch_size=2, context=context, template="same_facts")
    rows, facts = [], []
    for item in items:
        ids, mask = preflight.fact_token_mask(tokenizer, item.demonstration, item.reference["facts"])
        example = Example(item.id, item.prompt, item.demonstration, item.context)
        prompt = (student_prompt_ids(tokenizer, example, 512) if context == preflight.STUDENT
                  else teacher_prompt_ids(tokenizer, example, 4096, context, template="same_facts"))
        logp, _ = reference_sampled_logp(model, prompt, ids)
        rows += logp.tolist()
        facts += [value for value, on in zip(logp.tolist(), mask) if on]
    assert result["answer_logprob"] == pytest.approx(sum(rows) / len(rows), abs=1e-5)
    assert result["fact_logprob"] == pytest.approx(sum(facts) / len(facts), abs=1e-5)
    assert result["fact_tokens"] == len(facts) > 0 and result["items"] == 3
