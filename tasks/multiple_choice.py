"""Multiple-choice answers (SciKnowEval, paper §4 Science Q&A): read the final option letter of a response.

Used by the science task's scorer (tasks.paper_tasks) and by the demonstration builder (data_prep.demonstrations),
which keeps only demonstrations whose final choice is the ground truth."""

from __future__ import annotations

import re

# Sources of a final choice, most explicit first; within one kind the last occurrence wins (models restate the
# options while reasoning, and conclude at the end). A letter must stand alone: "B", "(B)", "**B**", "B." — never
# the first letter of a word.
_LETTER = r"\(?\**([A-Z])\**\)?(?![A-Za-z0-9])"
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-Z])\)?\s*\}?\s*\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)?\s*\**\s*:?\s*" + _LETTER, re.IGNORECASE)
_LONE_LETTER_LINE = re.compile(r"^\W*\(?([A-Z])\)?[\W]*$")


def extract_choice(response: str) -> str | None:
    """The final option letter of a multiple-choice response, or None when no final choice can be read.

    Conservative on purpose: a response whose choice cannot be read is resampled, while a misread one would become
    a wrong demonstration. "The answer is A typical..." reads as no answer ("A" starts a sentence), "The answer
    is B because..." reads as B."""
    for match in reversed(list(_BOXED.finditer(response))):
        return match.group(1)
    for match in reversed(list(_ANSWER_IS.finditer(response))):
        letter = match.group(1)
        # Case-insensitive "answer" must not make the letter case-insensitive: "the answer is a..." is an article.
        if not letter.isupper():
            continue
        rest = response[match.end():]
        if letter == "A" and re.match(r"\s+[a-z]", rest):
            continue
        return letter
    lines = [line for line in response.strip().splitlines() if line.strip()]
    if lines:
        lone = _LONE_LETTER_LINE.match(lines[-1].strip())
        if lone:
            return lone.group(1)
    return None


def multiple_choice_matches(response: str, ground_truth: str) -> bool:
    """Exact match of the response's final option letter with the ground-truth letter ("B" or "(B)")."""
    expected = ground_truth.strip().strip("()").strip().upper()
    if not re.fullmatch(r"[A-Z]", expected):
        raise ValueError(f"a multiple-choice ground truth must be one option letter, got {ground_truth!r}")
    return extract_choice(response) == expected
