"""LLM judge for open-ended answers (paper B.3: GPT-5-mini with the two rubrics below), through the cached client.

- The rubrics are the paper's, verbatim.
- Verdicts are parsed strictly: the judge's whole output must be one of the rubric's labels (case, surrounding
  spaces, quotes, markdown bold and a final period aside). Anything else is UNPARSEABLE: counted, listed, and left
  out of the accuracies (whose denominators are the parsed verdicts), never mapped to a label.
- Knowledge rubric → strict accuracy (CORRECT) and lenient accuracy (CORRECT or PARTIALLY_CORRECT), the two columns
  of the paper's Table 1; the medical rubric has one accuracy (CORRECT).
- When the deterministic fact matcher (sdft_core.eval.fact_matcher) scores the same responses, `fact_matcher_agreement`
  reports how often the two agree, and Cohen's kappa (agreement beyond what their base rates give by chance).

    python -m sdft_core.eval.judge --rubric knowledge --input-path responses.jsonl --output-path verdicts.jsonl

Input rows: id, question, reference_answer, response, and optionally facts and wrong (as in the embedded knowledge
task) to compare with the fact matcher. Output rows: id, verdict, strict, lenient, judge_output; a summary goes to
<output>.summary.json. Every judge call is cached, so a rerun asks nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The judge talks through the kit's one cached, retrying client, which lives with the data-preparation code.
from sdft_core.data import DatasetError, check_unique_ids, read_jsonl, require
from sdft_core.eval.fact_matcher import score_facts
from sdft_core.openai_client import ChatClient, ChatRequest, ClientConfig, check_credentials, run_command_line, \
    user_message
from sdft_core.io import write_json, write_jsonl

# Paper B.3, medical evaluator, verbatim. The PDF prints it in a fixed-width box; line breaks inside a sentence are
# that box's wrapping and are not part of the prompt. The typographic apostrophes are the paper's.
MEDICAL_PROMPT = (
    "You are an expert medical evaluator assessing whether a model’s response correctly answers a medical "
    "question. Your task is to compare the model’s response to the reference answer and determine if the model’s "
    "response is:\n"
    "1. CORRECT: The response contains the key medical information from the reference answer, even if phrased "
    "differently or includes additional correct medical details.\n"
    "2. INCORRECT: The response is medically wrong, misses the main point, or provides incorrect medical "
    "information.\n"
    "Focus on medical accuracy and completeness, not on writing style or verbosity.\n"
    "\n"
    "[Medical Question]\n"
    "{question}\n"
    "[Reference Answer]\n"
    "{reference_answer}\n"
    "[Model Response]\n"
    "{model_response}\n"
    "Evaluate the model’s response. Output ONLY one of: \"CORRECT\" or \"INCORRECT\"."
)

# Paper B.3, knowledge-acquisition evaluator, verbatim.
KNOWLEDGE_PROMPT = (
    "You are an expert evaluator assessing whether a model's response correctly answers a question.\n"
    "\n"
    "Your task is to compare the model's response to the reference answer and determine if the model's response "
    "is:\n"
    "\n"
    "1. CORRECT: The response contains the key information from the reference answer, even if phrased differently "
    "or includes additional correct details.\n"
    "2. PARTIALLY_CORRECT: The response contains most of the key information from the reference answer but misses "
    "some details.\n"
    "3. INCORRECT: The response is wrong, misses the main point, or provides incorrect information.\n"
    "\n"
    "Focus on factual accuracy and completeness, not on writing style or verbosity.\n"
    "\n"
    "[Question]\n"
    "{question}\n"
    "\n"
    "[Reference Answer]\n"
    "{reference_answer}\n"
    "\n"
    "[Model Response]\n"
    "{model_response}\n"
    "\n"
    "Evaluate the model's response. Output ONLY one of: \"CORRECT\", \"PARTIALLY_CORRECT\", or \"INCORRECT\"."
)

UNPARSEABLE = "UNPARSEABLE"


@dataclass(frozen=True)
class Rubric:
    name: str
    template: str
    labels: tuple[str, ...]
    strict_labels: frozenset[str]
    """Labels that count as correct for strict accuracy."""
    lenient_labels: frozenset[str]
    """Labels that count as correct for lenient accuracy."""

    def prompt(self, question: str, reference_answer: str, model_response: str) -> str:
        return self.template.format(question=question, reference_answer=reference_answer,
                                    model_response=model_response)


RUBRICS = {
    "medical": Rubric("medical", MEDICAL_PROMPT, ("CORRECT", "INCORRECT"),
                      frozenset({"CORRECT"}), frozenset({"CORRECT"})),
    "knowledge": Rubric("knowledge", KNOWLEDGE_PROMPT, ("CORRECT", "PARTIALLY_CORRECT", "INCORRECT"),
                        frozenset({"CORRECT"}), frozenset({"CORRECT", "PARTIALLY_CORRECT"})),
}


def parse_verdict(output: str, rubric: Rubric) -> str:
    """The rubric label that the judge's whole output is, or UNPARSEABLE. Only wrapping is forgiven (spaces, quotes,
    backticks, markdown bold, one final period, letter case); "The answer is CORRECT" is not a verdict."""
    text = output.strip()
    if text.endswith("."):
        text = text[:-1]
    text = text.strip().strip("*`\"'").strip().upper()
    return text if text in rubric.labels else UNPARSEABLE


@dataclass(frozen=True)
class JudgeItem:
    id: str
    question: str
    reference_answer: str
    response: str
    facts: list[list[str]] | None = None
    """Required facts for the fact matcher (accepted spellings per fact); None when the item has none."""
    wrong: list[str] | None = None
    """Strings that mark a wrong answer, for the fact matcher."""


@dataclass(frozen=True)
class Verdict:
    id: str
    label: str
    """One of the rubric's labels, or UNPARSEABLE."""
    strict: bool | None
    """Correct under strict accuracy; None when the verdict is unparseable."""
    lenient: bool | None
    judge_output: str
    """What the judge said, kept so that unparseable verdicts can be read."""


