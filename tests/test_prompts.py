import pytest

from sdft_core.data import Example
from sdft_core.prompts import (KNOWLEDGE_TEMPLATES, PAPER_TEACHER_TEMPLATE, TEACHER_TEMPLATES, TruncationCounter,
                               chat_prompt, encode, resolve_template, student_prompt_ids, teacher_message,
                               teacher_prompt_ids)

EXAMPLE = Example("q1", "What is the capital of Velmora?", "The capital of Velmora is Kessrin.", "Velmora is a "
                  "small country. " * 40)


def test_paper_teacher_template_exact_string():
    # Paper §3, verbatim.
    assert teacher_message(EXAMPLE) == (
        "What is the capital of Velmora?\n"
        "This is an example for a response to the question:\n"
        "The capital of Velmora is Kessrin.\n"
        "Now answer with a response of your own, including the thinking process:"
    )
    assert PAPER_TEACHER_TEMPLATE.count("{") == 2


def test_context_variants():
    assert teacher_message(EXAMPLE, "context") == EXAMPLE.context + "\n\n" + EXAMPLE.prompt
    assert teacher_message(EXAMPLE, "context_and_demonstration") == EXAMPLE.context + "\n\n" + teacher_message(EXAMPLE)
    with pytest.raises(ValueError, match="needs a context"):
        teacher_message(Example("q2", "Q?", "A."), "context")


def test_student_and_teacher_use_the_same_chat_framing(embedded_tokenizer):
    student = chat_prompt(embedded_tokenizer, EXAMPLE.prompt)
    teacher = chat_prompt(embedded_tokenizer, teacher_message(EXAMPLE))
    # Same system prompt and turn markers; the user turn differs only by the privileged text.
    assert student.split(EXAMPLE.prompt) [0] == teacher.split(EXAMPLE.prompt)[0]
    assert student.endswith("<|im_end|>\n<|im_start|>assistant\n") and teacher.endswith(
        "<|im_end|>\n<|im_start|>assistant\n")


def test_teacher_prompt_truncation_cuts_the_context_and_counts(embedded_tokenizer):
    full = teacher_prompt_ids(embedded_tokenizer, EXAMPLE, 10_000, "context_and_demonstration")
    counter = TruncationCounter()
    limit = len(full) - 50
    cut = teacher_prompt_ids(embedded_tokenizer, EXAMPLE, limit, "context_and_demonstration", counter)
    assert len(cut) <= limit and counter.truncated == 1 and counter.tokens_removed == len(full) - len(cut)
    text = embedded_tokenizer.decode(cut)
    # The question, the demonstration and the template survive; the article lost its end.
    assert EXAMPLE.prompt in text and EXAMPLE.demonstration in text and "Now answer with a response" in text
    assert EXAMPLE.context not in text


def test_prompt_that_fits_is_not_counted(embedded_tokenizer):
    counter = TruncationCounter()
    teacher_prompt_ids(embedded_tokenizer, EXAMPLE, 10_000, "context_and_demonstration", counter)
    assert counter.truncated == 0


def test_student_prompt_too_long_is_an_error_naming_the_example(embedded_tokenizer):
    with pytest.raises(ValueError, match="example 'q1'.*max_prompt_tokens=5"):
        student_prompt_ids(embedded_tokenizer, EXAMPLE, 5)
    assert len(student_prompt_ids(embedded_tokenizer, EXAMPLE, 512)) == len(
        encode(embedded_tokenizer, chat_prompt(embedded_tokenizer, EXAMPLE.prompt)))


def test_teacher_templates_by_name_or_format_string():
    assert teacher_message(EXAMPLE, template="paper") == teacher_message(EXAMPLE)
    own = teacher_message(EXAMPLE, template="own_words")
    assert own.endswith("Now answer with a response of your own:") and "thinking process" not in own
    assert EXAMPLE.demonstration in teacher_message(EXAMPLE, template="same_facts")
    # Every named template but the format skills' own is a knowledge template (the knowledge pre-flight loops on them).
    assert set(KNOWLEDGE_TEMPLATES) == set(TEACHER_TEMPLATES) - {"same_format"}
    custom = teacher_message(EXAMPLE, "context_and_demonstration", "Q: {question}\nA: {demonstration}\nAgain:")
    assert custom == EXAMPLE.context + "\n\n" + f"Q: {EXAMPLE.prompt}\nA: {EXAMPLE.demonstration}\nAgain:"
    # The source-text-only context has no demonstration, so no template.
    assert teacher_message(EXAMPLE, "context", "own_words") == teacher_message(EXAMPLE, "context")


@pytest.mark.parametrize("template, problem", [("no_such_name", "must be one of"),
                                               ("{question} only", "must be one of"),
                                               ("{question} {demonstration} {other}", "not a valid format string")])
def test_a_bad_teacher_template_is_a_clear_error(template, problem):
    with pytest.raises(ValueError, match=problem):
        resolve_template(template)


def test_teacher_prompt_ids_use_the_template(embedded_tokenizer):
    ids = teacher_prompt_ids(embedded_tokenizer, EXAMPLE, 10_000, "demonstration", template="own_words")
    assert embedded_tokenizer.decode(ids).count("including the thinking process") == 0
