"""The task registry: every embedded task exposes the same shape, so notebooks and the training loop are generic.

A task has training examples (student prompt, demonstration, optional privileged context), evaluation splits of
items with a task-specific answer key, and a deterministic scorer `score(response, reference) -> dict of bools`
whose "correct" entry is the task's accuracy (other entries, e.g. knowledge's "lenient", are reported beside it).
"""

from __future__ import annotations

from sdft_core.data import EvalItem, Example, Task
from sdft_core.eval.fact_matcher import score_facts
from tasks import knowledge, paper_tasks, skills


def _knowledge(variant: str = "qa") -> Task:
    """variant "qa": the Q&A pairs (paper Table 1's SFT/SDFT data); "corpus": the raw articles as training documents
    (CPT); "answer_only": demonstrations cut to the bare facts, the answer-only supervision of paper §4.4 / Table 2."""
    articles = knowledge.load_articles()
    questions = knowledge.load_questions("train", articles=articles)

    def items(split: str) -> list[EvalItem]:
        return [EvalItem(q.id, q.question, {"facts": q.facts, "wrong": q.wrong}, articles[q.article_id].text,
                         q.answer)
                for q in knowledge.load_questions(split, articles=articles)]

    def score(response: str, reference: dict) -> dict:
        result = score_facts(response, reference["facts"], reference["wrong"])
        return {"correct": result.strict, "strict": result.strict, "lenient": result.lenient}

    if variant == "corpus":
        train = [Example(a.id, "", a.text) for a in articles.values()]
    elif variant == "answer_only":
        train = [Example(q.id, q.question, "; ".join(aliases[0] for aliases in q.facts) + ".",
                         articles[q.article_id].text) for q in questions]
    else:
        train = knowledge.training_examples(questions, articles)
    name = "knowledge" if variant == "qa" else f"knowledge_{variant}"
    return Task(name, f"Knowledge acquisition ({variant}): invented 2025-2026 disasters (paper §4, Table 1)", train,
                {split: items(split) for split in ("train", "val", "test", "ood")}, score, max_new_tokens=48)


def _general() -> Task:
    """General-purpose prompts without demonstrations: the data of the re-invocation stage (on-policy distillation
    from the base model after SFT). No evaluation split: forgetting is measured on the separate "eval" prompts."""
    train = [Example(row["id"], row["prompt"], "") for row in knowledge.load_general_prompts("train")]
    return Task("general", "General-purpose prompts for re-invocation", train, {}, lambda r, ref: {}, 64)


def _skill(name: str) -> Task:
    load, score, description, max_new_tokens = {
        "tool_use": (skills.load_tool_use, skills.score_tool_call,
                     "Tool use: invented APIs in ToolAlpaca's format, one call per request (paper §4, B.3)", 64),
        "extraction": (skills.load_extraction, skills.score_extraction,
                       "Extraction: booking messages to a fixed JSON schema learned from demonstrations", 56),
    }[name]

    def items(split: str) -> list[EvalItem]:
        return [EvalItem(row.id, row.prompt, row.reference, demonstration=row.demonstration) for row in load(split)]

    return Task(name, description, skills.training_examples(load("train")),
                {split: items(split) for split in ("train", "val", "test")}, score, max_new_tokens=max_new_tokens)


TASKS: dict[str, Callable[[], Task]] = {"knowledge": _knowledge,
                                        "knowledge_corpus": lambda: _knowledge("corpus"),
                                        "knowledge_answer_only": lambda: _knowledge("answer_only"),
                                        "general": _general,
                                        "tool_use": lambda: _skill("tool_use"),
                                        "extraction": lambda: _skill("extraction"),
                                        # The paper's own data, from the paper-scale builders (tasks.paper_tasks)
                                        "paper_tool_use": lambda: paper_tasks.tool_use(),
                                        "paper_science": lambda: paper_tasks.science(),
                                        "paper_medical": lambda: paper_tasks.medical(),
                                        "paper_knowledge": lambda: paper_tasks.knowledge(),
                                        "paper_knowledge_corpus": lambda: paper_tasks.knowledge(corpus=True)}


def load_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name]()
