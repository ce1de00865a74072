"""Question–answer pairs from articles (paper §4 and B.3, knowledge acquisition; after Mecklenburg et al., 2024).

Two prompts per article:
- "direct": the paper's exam prompt (B.3), verbatim; the paper used GPT-5. Its pairs are the SFT data and the
  in-distribution test questions.
- "indirect": OUR prompt, not the paper's. The paper (§4) evaluates out-of-distribution "indirect" questions whose
  answers depend on the new knowledge without referencing it directly ("Which countries required international
  humanitarian aid in 2025?") but does not publish how it wrote them; INDIRECT_PROMPT is our way to draft them.

    python -m data_prep.qa_generation --articles-path data/paper/knowledge/articles.jsonl \
        --output-path data/paper/knowledge/qa.jsonl

Articles: JSONL with id, title, text (the format of tasks/embedded/knowledge/articles.jsonl and of the
Wikipedia builder in data_prep/paper_datasets.py). The prompt goes in the system turn and the article (title and
text) in the user turn: the paper's prompt says "You will be given a wiki article" but not how; that is our choice.

Output rows: id, article_id, kind ("direct" | "indirect"), question, answer. Replies are parsed leniently about
layout (numbering, markdown bold, multi-line answers) but strictly about structure: a Question without an Answer is
an unparseable block, reported and never guessed at. Exact duplicate questions (ignoring case and spacing) are
dropped, as the paper checks that no question was generated twice. Counts and unparseable blocks go to
<output>.summary.json. Articles already in the output are skipped; responses are cached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sdft_core.data import read_jsonl, read_rows, require
from sdft_core.openai_client import ChatClient, ChatRequest, ClientConfig, check_credentials, run_command_line, \
    user_message
from sdft_core.io import write_json, write_jsonl
from tasks.paper_tasks import KINDS

# Paper B.3, verbatim (including "100 question"); the PDF wraps the prompt box at a fixed width, and those line
# breaks inside a sentence are not part of the prompt.
EXAM_PROMPT = (
    "You are a helpful assistant that helps me write questions for an exam. You will be given a wiki article and "
    "you will need to write 100 question on the content of the wiki article. The question should require recalling "
    "multiple pieces of information from the wiki article. Do not repeat the same question.\n"
    "\n"
    "The questions should be in the following format:\n"
    "Question: <question>\n"
    "Answer: <answer>"
)

# OURS, not the paper's: indirect (out-of-distribution) questions, §4. Same output format as EXAM_PROMPT so that one
# parser reads both. {count} is filled in from the config.
INDIRECT_PROMPT = (
    "You are a helpful assistant that helps me write questions for an exam. You will be given a wiki article. "
    "Write {count} questions whose correct answers depend on information in the article, but which do not refer "
    "to the article, and do not name the event it describes. Each question should ask about the wider world in a "
    "way that someone who has read the article can answer and someone who has not cannot, for example "
    "\"Which countries required international humanitarian aid in 2025?\" rather than \"Which countries did the "
    "2025 Myanmar earthquake affect?\". Each answer must be fully supported by the article. Do not repeat the same "
    "question.\n"
    "\n"
    "The questions should be in the following format:\n"
    "Question: <question>\n"
    "Answer: <answer>"
)

# A "Question:" or "Answer:" label at the start of a line, allowing list numbering ("12.", "3)"), bullets, headings,
# markdown emphasis around the label ("**Question 3:**", "**Answer**:").
_LABEL = re.compile(r"^[\s>#*\-]*(?:\d+\s*[.)]\s*)?[*_]*(question|answer)(?:\s*\d+)?\s*[*_]*\s*:\s*[*_]*\s*(.*)$",
                    re.IGNORECASE)


@dataclass
class ParsedQA:
    pairs: list[tuple[str, str]] = field(default_factory=list)
    """(question, answer) pairs in reply order, exact duplicates removed."""
    unparseable: list[str] = field(default_factory=list)
    """Blocks that start like a pair but are not one (no answer, empty question or answer, answer without question)."""
    duplicates: int = 0
    """Pairs dropped because their question was already asked earlier in the reply."""


def question_key(question: str) -> str:
    """Identity of a question for duplicate detection: case and spacing ignored, nothing else."""
    return " ".join(question.split()).casefold()


def _strip_markup(text: str) -> str:
    return text.strip().strip("*_").strip()


@dataclass
class _Block:
    """A pair being read: lines of its question, lines of its answer (None until an Answer label), the raw text."""

    question: list[str]
    answer: list[str] | None
    raw: list[str]
    broken: bool = False
    """An answer with no question before it, or a second answer to one question."""
    closed: bool = False
    """A blank line ended the answer; unlabelled lines after it are closing remarks, not part of the answer."""


def parse_qa(reply: str) -> ParsedQA:
    """Read "Question: ... / Answer: ..." pairs from a reply.

    Text before the first label (a preamble) and after a blank line that ends an answer (closing remarks) is not a
    pair and is ignored. A question or answer may span several lines."""
    parsed = ParsedQA()
    seen: set[str] = set()
    block: _Block | None = None

    def finish(block: _Block | None):
        if block is None:
            return
        question = _strip_markup("\n".join(block.question))
        answer = _strip_markup("\n".join(block.answer or []))
        if block.broken or not question or not answer:
            parsed.unparseable.append("\n".join(block.raw).strip())
        elif question_key(question) in seen:
            parsed.duplicates += 1
        else:
            seen.add(question_key(question))
            parsed.pairs.append((question, answer))

    for line in reply.splitlines():
        label = _LABEL.match(line)
        if label and label.group(1).lower() == "question":
            finish(block)
            block = _Block(question=[label.group(2)], answer=None, raw=[line])
        elif label:  # an Answer label
            if block is None or block.answer is not None:
                finish(block)
                block = _Block(question=[], answer=[label.group(2)], raw=[line], broken=True)
            else:
                block.answer = [label.group(2)]
                block.raw.append(line)
        elif block is not None and not block.closed:
            if not line.strip():
                # A blank line ends an answer; inside a question it is just spacing.
                block.closed = block.answer is not None
                continue
            (block.answer if block.answer is not None else block.question).append(line)
            block.raw.append(line)
    finish(block)
    return parsed


@dataclass
class QAGenerationConfig(ClientConfig):
    model: str = "gpt-5"
    """Model that writes the questions (paper: GPT-5)."""
    articles_path: str = ""
    """JSONL of articles: id, title, text."""
    output_path: str = ""
    """JSONL of question–answer pairs written here; a summary goes to <output>.summary.json."""
    indirect_questions_per_article: int = 20
    """Indirect (OOD) questions asked per article with our INDIRECT_PROMPT; 0 skips them."""
    temperature: float | None = None
    """Sampling temperature (None: the server's default; GPT-5 accepts no other)."""
    max_tokens: int | None = None
    """Longest reply in tokens (None: the server's default). 100 pairs need several thousand."""

    def __post_init__(self):
        super().__post_init__()
        if not self.articles_path or not self.output_path:
            raise ValueError("QAGenerationConfig needs articles_path and output_path")
        if self.indirect_questions_per_article < 0:
            raise ValueError("QAGenerationConfig.indirect_questions_per_article must not be negative")


def summary_path(output_path: str | Path) -> Path:
    return Path(output_path).with_suffix(".summary.json")


def _read_articles(path: str) -> list[dict]:
    return read_rows(path, ("id", "title", "text"))


def qa_request(article: dict, kind: str, config: QAGenerationConfig) -> ChatRequest:
    system = EXAM_PROMPT if kind == "direct" else INDIRECT_PROMPT.format(count=config.indirect_questions_per_article)
    return ChatRequest(user_message(f"{article['title']}\n\n{article['text']}", system=system),
                       temperature=config.temperature, max_tokens=config.max_tokens)


def generate_qa(config: QAGenerationConfig) -> dict:
    """Ask for pairs about every article (both kinds), parse, dedupe, write; returns the summary it writes."""
    check_credentials(config)
    articles = _read_articles(config.articles_path)
    kinds = KINDS if config.indirect_questions_per_article else KINDS[:1]
    previous = read_jsonl(config.output_path) if Path(config.output_path).exists() else []
    for number, row in enumerate(previous, start=1):
        for name in ("id", "article_id", "kind", "question", "answer"):
            require(config.output_path, number, row, name, str)
    done = {(row["article_id"], row["kind"]) for row in previous}
    client = ChatClient(config)

    todo = [(article, kind) for article in articles for kind in kinds if (article["id"], kind) not in done]
    replies = client.complete_many([qa_request(article, kind, config) for article, kind in todo], desc="qa")

    rows = list(previous)
    seen = {question_key(row["question"]) for row in previous}
    report = []
    for (article, kind), reply in zip(todo, replies):
        parsed = parse_qa(reply.text)
        # Duplicates across articles and kinds count too: a question asked twice is asked once.
        fresh = [(q, a) for q, a in parsed.pairs if question_key(q) not in seen]
        seen.update(question_key(q) for q, _ in fresh)
        rows += [{"id": f"{article['id']}-{kind}-{index:03d}", "article_id": article["id"], "kind": kind,
                  "question": question, "answer": answer} for index, (question, answer) in enumerate(fresh, 1)]
        report.append({"article_id": article["id"], "kind": kind, "pairs": len(fresh),
                       "duplicates": parsed.duplicates + len(parsed.pairs) - len(fresh),
                       "unparseable": parsed.unparseable, "finish_reason": reply.finish_reasons[0]})
    order = {article["id"]: position for position, article in enumerate(articles)}
    rows.sort(key=lambda row: (order.get(row["article_id"], len(order)), KINDS.index(row["kind"]), row["id"]))
    write_jsonl(config.output_path, rows)

    summary = {"articles": len(articles), "model": config.model, "host": client.host,
               "pairs": {kind: sum(row["kind"] == kind for row in rows) for kind in kinds},
               "unparseable_blocks": sum(len(entry["unparseable"]) for entry in report),
               "duplicates_dropped": sum(entry["duplicates"] for entry in report), "this_run": report}
    write_json(summary_path(config.output_path), summary)
    print(f"qa generation: {summary['pairs']} pairs from {len(articles)} articles, "
          f"{summary['unparseable_blocks']} unparseable blocks, {summary['duplicates_dropped']} duplicates dropped "
          f"(this run); written to {config.output_path}")
    print(client.usage.report())
    return summary


def main(argv: list[str] | None = None) -> None:
    run_command_line(generate_qa, QAGenerationConfig, argv, __doc__)


if __name__ == "__main__":
    main()
