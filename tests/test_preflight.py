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
    # The verdict follows from the table's own numbers (the rules themselves: test_verdict_rules).
    student = result.table.loc[preflight.STUDENT, "correct"]
    ceiling = result.table.loc[result.best_context, "correct"]
    assert f"teacher ceiling {100 * ceiling:.0f}% ({result.best_context}) vs student {100 * student:.0f}%" in \
        result.verdict
    assert result.verdict.startswith("UNLIKELY") == (ceiling - student < preflight.MIN_CEILING_GAIN)
    assert result.table["opens like the demonstration"].between(0, 1).all()
    assert preflight.plot_preflight(result) is not None


def _verdict(student: float, teacher: float, coverage: float, on_path: float = 0.9, fixed_opening: float = 0.3,
             teacher_opens_alike: float = 0.0) -> str:
    table = pd.DataFrame({"correct": [student, teacher], "opens like the demonstration": [0.0, teacher_opens_alike]},
                         index=[preflight.STUDENT, "demonstration"])
    signal = {"rollouts reaching an answer position": coverage,
              "answer positions where the student sampled the teacher's token": on_path,
              "demonstrations opening with the same token": fixed_opening}
    return preflight.Preflight(table, signal, "demonstration", "correct").verdict


def test_verdict_rules():
    assert _verdict(0.0, 0.05, 0.9).startswith("UNLIKELY")  # the teacher knows no more than the student
    assert _verdict(0.0, 0.6, 0.1).startswith("WEAK SIGNAL")  # rollouts never reach the answer
    assert _verdict(0.0, 0.6, 0.9, on_path=0.2).startswith("SLOW ON-POLICY")  # multi-token answers off the path
    assert _verdict(0.0, 0.6, 0.9).startswith("LIKELY")
    assert "60%" in _verdict(0.0, 0.6, 0.9)
    # A format (every demonstration opens alike) that the teacher does not open with: the student learns the opening.
    assert _verdict(0.0, 0.6, 0.9, fixed_opening=1.0, teacher_opens_alike=0.2).startswith("WRONG OPENING")
    assert _verdict(0.0, 0.6, 0.9, fixed_opening=1.0, teacher_opens_alike=0.8).startswith("LIKELY")
    assert _verdict(0.0, 0.6, 0.9, fixed_opening=0.5, teacher_opens_alike=0.0).startswith("LIKELY")  # free text
    assert _verdict(0.0, 0.05, 0.9, fixed_opening=1.0).startswith("UNLIKELY")  # nothing to distil comes first


def test_opening_helpers(embedded_tokenizer):
    brace = encode(embedded_tokenizer, '{"name": "Ravi"}')
    assert preflight.opens_alike(embedded_tokenizer, '{"city": "Tarnwick"}', brace)
    assert preflight.opens_alike(embedded_tokenizer, '{ "city": 1}', brace)
    assert not preflight.opens_alike(embedded_tokenizer, "This is a booking", brace)
    assert not preflight.opens_alike(embedded_tokenizer, "", brace)
    demonstrations = [brace, brace, encode(embedded_tokenizer, "Action: x")]
    assert preflight.fixed_opening_share(embedded_tokenizer, demonstrations) == pytest.approx(2 / 3)


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


def _greedy_reference(model, prompt_ids: list[int], steps: int, eos: int) -> list[int]:
    """Greedy decoding by hand: argmax of a plain forward pass over everything so far, one token at a time."""
    ids = []
    for _ in range(steps):
        _, full = reference_sampled_logp(model, prompt_ids, ids + [0])  # the last row: the next token after `ids`
        token = int(full[-1].argmax())
        if token == eos:
            break
        ids.append(token)
    return ids


def test_opening_token_against_greedy_decoding_and_forward_passes_by_hand(tiny):
    model, tokenizer = tiny
    items = [EvalItem(e.id, e.prompt, r, e.context, e.demonstration) for e, r in zip(EXAMPLES, REFERENCES)]
    report = preflight.opening_token(model, tokenizer, items, odd_length_scorer, max_new_tokens=5, batch_size=2)
    prompts = [student_prompt_ids(tokenizer, e, 512) for e in EXAMPLES]
    answers = [encode(tokenizer, e.demonstration) for e in EXAMPLES]
    first_p, later_p, same, plain, forced = [], [], [], [], []
    for prompt, answer, reference in zip(prompts, answers, REFERENCES):
        logp, _ = reference_sampled_logp(model, prompt, answer)
        first_p.append(logp[0].exp())
        later_p += logp[1:].exp().tolist()
        greedy = _greedy_reference(model, prompt, 5, tokenizer.eos_token_id)
        text = tokenizer.decode(greedy, skip_special_tokens=True).strip()
        opening, mine = tokenizer.decode(answer[:1]).strip(), tokenizer.decode(encode(tokenizer, text)[:1]).strip()
        same.append(bool(mine) and (mine.startswith(opening) or opening.startswith(mine)))
        plain.append(odd_length_scorer(text, reference)["correct"])
        rest = _greedy_reference(model, prompt + answer[:1], 4, tokenizer.eos_token_id)
        forced.append(odd_length_scorer(tokenizer.decode(answer[:1] + rest, skip_special_tokens=True).strip(),
                                        reference)["correct"])
    assert report["items"] == 3
    assert report["p(demonstration's first token)"] == pytest.approx(float(torch.stack(first_p).mean()), abs=1e-6)
    assert report["p(its later tokens), mean"] == pytest.approx(sum(later_p) / len(later_p), abs=1e-6)
    assert report["greedy opens like the demonstration"] == pytest.approx(sum(same) / 3)
    assert report["greedy accuracy"] == pytest.approx(sum(plain) / 3)
    assert report["greedy accuracy, demonstration's first token forced"] == pytest.approx(sum(forced) / 3)
    with pytest.raises(ValueError, match="demonstration"):
        preflight.opening_token(model, tokenizer, [EvalItem("x", "q", {})], odd_length_scorer, 5)
