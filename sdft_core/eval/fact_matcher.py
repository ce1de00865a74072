"""Deterministic fact matcher: the offline judge for knowledge acquisition (paper Table 1: strict / lenient / OOD).

Each question lists its required facts (each a list of accepted spellings) and strings that mark a wrong answer.
- strict:  every required fact is present and no wrong string is;
- lenient: at least one required fact is present and no wrong string is.
Matching is case-insensitive on whole words after normalisation ("4,200" = "4200", punctuation ignored).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NON_WORD = re.compile(r"[^a-z0-9.]+")
_LONE_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")  # keep decimal points (7.4), drop sentence dots


def normalize(text: str) -> str:
    text = _THOUSANDS.sub("", text.lower())
    text = _LONE_DOT.sub(" ", _NON_WORD.sub(" ", text))
    return " " + " ".join(text.split()) + " "


def contains(text: str, phrase: str) -> bool:
    """Whole-word, normalised containment."""
    needle = normalize(phrase).strip()
    return bool(needle) and f" {needle} " in normalize(text)


@dataclass(frozen=True)
class FactScore:
    facts_found: int
    facts_total: int
    wrong_found: tuple[str, ...]

    @property
    def strict(self) -> bool:
        return self.facts_found == self.facts_total and not self.wrong_found

    @property
    def lenient(self) -> bool:
        return self.facts_found > 0 and not self.wrong_found


def score_facts(response: str, facts: list[list[str]], wrong: list[str]) -> FactScore:
    found = sum(any(contains(response, alias) for alias in aliases) for aliases in facts)
    return FactScore(found, len(facts), tuple(w for w in wrong if contains(response, w)))