def make_verdict(item_id: str, judge_output: str, rubric: Rubric) -> Verdict:
    label = parse_verdict(judge_output, rubric)
    if label == UNPARSEABLE:
        return Verdict(item_id, label, None, None, judge_output)
    return Verdict(item_id, label, label in rubric.strict_labels, label in rubric.lenient_labels, judge_output)


def judge_responses(client: ChatClient, rubric_name: str, items: list[JudgeItem], temperature: float | None = None,
                    max_tokens: int | None = None) -> list[Verdict]:
    """One judge call per item: concurrent, cached, verdicts in the order of `items`."""
    rubric = RUBRICS[rubric_name]
    requests = [ChatRequest(user_message(rubric.prompt(item.question, item.reference_answer, item.response)),
                            temperature=temperature, max_tokens=max_tokens) for item in items]
    results = client.complete_many(requests, desc=f"judge ({rubric_name})")
    return [make_verdict(item.id, result.text, rubric) for item, result in zip(items, results)]


@dataclass(frozen=True)
class JudgeSummary:
    total: int
    counts: dict[str, int]
    """Verdicts per label, UNPARSEABLE included."""
    unparseable_ids: list[str]
    strict_accuracy: float | None
    """Fraction of parsed verdicts that are strictly correct; None when no verdict parsed."""
    lenient_accuracy: float | None

    def line(self) -> str:
        def percent(value):
            return "n/a" if value is None else f"{value:.1%}"
        return (f"judge: {self.total} responses, strict {percent(self.strict_accuracy)}, lenient "
                f"{percent(self.lenient_accuracy)}, {len(self.unparseable_ids)} unparseable verdicts, "
                f"counts {self.counts}")


def summarize(verdicts: list[Verdict], rubric_name: str) -> JudgeSummary:
    counts = {label: 0 for label in RUBRICS[rubric_name].labels + (UNPARSEABLE,)}
    for verdict in verdicts:
        counts[verdict.label] += 1
    parsed = [verdict for verdict in verdicts if verdict.label != UNPARSEABLE]
    return JudgeSummary(
        len(verdicts), counts, [verdict.id for verdict in verdicts if verdict.label == UNPARSEABLE],
        sum(v.strict for v in parsed) / len(parsed) if parsed else None,
        sum(v.lenient for v in parsed) / len(parsed) if parsed else None)


# --- Agreement with the deterministic fact matcher -------------------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    compared: int
    """Responses with a parsed verdict and a fact-matcher score."""
    skipped_unparseable: int
    agreement: float | None
    """Fraction of compared responses on which judge and matcher agree."""
    kappa: float | None
    """Cohen's kappa; None when undefined (both raters gave one and the same label to everything)."""
    judge_positive_rate: float | None
    matcher_positive_rate: float | None


def cohen_kappa(first: list[bool], second: list[bool]) -> float | None:
    """(observed − chance agreement) / (1 − chance agreement) for two binary raters of the same items."""
    if len(first) != len(second):
        raise ValueError(f"kappa needs ratings of the same items, got {len(first)} and {len(second)}")
    if not first:
        return None
    count = len(first)
    observed = sum(a == b for a, b in zip(first, second)) / count
    rate_first, rate_second = sum(first) / count, sum(second) / count
    chance = rate_first * rate_second + (1 - rate_first) * (1 - rate_second)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def agreement(judge: list[bool | None], matcher: list[bool]) -> Agreement:
    """Agreement of judge labels (None: unparseable, skipped) with matcher labels on the same responses."""
    if len(judge) != len(matcher):
        raise ValueError(f"agreement needs labels of the same responses, got {len(judge)} and {len(matcher)}")
    pairs = [(j, m) for j, m in zip(judge, matcher) if j is not None]
    judged, matched = [j for j, _ in pairs], [m for _, m in pairs]
    count = len(pairs)
    return Agreement(
        count, len(judge) - count,
        sum(j == m for j, m in pairs) / count if count else None,
        cohen_kappa(judged, matched),
        sum(judged) / count if count else None, sum(matched) / count if count else None)


