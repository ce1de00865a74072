"""The paper's four tasks (paper §4 and B.3) as registry entries, loaded from what the paper-scale builders wrote.

    paper_tool_use   ToolAlpaca: API docs + request → Action / Action Input calls; exact, order-free argument match.
    paper_science    SciKnowEval Chemistry L-3 multiple choice; exact match of the final option letter.
    paper_medical    HuatuoGPT-o1 open-ended clinical questions; the paper's LLM judge, medical rubric.
    paper_knowledge  Q&A about the 2025 disaster articles; the paper's LLM judge, knowledge rubric (strict, lenient).

Data folder: `data/paper` at the repository root, or the folder named by the environment variable SDFT_PAPER_DATA
(a relative path there is relative to the working directory). It holds what these commands write:

    python -m data_prep.paper_datasets --datasets all --output-dir data/paper
    python -m data_prep.demonstrations --input-path data/paper/sciknoweval/train.jsonl \
        --output-path data/paper/sciknoweval/train_demonstrations.jsonl
    python -m data_prep.qa_generation --articles-path data/paper/knowledge/articles.jsonl \
        --output-path data/paper/knowledge/qa.jsonl

A missing file stops loading with one error (MissingPaperData) naming every missing path and the command that builds
it; a malformed row stops it with a DatasetError naming the file, the row and the field.

Scoring:
- Tool use (B.3: "regex matching against the ground-truth API call, accounting for variations in argument
  ordering"): every Action / Action Input pair of the response is parsed (tasks.skills.parse_tool_calls; text
  before, between and after the calls is ignored). "correct": the calls equal the golden calls in number and order,
  action names exactly, inputs as parsed JSON compared with skills.values_match (key order free, strings by case and
  surrounding spaces, numbers by value, "3" != 3). A golden input that is empty means no arguments ({}); one that is
  not JSON (none expected: ToolAlpaca's are JSON) is compared as whitespace-normalised text, and the description
  counts them. "action_correct": the sequence of action names alone is right.
- Science: multiple_choice.multiple_choice_matches (the response's final option letter == the answer letter).
- Medical and knowledge: sdft_core.eval.judge's rubrics through the cached, retrying chat client, one judge call per
  response (the scorer's `score_many` judges a whole list concurrently, with the same cache). The client is built on
  the first score, so loading a task needs no key; the key is read from the environment only (OPENAI_API_KEY), and a
  missing one is the client's own MissingCredentialsError at scoring time. Judge model: gpt-5-mini (paper B.3), or
  $SDFT_JUDGE_MODEL; endpoint: OpenAI, or $OPENAI_BASE_URL (e.g. a vLLM server); cache: the client's default folder,
  or $SDFT_JUDGE_CACHE_DIR. An unparseable verdict counts as not correct and is reported: "judged" is False for it
  (so the mean of "judged" is the fraction of parsed verdicts).

Knowledge splits: qa_generation writes one file (knowledge/qa.jsonl) of "direct" pairs (the paper's exam prompt) and
"indirect" ones (our OOD prompt). The direct pairs are split here into train / val / test, by article and by seed
(KNOWLEDGE_SPLIT_SEED, KNOWLEDGE_SPLIT_FRACTIONS): each article's direct questions, sorted by id, are shuffled with a
generator seeded by (seed, article id) and cut into test, val and the rest (train). So every article appears in
every split (the task is to learn the articles; held-out questions test what was learned), the split does not depend
on the file's row order, and regenerating or adding one article leaves the other articles' splits unchanged. Every
indirect pair is in the "ood" split and none is trained on. The paper does not give its split sizes; ours is 80/10/10.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from sdft_core.data import DatasetError, EvalItem, Example, Task, read_rows, require
from sdft_core.eval.judge import RUBRICS, UNPARSEABLE, JudgeItem, judge_responses, make_verdict
from sdft_core.openai_client import DEFAULT_CACHE_DIR, ChatClient, ChatRequest, ClientConfig, user_message
from tasks.multiple_choice import multiple_choice_matches
from tasks.skills import ToolCall, parse_tool_calls, values_match

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "paper"
DATA_ENV = "SDFT_PAPER_DATA"

JUDGE_MODEL = "gpt-5-mini"
"""The paper's judge (B.3); $SDFT_JUDGE_MODEL overrides it."""

KINDS = ("direct", "indirect")  # the knowledge questions' kinds (data_prep.qa_generation writes both)
KNOWLEDGE_SPLIT_SEED = 0
KNOWLEDGE_SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}
"""Per article, this fraction of the direct questions (rounded) goes to each held-out split; the rest trains."""

