"""Builders for the paper's datasets (paper §4 and B.3), for runs at paper scale. They need the network.

    python -m data_prep.paper_datasets --datasets all --output-dir data/paper

Each builder writes JSONL files (atomically) into <output-dir>/<dataset>/ and, last, a summary.json with counts,
what was dropped and why, and a fingerprint of its settings; a rerun with the same settings skips the dataset
(--force rebuilds). Rows carry id, prompt and, where the data has one, demonstration (the fields of
sdft_core.data.Example), plus what evaluation needs (answer, golden_actions).

- toolalpaca/  train.jsonl, test.jsonl: ToolAlpaca's own train / test files; demonstrations come with the data.
- sciknoweval/ train.jsonl, val.jsonl, test.jsonl: Chemistry L-3, split 75/5/20 by seed. Training demonstrations
  are sampled afterwards with data_prep.demonstrations (paper: from GPT-4o).
- medical/     train.jsonl (HuatuoGPT-o1 English SFT questions and responses), test.jsonl (1,000 verifiable
  questions sampled by seed, with reference answers for the judge).
- knowledge/   articles.jsonl: the 2025 disaster articles of B.3, as plain text from the MediaWiki API; Q&A pairs are
  generated from it with data_prep.qa_generation.

Every hub id, URL and field name the builders read is in the SOURCES section below. Fields are checked when the
data is loaded: a schema that changed upstream stops the build with a DatasetError naming the source, row and field.
"""

from __future__ import annotations

import json
import random
import re
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdft_core.data import DatasetError, require
from sdft_core.io import fingerprint, read_json, write_json, write_jsonl
from sdft_core.options import config_from_argv

