"""Student and teacher contexts (paper §3, Algorithm 1: Ctx_S(x) and Ctx_T(x, c)).

Both contexts go through the model's own chat template in the same way, so the only difference between them is the
privileged information the teacher sees (the demonstration, and for knowledge acquisition the source article).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transformers import PreTrainedTokenizerBase

from sdft_core.data import Example

# The paper's teacher prompt (§3), verbatim. {question} and {demonstration} are filled in; nothing else changes.
PAPER_TEACHER_TEMPLATE = (
    "{question}\n"
    "This is an example for a response to the question:\n"
    "{demonstration}\n"
    "Now answer with a response of your own, including the thinking process:"
)

# Teacher templates by name (TrainConfig.teacher_template). "paper" is the default and the paper's presets. The others
# differ from it in the last line only, and exist because the paper's "including the thinking process" wording pushes
# a small model to prose and artefacts ("This is an example of thinking process."): measure them with the pre-flight
# diagnostic (sdft_core/eval/preflight.py) before choosing one for a model.
TEACHER_TEMPLATES = {
    "paper": PAPER_TEACHER_TEMPLATE,
    # The paper's wording without "including the thinking process".
    "own_words": ("{question}\n"
                  "This is an example for a response to the question:\n"
                  "{demonstration}\n"
                  "Now answer with a response of your own:"),
    # States that the example is correct and asks for the same facts: for knowledge, where the answer *is* the facts.
    "same_facts": ("{question}\n"
                   "This is a correct answer to the question:\n"
                   "{demonstration}\n"
                   "Now answer the question in your own words, with the same facts:"),
    # Asks for the demonstration's format: for skills whose answer is a format (a JSON object, a call). The student
    # learns how the teacher *opens* its answer, and under the paper's wording the 135M teacher opens with prose
    # ("This is ...") where the demonstration opens with "{" (sdft_core.eval.preflight.opening_token).
    "same_format": ("{question}\n"
                    "This is an example for a response to the question:\n"
                    "{demonstration}\n"
                    "Now answer with a response of your own, in the same format:"),
}
# The templates for tasks whose answer is facts (the knowledge pre-flight compares these); same_format is for skills.
KNOWLEDGE_TEMPLATES = ("paper", "own_words", "same_facts")


def resolve_template(template: str) -> str:
    """A template name of TEACHER_TEMPLATES, or a format string with {question} and {demonstration}."""
    if template in TEACHER_TEMPLATES:
        return TEACHER_TEMPLATES[template]
    if "{question}" not in template or "{demonstration}" not in template:
        raise ValueError(f"teacher_template must be one of {sorted(TEACHER_TEMPLATES)} or a format string with "
                         f"{{question}} and {{demonstration}}, got {template!r}")
    try:
        template.format(question="", demonstration="")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"teacher_template {template!r} is not a valid format string: {error!r} (write a literal "
                         f"brace as {{{{ or }}}})") from None
    return template


# Knowledge acquisition (paper A.2): the teacher may also see the source text. The text comes first, then the
# question as the student sees it (text-only variant) or the paper's template (answer and text+answer variants).
CONTEXT_PREFIX = "{context}\n\n"

TEACHER_CONTEXTS = ("demonstration", "context", "context_and_demonstration", "prompt")


def teacher_message(example: Example, teacher_context: str = "demonstration", template: str = "paper") -> str:
    """The user turn of the teacher context, as plain text.

    teacher_context: "demonstration" (the paper's default for skill learning: question + demonstration),
    "context" (source text + question; Fig. 7 "text"), "context_and_demonstration" (Fig. 7 "both", the paper's best),
    "prompt" (exactly the student's context: on-policy distillation from another model, as in re-invocation).
    template: how the question and demonstration are put together (a name of TEACHER_TEMPLATES or a format string).
    """
    if teacher_context not in TEACHER_CONTEXTS:
        raise ValueError(f"teacher_context must be one of {TEACHER_CONTEXTS}, got {teacher_context!r}")
    if teacher_context == "prompt":
        return example.prompt
    with_demonstration = resolve_template(template).format(question=example.prompt,
                                                           demonstration=example.demonstration)
    if teacher_context == "demonstration":
        return with_demonstration
    if example.context is None:
        raise ValueError(f"example {example.id!r}: teacher_context={teacher_context!r} needs a context")
    prefix = CONTEXT_PREFIX.format(context=example.context)
    if teacher_context == "context":
        return prefix + example.prompt
    return prefix + with_demonstration


def chat_prompt(tokenizer: PreTrainedTokenizerBase, user_message: str) -> str:
    """One user turn in the model's chat template, ending where the assistant's answer begins."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
    )


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # The chat template already contains any BOS the model wants; adding special tokens would double it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class TruncationCounter:
    """Counts teacher prompts that were cut to fit `max_teacher_prompt_tokens` (logged, never silent)."""

    truncated: int = 0
    tokens_removed: int = 0


def student_prompt_ids(tokenizer: PreTrainedTokenizerBase, example: Example, max_tokens: int) -> list[int]:
    ids = encode(tokenizer, chat_prompt(tokenizer, example.prompt))
    if len(ids) > max_tokens:
        raise ValueError(
            f"example {example.id!r}: the student prompt has {len(ids)} tokens, more than max_prompt_tokens="
            f"{max_tokens}; raise the limit or shorten the prompt (student prompts are never truncated)"
        )
    return ids


def teacher_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    example: Example,
    max_tokens: int,
    teacher_context: str = "demonstration",
    counter: TruncationCounter | None = None,
    template: str = "paper",
) -> list[int]:
    """Token ids of the teacher context, truncated if longer than `max_tokens`.

    Truncation rule: the question and the template are kept whole; the privileged parts are shortened from their end,
    the source text (context) first, then the demonstration, until the prompt fits. Each truncation is counted.
    """
    def ids_for(context: str | None, demonstration: str) -> list[int]:
        shortened = Example(example.id, example.prompt, demonstration, context)
        return encode(tokenizer, chat_prompt(tokenizer, teacher_message(shortened, teacher_context, template)))

    def shorten(text: str, other_ids: Callable[[str], list[int]]) -> tuple[str, list[int]]:
        """Drop tokens from the end of `text` until the prompt fits (re-tokenizing can merge tokens, so loop)."""
        text_ids = encode(tokenizer, text)
        ids = other_ids(text)
        while len(ids) > max_tokens and text_ids:
            text_ids = text_ids[: max(0, len(text_ids) - (len(ids) - max_tokens))]
            text = tokenizer.decode(text_ids)
            ids = other_ids(text)
        return text, ids

    context, demonstration = example.context, example.demonstration
    ids = ids_for(context, demonstration)
    original_length = len(ids)
    if original_length <= max_tokens:
        return ids
    if teacher_context in ("context", "context_and_demonstration"):
        context, ids = shorten(context, lambda text: ids_for(text, demonstration))
    if len(ids) > max_tokens and teacher_context in ("demonstration", "context_and_demonstration"):
        demonstration, ids = shorten(demonstration, lambda text: ids_for(context, text))
    if len(ids) > max_tokens:
        raise ValueError(
            f"example {example.id!r}: the teacher prompt still has {len(ids)} tokens without its privileged text; "
            f"max_teacher_prompt_tokens={max_tokens} is too small for this question"
        )
    if counter is not None:
        counter.truncated += 1
        counter.tokens_removed += original_length - len(ids)
    return ids