# Generation budgets: paper Table 3 (skill learning) and Table 4 (knowledge acquisition).
SKILL_MAX_NEW_TOKENS = 2048
KNOWLEDGE_MAX_NEW_TOKENS = 1024


def data_dir() -> Path:
    """The folder the paper tasks read: $SDFT_PAPER_DATA, or data/paper at the repository root."""
    configured = os.environ.get(DATA_ENV, "").strip()
    return Path(configured) if configured else DEFAULT_DATA_DIR


class MissingPaperData(FileNotFoundError):
    """Files a paper task needs have not been built; the message names each one and the command that builds it."""


def _require_files(needed: list[tuple[Path, str]]) -> None:
    missing = [(path, command) for path, command in needed if not path.exists()]
    if missing:
        lines = "\n".join(f"  {path}\n    build it with: {command}" for path, command in missing)
        raise MissingPaperData(f"paper task data missing (data folder {data_dir()}, set ${DATA_ENV} to use "
                               f"another):\n{lines}")


def _builder(root: Path, dataset: str) -> str:
    return f"python -m data_prep.paper_datasets --datasets {dataset} --output-dir {root}"


# ==== Tool use (ToolAlpaca) =========================================================================================


def _golden_input(text: str) -> tuple[bool, Any]:
    """(is JSON, value) of a golden Action Input; an empty input means no arguments."""
    if not text.strip():
        return True, {}
    try:
        return True, json.loads(text)
    except json.JSONDecodeError:
        return False, text


def _call_matches(call: ToolCall, golden: dict) -> bool:
    if call.action != golden["action"]:
        return False
    is_json, expected = _golden_input(golden["action_input"])
    if not is_json:
        return " ".join(call.input_text.split()) == " ".join(expected.split())
    return call.valid_json and values_match(call.value, expected)


def score_tool_calls(response: str, reference: dict) -> dict:
    """"correct": the response's calls are the golden calls, in order (see the module docstring);
    "action_correct": the sequence of action names is."""
    calls, golden = parse_tool_calls(response), reference["golden_actions"]
    action_correct = [call.action for call in calls] == [call["action"] for call in golden]
    return {"correct": action_correct and all(_call_matches(c, g) for c, g in zip(calls, golden)),
            "action_correct": action_correct}


def _golden_actions(path: Path, number: int, row: dict) -> list[dict]:
    actions = require(path, number, row, "golden_actions", list)
    for index, action in enumerate(actions):
        where = f"golden_actions[{index}]"
        if not isinstance(action, dict):
            raise DatasetError(path, number, where, "expected {\"action\": str, \"action_input\": str}")
        if not isinstance(action.get("action"), str) or not action["action"].strip():
            raise DatasetError(path, number, f"{where}.action", "missing, not a string or empty")
        if not isinstance(action.get("action_input"), str):
            raise DatasetError(path, number, f"{where}.action_input", "missing or not a string")
    return actions


def tool_use() -> Task:
    root = data_dir()
    train_path, test_path = root / "toolalpaca" / "train.jsonl", root / "toolalpaca" / "test.jsonl"
    _require_files([(train_path, _builder(root, "toolalpaca")), (test_path, _builder(root, "toolalpaca"))])
    train = [Example(row["id"], row["prompt"], row["demonstration"])
             for row in read_rows(train_path, ("id", "prompt", "demonstration"))]
    test, text_inputs = [], 0
    for number, row in enumerate(read_rows(test_path, ("id", "prompt")), start=1):
        golden = _golden_actions(test_path, number, row)
        text_inputs += sum(not _golden_input(action["action_input"])[0] for action in golden)
        test.append(EvalItem(row["id"], row["prompt"], {"golden_actions": golden}))
    description = (f"Tool use: ToolAlpaca, the authors' train/test split (paper §4, B.3); {len(train)} training "
                   f"examples, {len(test)} test instructions; calls matched in order, arguments as JSON in any order")
    if text_inputs:
        description += f"; {text_inputs} golden Action Inputs are not JSON and are compared as text"
    return Task("paper_tool_use", description, train, {"test": test}, score_tool_calls,
                         max_new_tokens=SKILL_MAX_NEW_TOKENS)


# ==== Science Q&A (SciKnowEval Chemistry L-3) =======================================================================


def score_multiple_choice(response: str, reference: dict) -> dict:
    return {"correct": multiple_choice_matches(response, reference["answer"])}