# ==== SOURCES: every external location and field name used below ====================================================


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset and the top-level fields the builders read from each row."""

    dataset: str
    config: str | None
    split: str
    fields: tuple[str, ...]

    def describe(self) -> str:
        return f"hf://{self.dataset}" + (f" ({self.config})" if self.config else "") + f" [{self.split}]"


# SciKnowEval publishes one "test" collection; the paper filters Chemistry L-3 and splits it ~75/5/20 itself.
# Rows: question; choices = {"text": [...], "label": ["A", ...]}; answerKey = the correct label; domain;
# details = {"level": "L3", ...}. The hub layout has changed before (per-domain configs, then one "v2" config):
# if loading fails, check the dataset card and update `config` here.
SCIKNOWEVAL = HubSource("hicai-zju/SciKnowEval", "v2", "test",
                        ("question", "choices", "answerKey", "domain", "details"))
SCIKNOWEVAL_DOMAIN = "Chemistry"
SCIKNOWEVAL_LEVEL = "L3"

# HuatuoGPT-o1 (Chen et al., 2024). Training: the stage-1 SFT set, English config (~20K rows); the paper's medical
# data has no chain of thought (§4.4), so Complex_CoT is not read and Response is the demonstration. Evaluation: the
# verifiable problems (open-ended question + ground-truth answer), of which the paper samples 1,000.
MEDICAL_SFT = HubSource("FreedomIntelligence/medical-o1-reasoning-SFT", "en", "train", ("Question", "Response"))
MEDICAL_VERIFIABLE = HubSource("FreedomIntelligence/medical-o1-verifiable-problem", None, "train",
                               ("Open-ended Verifiable Question", "Ground-True Answer"))

# ToolAlpaca (Tang et al., 2023), the authors' own split: train_data.json (400+ APIs, simulated multi-agent
# instances) and eval_simulated.json (10 APIs, instructions with golden calls; eval_real.json needs real API keys).
# A local copy of either file can be given instead of a URL.
TOOLALPACA_TRAIN = "https://raw.githubusercontent.com/tangqiaoyu/ToolAlpaca/main/data/train_data.json"
TOOLALPACA_TEST = "https://raw.githubusercontent.com/tangqiaoyu/ToolAlpaca/main/data/eval_simulated.json"
# Per API: Name, Description, NLDocumentation (natural-language docs of every function). Train APIs carry
# Instances [{input, intermediate_steps: [[[action, action_input, text], observation], ...]}], test APIs carry
# Instructions [str] and Golden_Answers [[{Action, Action_Input}, ...]]. APIs without Function_Description have no
# usable documentation and are skipped, as the authors' build_dataset.py does.
TOOLALPACA_API_FIELDS = ("Name", "Description", "NLDocumentation")
TOOLALPACA_META_TOOL = "getDetails"  # the ToolAlpaca agent's "read the docs" tool; our prompt already has the docs

WIKIPEDIA_API = "https://en.wikipedia.org/w/api.php"
# Paper B.3's list (its spelling) → the English Wikipedia title we fetch (redirects are followed). Names reused for
# storms of other years carry the year, and every fetched text must mention 2025. A title that is not found stops
# the build with Wikipedia's closest titles, to correct here.
DISASTER_ARTICLES: dict[str, str] = {
    "2025 Myanmar earthquake": "2025 Myanmar earthquake",
    "2025 Kamchatka earthquake": "2025 Kamchatka earthquake",
    "2025 Uttarakhand flash flood": "2025 Uttarakhand flash flood",
    "Typhoon Kalmaegi": "Typhoon Kalmaegi (2025)",
    "Tropical Storm Wipha": "Typhoon Wipha (2025)",
    "Cyclonic Ditwah": "Cyclone Ditwah",
    "Hurricane Melissa": "Hurricane Melissa",
    "Kentwood Carson Tornado": "2025 Kentwood–Carson tornado",
    "July 2025 Central Texas floods": "July 2025 Central Texas floods",
}

USER_AGENT = "sdft-kit/0.1 (reproducibility kit for 'Self-Distillation Enables Continual Learning'; data preparation)"

# ==== Prompts (ours: the paper does not print its task templates) ===================================================

TOOLALPACA_PROMPT = (
    "You can use the following API.\n"
    "\n"
    "API: {name}\n"
    "Description: {description}\n"
    "Functions:\n"
    "{documentation}\n"
    "\n"
    "User request: {request}\n"
    "\n"
    "Reply with the function calls that fulfil the request, each as two lines:\n"
    "Action: <function name>\n"
    "Action Input: <arguments as a JSON object>"
)

SCIKNOWEVAL_INSTRUCTION = (
    "Answer the multiple-choice question above. Reason it through, then give your final answer on the last line "
    "as \"Answer: X\", where X is the letter of the correct option."
)

# ==== Loading =======================================================================================================


def check_fields(source: str, rows: list[dict], fields: tuple[str, ...]) -> None:
    """Every row must have every field the builder reads; names the first row and field that do not."""
    for number, row in enumerate(rows, start=1):
        for name in fields:
            if name not in row:
                raise DatasetError(source, number, name, "missing field (has the upstream schema changed? update "
                                                         "SOURCES in data_prep/paper_datasets.py)")


def load_hub_rows(source: HubSource) -> list[dict]:
    """All rows of a hub dataset split as plain dicts, fields checked."""
    import datasets  # imported here: only builders that need the hub pay for it

    table = datasets.load_dataset(source.dataset, source.config, split=source.split)
    rows = [dict(row) for row in table]
    check_fields(source.describe(), rows, source.fields)
    return rows


def fetch_json(url: str, params: dict[str, Any] | None = None, timeout_s: float = 120.0) -> Any:
    """GET a JSON document over plain HTTP(S)."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"GET {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise RuntimeError(f"GET {url}: {err.reason} (is the network reachable?)") from None
    try:
        return json.loads(body)
    except json.JSONDecodeError as err:
        raise DatasetError(url, None, None, f"not valid JSON ({err.msg})") from None


def read_json_source(source: str) -> Any:
    """A JSON document from a URL or a local file."""
    if re.match(r"https?://", source):
        return fetch_json(source)
    path = Path(source)
    if not path.exists():
        raise DatasetError(path, None, None, "file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(path, None, None, f"not valid JSON ({err.msg})") from None


def _require_list_of_objects(source: str, document: Any) -> list[dict]:
    if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
        raise DatasetError(source, None, None, "expected a JSON list of objects")
    return document


# ==== ToolAlpaca ====================================================================================================


def toolalpaca_prompt(api: dict, request: str) -> str:
    return TOOLALPACA_PROMPT.format(name=api["Name"], description=api["Description"],
                                    documentation=api["NLDocumentation"].strip(), request=request.strip())


def render_actions(actions: list[tuple[str, str]]) -> str:
    """Tool calls as the demonstration shows them: "Action: ..." / "Action Input: ..." per call."""
    return "\n\n".join(f"Action: {action}\nAction Input: {action_input}" for action, action_input in actions)


def _documented_apis(source: str, apis: list[dict], skipped: Counter) -> list[tuple[int, dict]]:
    usable = []
    for number, api in enumerate(apis, start=1):
        if api.get("Function_Description") is None:
            skipped["API without Function_Description"] += 1
            continue
        for name in TOOLALPACA_API_FIELDS:
            require(source, number, api, name, str)
        usable.append((number, api))
    return usable


def toolalpaca_train_rows(source: str, apis: list[dict]) -> tuple[list[dict], dict]:
    """Training examples: API docs + the user's request → the Action / Action Input turns of the instance.

    Following the authors' build_dataset.py, instances without tool calls, with more than 5 steps, or that only
    call getDetails are skipped (counted in the returned stats)."""
    skipped: Counter = Counter()
    rows = []
    for number, api in _documented_apis(source, apis, skipped):
        instances = require(source, number, api, "Instances", list, non_empty=False)
        for position, instance in enumerate(instances):
            where = f"Instances[{position}]"
            if not isinstance(instance, dict) or not isinstance(instance.get("input"), str):
                raise DatasetError(source, number, f"{where}.input", "missing or not a string")
            steps = instance.get("intermediate_steps") or []
            if not isinstance(steps, list):
                raise DatasetError(source, number, f"{where}.intermediate_steps", "expected a list")
            if not steps:
                skipped["instance without tool calls"] += 1
                continue
            if len(steps) > 5:
                skipped["instance with more than 5 steps"] += 1
                continue
            actions = []
            for index, step in enumerate(steps):
                call = step[0] if isinstance(step, list) and step else None
                if not (isinstance(call, list) and len(call) >= 2 and all(isinstance(v, str) for v in call[:2])):
                    raise DatasetError(source, number, f"{where}.intermediate_steps[{index}]",
                                       "expected [[action, action_input, ...], observation]")
                if call[0] != TOOLALPACA_META_TOOL:
                    actions.append((call[0], call[1]))
            if not actions:
                skipped[f"instance calling only {TOOLALPACA_META_TOOL}"] += 1
                continue
            # The user agent's input may end with a hint for the simulator; the authors strip it too.
            request = instance["input"].rsplit("\nHint: ", 1)[0]
            rows.append({"id": f"toolalpaca-train-{number:04d}-{position:02d}",
                         "prompt": toolalpaca_prompt(api, request), "demonstration": render_actions(actions)})
    return rows, {"apis": len(apis), "examples": len(rows), "skipped": dict(skipped)}


def toolalpaca_test_rows(source: str, apis: list[dict]) -> tuple[list[dict], dict]:
    """Test examples: API docs + instruction → golden calls (also kept structured, for argument-order-free
    matching)."""
    skipped: Counter = Counter()
    rows = []
    for number, api in _documented_apis(source, apis, skipped):
        instructions = require(source, number, api, "Instructions", list)
        golden = require(source, number, api, "Golden_Answers", list)
        if len(golden) != len(instructions):
            raise DatasetError(source, number, "Golden_Answers",
                               f"has {len(golden)} entries for {len(instructions)} Instructions")
        for position, (instruction, answers) in enumerate(zip(instructions, golden)):
            if not isinstance(instruction, str) or not instruction.strip():
                raise DatasetError(source, number, f"Instructions[{position}]", "expected a non-empty string")
            if not isinstance(answers, list) or not answers:
                raise DatasetError(source, number, f"Golden_Answers[{position}]", "expected a non-empty list")
            actions = []
            for index, answer in enumerate(answers):
                if not (isinstance(answer, dict) and isinstance(answer.get("Action"), str)
                        and isinstance(answer.get("Action_Input"), str)):
                    raise DatasetError(source, number, f"Golden_Answers[{position}][{index}]",
                                       "expected {\"Action\": str, \"Action_Input\": str}")
                actions.append((answer["Action"], answer["Action_Input"]))
            rows.append({"id": f"toolalpaca-test-{number:03d}-{position:02d}",
                         "prompt": toolalpaca_prompt(api, instruction), "demonstration": render_actions(actions),
                         "golden_actions": [{"action": a, "action_input": i} for a, i in actions]})
    return rows, {"apis": len(apis), "examples": len(rows), "skipped": dict(skipped)}


# ==== SciKnowEval ===================================================================================================


def sciknoweval_prompt(question: str, labels: list[str], texts: list[str]) -> str:
    options = "\n".join(f"{label}. {text}" for label, text in zip(labels, texts))
    return f"{question.strip()}\n\n{options}\n\n{SCIKNOWEVAL_INSTRUCTION}"


def sciknoweval_splits(source: str, rows: list[dict], seed: int, train_fraction: float = 0.75,
                       val_fraction: float = 0.05) -> tuple[dict[str, list[dict]], dict]:
    """Chemistry L-3 multiple-choice rows, split train/val/test by seed.

    Ids hash the question and its options, and the shuffle starts from rows sorted by id, so the split depends on
    the seed and the content only, not on the order the hub returns rows in."""
    skipped: Counter = Counter()
    examples: dict[str, dict] = {}
    for number, row in enumerate(rows, start=1):
        details = require(source, number, row, "details", dict)
        if row.get("domain") != SCIKNOWEVAL_DOMAIN or details.get("level") != SCIKNOWEVAL_LEVEL:
            skipped["other domain or level"] += 1
            continue
        question = require(source, number, row, "question", str)
        choices = row.get("choices")
        if not isinstance(choices, dict) or not choices.get("text"):
            skipped["not multiple choice"] += 1
            continue
        texts, labels = choices.get("text"), choices.get("label")
        if not (isinstance(texts, list) and isinstance(labels, list) and len(texts) == len(labels)
                and all(isinstance(v, str) for v in texts + labels)):
            raise DatasetError(source, number, "choices",
                               "expected {\"text\": [str], \"label\": [str]} of equal length")
        answer = require(source, number, row, "answerKey", str, non_empty=False).strip()
        if answer not in labels:
            skipped["answerKey not among the option labels"] += 1
            continue
        identifier = f"sciknoweval-chem-l3-{fingerprint(question, labels, texts)}"
        if identifier in examples:
            skipped["duplicate question and options"] += 1
            continue
        examples[identifier] = {"id": identifier, "prompt": sciknoweval_prompt(question, labels, texts),
                                "answer": answer}
    ordered = [examples[key] for key in sorted(examples)]
    random.Random(seed).shuffle(ordered)
    train_end = round(len(ordered) * train_fraction)
    val_end = train_end + round(len(ordered) * val_fraction)
    splits = {"train": ordered[:train_end], "val": ordered[train_end:val_end], "test": ordered[val_end:]}
    stats = {"rows": len(rows), "examples": len(ordered), "skipped": dict(skipped),
             **{f"{name}_examples": len(split) for name, split in splits.items()}}
    return splits, stats


# ==== HuatuoGPT-o1 (medical) ========================================================================================


def normalize_question(text: str) -> str:
    return " ".join(text.split()).casefold()


def medical_train_rows(source: str, rows: list[dict]) -> list[dict]:
    examples = []
    for number, row in enumerate(rows, start=1):
        question = require(source, number, row, "Question", str)
        response = require(source, number, row, "Response", str)
        examples.append({"id": f"medical-train-{number:05d}", "prompt": question, "demonstration": response})
    return examples


def medical_eval_rows(source: str, rows: list[dict], size: int, seed: int, exclude_questions: set[str]
                      ) -> tuple[list[dict], dict]:
    """`size` verifiable questions sampled by seed, skipping questions in `exclude_questions` (normalized)."""
    candidates = []
    excluded = 0
    for number, row in enumerate(rows, start=1):
        question = require(source, number, row, "Open-ended Verifiable Question", str)
        answer = require(source, number, row, "Ground-True Answer", str)
        if normalize_question(question) in exclude_questions:
            excluded += 1
            continue
        candidates.append({"id": f"medical-eval-{number:05d}", "prompt": question, "answer": answer})
    if size > len(candidates):
        raise ValueError(f"{source}: asked for {size} evaluation questions, only {len(candidates)} are eligible")
    chosen = sorted(random.Random(seed).sample(range(len(candidates)), size))
    return [candidates[i] for i in chosen], {"rows": len(rows), "excluded_as_in_training": excluded,
                                             "eligible": len(candidates), "sampled": size}


# ==== Wikipedia =====================================================================================================


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def fetch_wikipedia_article(api_url: str, title: str) -> dict:
    """Plain text of one English Wikipedia article through the MediaWiki API (TextExtracts), with its revision."""
    data = fetch_json(api_url, {"action": "query", "format": "json", "formatversion": 2, "titles": title,
                                "redirects": 1, "prop": "extracts|pageprops|revisions|info", "explaintext": 1,
                                "exsectionformat": "plain", "rvprop": "ids", "inprop": "url"})
    pages = data.get("query", {}).get("pages") if isinstance(data, dict) else None
    if not isinstance(pages, list) or len(pages) != 1 or not isinstance(pages[0], dict):
        raise DatasetError(api_url, None, "query.pages", f"unexpected MediaWiki answer for {title!r}")
    page = pages[0]
    if page.get("missing") or page.get("invalid"):
        found = fetch_json(api_url, {"action": "query", "format": "json", "formatversion": 2, "list": "search",
                                     "srsearch": title, "srlimit": 5})
        suggestions = [hit.get("title") for hit in found.get("query", {}).get("search", [])]
        raise LookupError(f"Wikipedia has no article {title!r}; closest titles: {suggestions}. "
                          f"Correct DISASTER_ARTICLES in data_prep/paper_datasets.py.")
    if "disambiguation" in page.get("pageprops", {}):
        raise LookupError(f"Wikipedia's {page.get('title')!r} (for {title!r}) is a disambiguation page; "
                          f"name the 2025 article in DISASTER_ARTICLES.")
    text = page.get("extract")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(api_url, None, "extract", f"no plain text for {title!r}")
    if "2025" not in text:
        raise LookupError(f"Wikipedia's {page['title']!r} (for {title!r}) never mentions 2025: probably a storm of "
                          f"another year with the same name; name the 2025 article in DISASTER_ARTICLES.")
    revisions = page.get("revisions") or [{}]
    return {"title": page["title"], "text": text.strip(), "revision_id": revisions[0].get("revid"),
            "url": page.get("fullurl")}


# ==== Builders ======================================================================================================


@dataclass
class PaperDatasetsConfig:
    datasets: str = "all"
    """Comma-separated: toolalpaca, sciknoweval, medical, wikipedia; or "all"."""
    output_dir: str = "data/paper"
    """Each dataset is written to <output_dir>/<its folder>."""
    seed: int = 0
    """Seeds the SciKnowEval split and the medical evaluation sample."""
    medical_eval_size: int = 1000
    """Verifiable questions sampled for the medical evaluation (paper: 1,000)."""
    medical_exclude_train_overlap: bool = True
    """Leave out of the evaluation sample any question also in the SFT training set (the paper does not say; the
    SFT set was built from the verifiable problems, so overlap is likely)."""
    toolalpaca_train: str = TOOLALPACA_TRAIN
    """URL or local path of ToolAlpaca's train_data.json."""
    toolalpaca_test: str = TOOLALPACA_TEST
    """URL or local path of ToolAlpaca's eval_simulated.json."""
    wikipedia_api: str = WIKIPEDIA_API
    """MediaWiki API endpoint."""
    force: bool = False
    """Rebuild datasets even when their summary says they are up to date."""

    def __post_init__(self):
        unknown = set(self.selected()) - set(BUILDERS)
        if unknown:
            raise ValueError(f"PaperDatasetsConfig.datasets: unknown {sorted(unknown)}; choose from {sorted(BUILDERS)}")
        if self.medical_eval_size < 1:
            raise ValueError("PaperDatasetsConfig.medical_eval_size must be at least 1")

    def selected(self) -> list[str]:
        if self.datasets == "all":
            return list(BUILDERS)
        return [name.strip() for name in self.datasets.split(",") if name.strip()]


def _up_to_date(folder: Path, settings: dict, force: bool) -> bool:
    summary = folder / "summary.json"
    if force or not summary.exists():
        return False
    previous = read_json(summary)
    return previous.get("fingerprint") == fingerprint(settings) and all(
        (folder / name).exists() for name in previous.get("files", []))


def _write(folder: Path, settings: dict, files: dict[str, list[dict]], stats: dict) -> dict:
    """Write every file, then the summary: a summary exists only for a complete build."""
    for name, rows in files.items():
        if not rows:
            raise DatasetError(folder / name, None, None, "would be empty: nothing usable came from the source "
                                                         f"(stats: {stats})")
    for name, rows in files.items():
        write_jsonl(folder / name, rows)
    summary = {"fingerprint": fingerprint(settings), "settings": settings, "files": sorted(files),
               "rows": {name: len(rows) for name, rows in files.items()}, **stats}
    write_json(folder / "summary.json", summary)
    print(f"{folder}: " + ", ".join(f"{name} {len(rows)} rows" for name, rows in files.items()))
    return summary


def build_toolalpaca(config: PaperDatasetsConfig) -> dict | None:
    folder = Path(config.output_dir) / "toolalpaca"
    settings = {"train": config.toolalpaca_train, "test": config.toolalpaca_test}
    if _up_to_date(folder, settings, config.force):
        return None
    train_apis = _require_list_of_objects(config.toolalpaca_train, read_json_source(config.toolalpaca_train))
    test_apis = _require_list_of_objects(config.toolalpaca_test, read_json_source(config.toolalpaca_test))
    train, train_stats = toolalpaca_train_rows(config.toolalpaca_train, train_apis)
    test, test_stats = toolalpaca_test_rows(config.toolalpaca_test, test_apis)
    return _write(folder, settings, {"train.jsonl": train, "test.jsonl": test},
                  {"train_stats": train_stats, "test_stats": test_stats})


def build_sciknoweval(config: PaperDatasetsConfig) -> dict | None:
    folder = Path(config.output_dir) / "sciknoweval"
    settings = {"source": SCIKNOWEVAL.describe(), "domain": SCIKNOWEVAL_DOMAIN, "level": SCIKNOWEVAL_LEVEL,
                "seed": config.seed, "instruction": SCIKNOWEVAL_INSTRUCTION}
    if _up_to_date(folder, settings, config.force):
        return None
    splits, stats = sciknoweval_splits(SCIKNOWEVAL.describe(), load_hub_rows(SCIKNOWEVAL), config.seed)
    return _write(folder, settings, {f"{name}.jsonl": rows for name, rows in splits.items()}, stats)


def build_medical(config: PaperDatasetsConfig) -> dict | None:
    folder = Path(config.output_dir) / "medical"
    settings = {"train": MEDICAL_SFT.describe(), "eval": MEDICAL_VERIFIABLE.describe(), "seed": config.seed,
                "eval_size": config.medical_eval_size, "exclude_overlap": config.medical_exclude_train_overlap}
    if _up_to_date(folder, settings, config.force):
        return None
    train = medical_train_rows(MEDICAL_SFT.describe(), load_hub_rows(MEDICAL_SFT))
    exclude = {normalize_question(row["prompt"]) for row in train} if config.medical_exclude_train_overlap else set()
    test, stats = medical_eval_rows(MEDICAL_VERIFIABLE.describe(), load_hub_rows(MEDICAL_VERIFIABLE),
                                    config.medical_eval_size, config.seed, exclude)
    return _write(folder, settings, {"train.jsonl": train, "test.jsonl": test}, {"eval_stats": stats})


def build_wikipedia(config: PaperDatasetsConfig) -> dict | None:
    folder = Path(config.output_dir) / "knowledge"
    settings = {"api": config.wikipedia_api, "articles": DISASTER_ARTICLES}
    if _up_to_date(folder, settings, config.force):
        return None
    articles = []
    for paper_name, title in DISASTER_ARTICLES.items():
        article = fetch_wikipedia_article(config.wikipedia_api, title)
        articles.append({"id": slug(paper_name), "paper_name": paper_name, **article})
    words = sum(len(article["text"].split()) for article in articles)
    return _write(folder, settings, {"articles.jsonl": articles}, {"words": words})


BUILDERS = {"toolalpaca": build_toolalpaca, "sciknoweval": build_sciknoweval, "medical": build_medical,
            "wikipedia": build_wikipedia}


def build(config: PaperDatasetsConfig) -> None:
    for name in config.selected():
        if BUILDERS[name](config) is None:
            print(f"{name}: up to date in {config.output_dir} (--force true rebuilds)")


def main(argv: list[str] | None = None) -> None:
    build(config_from_argv(PaperDatasetsConfig, argv, __doc__))


if __name__ == "__main__":
    main()