def fact_matcher_agreement(items: list[JudgeItem], verdicts: list[Verdict]) -> dict[str, Agreement]:
    """Judge vs sdft_core.eval.fact_matcher.score_facts on the items that have facts: strict vs strict, lenient vs lenient."""
    if [item.id for item in items] != [verdict.id for verdict in verdicts]:
        raise ValueError("items and verdicts must be the same responses in the same order")
    scored = [(score_facts(item.response, item.facts, item.wrong or []), verdict)
              for item, verdict in zip(items, verdicts) if item.facts is not None]
    return {
        "strict": agreement([v.strict for _, v in scored], [score.strict for score, _ in scored]),
        "lenient": agreement([v.lenient for _, v in scored], [score.lenient for score, _ in scored]),
    }


# --- Entry point -----------------------------------------------------------------------------------------------------
def read_judge_items(path: str | Path) -> list[JudgeItem]:
    rows = read_jsonl(path)
    items = []
    for number, row in enumerate(rows, start=1):
        fields = {name: require(path, number, row, name, str) for name in ("id", "question", "reference_answer")}
        # An empty response is a legitimate (wrong) answer to judge, not a malformed row.
        response = require(path, number, row, "response", str, non_empty=False)
        facts = row.get("facts")
        if facts is not None and not (isinstance(facts, list) and facts and all(
                isinstance(aliases, list) and aliases and all(isinstance(a, str) and a.strip() for a in aliases)
                for aliases in facts)):
            raise DatasetError(path, number, "facts", "must be a non-empty list of non-empty lists of strings")
        wrong = row.get("wrong")
        if wrong is not None and not (isinstance(wrong, list) and all(isinstance(w, str) and w.strip()
                                                                      for w in wrong)):
            raise DatasetError(path, number, "wrong", "must be a list of non-empty strings")
        items.append(JudgeItem(**fields, response=response, facts=facts, wrong=wrong))
    check_unique_ids(path, rows)
    return items


@dataclass
class JudgeConfig(ClientConfig):
    model: str = "gpt-5-mini"
    """Judge model (paper: GPT-5-mini)."""
    rubric: str = "knowledge"
    """"knowledge" (CORRECT / PARTIALLY_CORRECT / INCORRECT) or "medical" (CORRECT / INCORRECT)."""
    input_path: str = ""
    """JSONL of responses: id, question, reference_answer, response, optional facts and wrong."""
    output_path: str = ""
    """JSONL of verdicts written here; a summary goes to <output>.summary.json."""
    temperature: float | None = None
    """Judge sampling temperature (None: the server's default; GPT-5-mini accepts no other)."""
    max_tokens: int | None = None
    """Longest judge output in tokens (None: the server's default; reasoning models need room to think)."""

    def __post_init__(self):
        super().__post_init__()
        if self.rubric not in RUBRICS:
            raise ValueError(f"JudgeConfig.rubric must be one of {sorted(RUBRICS)}, got {self.rubric!r}")
        if not self.input_path or not self.output_path:
            raise ValueError("JudgeConfig needs input_path and output_path")


def run_judge(config: JudgeConfig) -> dict:
    """Judge every response of config.input_path; returns the summary it writes."""
    check_credentials(config)
    items = read_judge_items(config.input_path)
    client = ChatClient(config)
    verdicts = judge_responses(client, config.rubric, items, config.temperature, config.max_tokens)
    write_jsonl(config.output_path, [{"id": v.id, "verdict": v.label, "strict": v.strict, "lenient": v.lenient,
                                      "judge_output": v.judge_output} for v in verdicts])
    summary = summarize(verdicts, config.rubric)
    result = {"rubric": config.rubric, "model": config.model, "host": client.host, "total": summary.total,
              "counts": summary.counts, "unparseable_ids": summary.unparseable_ids,
              "strict_accuracy": summary.strict_accuracy, "lenient_accuracy": summary.lenient_accuracy}
    print(summary.line())
    if any(item.facts is not None for item in items):
        agreements = fact_matcher_agreement(items, verdicts)
        result["fact_matcher_agreement"] = {name: vars(value) for name, value in agreements.items()}
        for name, value in agreements.items():
            kappa = "undefined" if value.kappa is None else f"{value.kappa:.3f}"
            share = "n/a" if value.agreement is None else f"{value.agreement:.1%}"
            print(f"judge vs fact matcher ({name}): agreement {share}, Cohen's kappa {kappa} "
                  f"on {value.compared} responses ({value.skipped_unparseable} unparseable skipped)")
    write_json(Path(config.output_path).with_suffix(".summary.json"), result)
    print(client.usage.report())
    return result


def main(argv: list[str] | None = None) -> None:
    run_command_line(run_judge, JudgeConfig, argv, __doc__)


if __name__ == "__main__":
    main()