def _choice_rows(path: Path) -> list[dict]:
    rows = read_rows(path, ("id", "prompt", "answer"))
    for number, row in enumerate(rows, start=1):
        try:
            multiple_choice_matches("", row["answer"])
        except ValueError as err:
            raise DatasetError(path, number, "answer", str(err)) from None
    return rows


def science() -> Task:
    root = data_dir()
    folder = root / "sciknoweval"
    demonstrations_path = folder / "train_demonstrations.jsonl"
    _require_files([(folder / f"{split}.jsonl", _builder(root, "sciknoweval")) for split in ("train", "val", "test")]
                   + [(demonstrations_path, f"python -m data_prep.demonstrations --input-path {folder / 'train.jsonl'}"
                                            f" --output-path {demonstrations_path}")])
    train_rows = _choice_rows(folder / "train.jsonl")
    by_id = {row["id"]: row for row in train_rows}
    demonstrations: dict[str, str] = {}
    demonstration_rows = read_rows(demonstrations_path, ("id", "prompt", "demonstration", "answer"))
    for number, row in enumerate(demonstration_rows, start=1):
        source = by_id.get(row["id"])
        if source is None:
            raise DatasetError(demonstrations_path, number, "id",
                               f"{row['id']!r} is not in {folder / 'train.jsonl'}: the demonstrations are from "
                               "another build of the split; rerun data_prep.demonstrations")
        for name in ("prompt", "answer"):
            if row[name] != source[name]:
                raise DatasetError(demonstrations_path, number, name,
                                   f"differs from {folder / 'train.jsonl'} for id {row['id']!r}; rerun "
                                   "data_prep.demonstrations")
        if not multiple_choice_matches(row["demonstration"], row["answer"]):
            raise DatasetError(demonstrations_path, number, "demonstration",
                               f"its final answer is not {row['answer']!r}")
        demonstrations[row["id"]] = row["demonstration"]
    train = [Example(row["id"], row["prompt"], demonstrations[row["id"]]) for row in train_rows
             if row["id"] in demonstrations]
    skipped = len(train_rows) - len(train)

    def items(split: str) -> list[EvalItem]:
        return [EvalItem(row["id"], row["prompt"], {"answer": row["answer"]})
                for row in _choice_rows(folder / f"{split}.jsonl")]

    description = (f"Science Q&A: SciKnowEval Chemistry L-3 multiple choice (paper §4, B.3); {len(train)} training "
                   f"examples with a demonstration, {skipped} of {len(train_rows)} training prompts left out for "
                   "want of one")
    train_keys = [EvalItem(row["id"], row["prompt"], {"answer": row["answer"]}) for row in train_rows
                  if row["id"] in demonstrations]
    return Task("paper_science", description, train,
                         {"train": train_keys, **{split: items(split) for split in ("val", "test")}},
                         score_multiple_choice, max_new_tokens=SKILL_MAX_NEW_TOKENS)


# ==== LLM judge (medical, knowledge) ================================================================================


def judge_client_config():
    """The judge's client settings, read from the environment when the first response is scored."""
    return ClientConfig(model=os.environ.get("SDFT_JUDGE_MODEL", "").strip() or JUDGE_MODEL,
                        cache_dir=os.environ.get("SDFT_JUDGE_CACHE_DIR", "").strip() or DEFAULT_CACHE_DIR)


class JudgeScorer:
    """score(response, reference) through sdft_core.eval.judge with one rubric. reference: {"question", "answer"}.

    The chat client is made on the first call (so loading the task needs no key) and reused. `score_many` judges a
    list of responses concurrently; its verdicts land in the same cache that single calls read."""

    def __init__(self, rubric: str):
        self.rubric = rubric
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = ChatClient(judge_client_config())
        return self._client

    def _result(self, verdict) -> dict:
        judged = verdict.label != UNPARSEABLE
        strict, lenient = bool(verdict.strict), bool(verdict.lenient)
        if self.rubric == "medical":
            return {"correct": strict, "judged": judged}
        return {"correct": strict, "strict": strict, "lenient": lenient, "judged": judged}

    def __call__(self, response: str, reference: dict) -> dict:

        rubric = RUBRICS[self.rubric]
        # The request judge_responses makes (no temperature, no max_tokens), so both share cache entries.
        request = ChatRequest(user_message(rubric.prompt(reference["question"], reference["answer"], response)))
        return self._result(make_verdict("", self.client.complete(request).text, rubric))

    def score_many(self, responses: list[str], references: list[dict]) -> list[dict]:
        if len(responses) != len(references):
            raise ValueError(f"{len(responses)} responses for {len(references)} references")
        items = [JudgeItem(str(index), reference["question"], reference["answer"], response)
                 for index, (response, reference) in enumerate(zip(responses, references))]
        return [self._result(verdict) for verdict in judge_responses(self.client, self.rubric, items)]


# ==== Medical (HuatuoGPT-o1) ========================================================================================


def medical() -> Task:
    root = data_dir()
    folder = root / "medical"
    _require_files([(folder / f"{split}.jsonl", _builder(root, "medical")) for split in ("train", "test")])
    train = [Example(row["id"], row["prompt"], row["demonstration"])
             for row in read_rows(folder / "train.jsonl", ("id", "prompt", "demonstration"))]
    test = [EvalItem(row["id"], row["prompt"], {"answer": row["answer"], "question": row["prompt"]})
            for row in read_rows(folder / "test.jsonl", ("id", "prompt", "answer"))]
    description = (f"Medical: HuatuoGPT-o1 (paper §4, B.3); {len(train)} English SFT examples, {len(test)} verifiable "
                   f"test questions for the LLM judge (paper's medical rubric)")
    return Task("paper_medical", description, train, {"test": test}, JudgeScorer("medical"),
                         max_new_tokens=SKILL_MAX_NEW_TOKENS)


# ==== Knowledge acquisition (2025 disasters) ========================================================================


def knowledge_splits(rows: list[dict], seed: int = KNOWLEDGE_SPLIT_SEED,
                     fractions: dict[str, float] = KNOWLEDGE_SPLIT_FRACTIONS) -> dict[str, list[dict]]:
    """Direct Q&A rows split into train/val/test by article and seed; indirect rows are "ood" (module docstring)."""
    by_article: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["kind"] == "direct":
            by_article[row["article_id"]].append(row)
    chosen: dict[str, str] = {}
    for article_id, questions in by_article.items():
        ordered = sorted(questions, key=lambda row: row["id"])
        random.Random(f"{seed}:{article_id}").shuffle(ordered)
        start = 0
        for split in ("test", "val"):
            end = start + round(len(ordered) * fractions[split])
            chosen.update((row["id"], split) for row in ordered[start:end])
            start = end
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": [], "ood": []}
    for row in rows:  # file order within each split
        splits["ood" if row["kind"] == "indirect" else chosen.get(row["id"], "train")].append(row)
    return splits


def knowledge(corpus: bool = False) -> Task:
    """The Q&A task; corpus=True: the same task with the articles themselves as training documents (CPT)."""
    root = data_dir()
    folder = root / "knowledge"
    articles_path, qa_path = folder / "articles.jsonl", folder / "qa.jsonl"
    _require_files([(articles_path, _builder(root, "wikipedia")),
                    (qa_path, f"python -m data_prep.qa_generation --articles-path {articles_path} "
                              f"--output-path {qa_path}")])
    articles = {row["id"]: row["text"] for row in read_rows(articles_path, ("id", "title", "text"))}
    rows = read_rows(qa_path, ("id", "article_id", "kind", "question", "answer"))
    for number, row in enumerate(rows, start=1):
        if row["kind"] not in KINDS:
            raise DatasetError(qa_path, number, "kind", f"must be one of {KINDS}, got {row['kind']!r}")
        if row["article_id"] not in articles:
            raise DatasetError(qa_path, number, "article_id", f"unknown article {row['article_id']!r} (not in "
                                                               f"{articles_path})")
    splits = knowledge_splits(rows)
    train = [Example(row["id"], row["question"], row["answer"], articles[row["article_id"]])
             for row in splits["train"]]

    def items(split: str) -> list[EvalItem]:
        return [EvalItem(row["id"], row["question"], {"answer": row["answer"], "question": row["question"]},
                                  articles[row["article_id"]]) for row in splits[split]]

    description = (f"Knowledge acquisition: 2025 disaster articles, generated Q&A (paper §4, B.3); {len(articles)} "
                   f"articles, {len(train)} training pairs, " + ", ".join(
                       f"{len(splits[split])} {split}" for split in ("val", "test", "ood"))
                   + f" questions (direct pairs split by article, seed {KNOWLEDGE_SPLIT_SEED}) for the LLM judge "
                     "(paper's knowledge rubric)")
    if corpus:
        train = [Example(article_id, "", text) for article_id, text in articles.items()]
        description = "Continual pre-training corpus: " + description
    return Task("paper_knowledge_corpus" if corpus else "paper_knowledge", description, train,
                         {split: items(split) for split in ("train", "val", "test", "ood")}, JudgeScorer("knowledge"),
                         max_new_tokens=KNOWLEDGE_MAX_NEW_TOKENS)
