"""IFEval without the hub: prompts written for this repository, scored by lm-eval's own IFEval checkers.

The prompts (sdft_core/eval/assets/ifeval_offline.jsonl) use IFEval's record format — `instruction_id_list` and one
`kwargs` dict per instruction — so `lm_eval.tasks.ifeval.utils.process_results` scores them exactly as lm-eval
scores IFEval, and the headline metric is lm-eval's inst_level_loose_acc (fraction of instructions followed by the
response or one of its loose variants: first/last line removed, '*' removed).

Offline sentence splitting. Two checkers (length_constraints:number_sentences, change_case:capital_word_frequency)
call nltk's Punkt sentence tokenizer, whose `punkt_tab` model no package ships, and importing lm-eval's IFEval code
tries to download it. We write a small Punkt model of our own — no learned collocations, sentence starters or
orthographic statistics, only the short list of abbreviations below — into the cache folder and put it first on
nltk's search path before lm-eval's IFEval code is imported. nltk's own Punkt code then splits sentences at '.',
'?' and '!' followed by whitespace, except after those abbreviations; `word_tokenize` works unchanged on top of it.
It differs from nltk's trained English model only on rarer abbreviations and initials, and it is the same on
every machine, so offline IFEval scores are comparable across machines (the `sentence_model` field of a result
says which model was used).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import nltk

from sdft_core.data import DatasetError, check_unique_ids, read_jsonl, require

OFFLINE_IFEVAL_PATH = Path(__file__).parent / "assets" / "ifeval_offline.jsonl"

# Abbreviations Punkt must not end a sentence after (lower case, without the final period, as punkt_tab stores them).
PUNKT_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd",
                       "corp", "approx", "u.s", "a.m", "p.m")
_PUNKT_FILES = {"collocations.tab": "", "sent_starters.txt": "", "ortho_context.tab": "",
                "abbrev_types.txt": "".join(f"{abbreviation}\n" for abbreviation in PUNKT_ABBREVIATIONS)}


def install_offline_punkt(nltk_data_dir: Path | str) -> Path:
    """Write our Punkt model as nltk_data_dir/tokenizers/punkt_tab/english/ and search nltk_data_dir first.

    Must run before `lm_eval.tasks.ifeval` is imported (its import tries to download punkt_tab otherwise).
    Returns the model folder.
    """
    nltk_data_dir = Path(nltk_data_dir).resolve()
    model_dir = nltk_data_dir / "tokenizers" / "punkt_tab" / "english"
    model_dir.mkdir(parents=True, exist_ok=True)
    for name, content in _PUNKT_FILES.items():
        path = model_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
    if str(nltk_data_dir) in nltk.data.path:
        nltk.data.path.remove(str(nltk_data_dir))
    nltk.data.path.insert(0, str(nltk_data_dir))
    return model_dir


def sentence_model_in_use() -> str:
    """Which punkt_tab English model nltk resolves now: ours (after install_offline_punkt) or another one."""
    found = Path(str(nltk.data.find("tokenizers/punkt_tab/english/")))
    if (found / "abbrev_types.txt").read_text(encoding="utf-8") == _PUNKT_FILES["abbrev_types.txt"]:
        return "sdft_core.eval.offline_ifeval punkt_tab (abbreviations only)"
    return f"nltk punkt_tab at {found}"


def _lm_eval_ifeval(nltk_data_dir: Path | str):
    """lm-eval's IFEval scoring module and checker registry, imported after our Punkt model is in place."""
    install_offline_punkt(nltk_data_dir)
    import langdetect
    from lm_eval.tasks.ifeval import instructions_registry, utils

    # english_lowercase/english_capital ask langdetect, which samples at random unless seeded; fixed for
    # reproducible scores (lm-eval leaves it unseeded).
    langdetect.DetectorFactory.seed = 0
    return utils, instructions_registry.INSTRUCTION_DICT


@dataclass(frozen=True)
class IFEvalPrompt:
    id: str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict, ...]
    """One dict per instruction: the arguments of its lm-eval checker (e.g. {"num_words": 50, "relation":
    "less than"}), {} for checkers without arguments."""

    def as_doc(self) -> dict:
        """The document lm-eval's ifeval `process_results` expects."""
        return {"key": self.id, "prompt": self.prompt, "instruction_id_list": list(self.instruction_id_list),
                "kwargs": [dict(k) for k in self.kwargs]}


def load_ifeval_prompts(nltk_data_dir: Path | str, path: Path | str = OFFLINE_IFEVAL_PATH) -> list[IFEvalPrompt]:
    """Read and check the prompts: known instruction ids, one kwargs dict per instruction, and every argument of
    each checker given (a missing one would be drawn at random by the checker, making the score irreproducible)."""
    _, registry = _lm_eval_ifeval(nltk_data_dir)
    rows = read_jsonl(path)
    prompts = []
    for row_number, row in enumerate(rows, start=1):
        identifier = require(path, row_number, row, "id", str)
        prompt = require(path, row_number, row, "prompt", str)
        instruction_ids = require(path, row_number, row, "instruction_id_list", list)
        kwargs = require(path, row_number, row, "kwargs", list)
        if len(kwargs) != len(instruction_ids):
            raise DatasetError(path, row_number, "kwargs", f"has {len(kwargs)} entries for "
                                                           f"{len(instruction_ids)} instructions")
        for instruction_id, arguments in zip(instruction_ids, kwargs):
            _check_instruction(path, row_number, registry, instruction_id, arguments)
        prompts.append(IFEvalPrompt(identifier, prompt, tuple(instruction_ids), tuple(kwargs)))
    check_unique_ids(path, rows)
    return prompts


def _check_instruction(path, row_number: int, registry: dict, instruction_id, arguments) -> None:
    if instruction_id not in registry:
        raise DatasetError(path, row_number, "instruction_id_list", f"unknown lm-eval IFEval instruction "
                                                                    f"{instruction_id!r}")
    if not isinstance(arguments, dict):
        raise DatasetError(path, row_number, "kwargs", f"{instruction_id}: expected an object of arguments, got "
                                                       f"{type(arguments).__name__}")
    checker = registry[instruction_id](instruction_id)
    accepted = set(inspect.signature(checker.build_description).parameters)
    if accepted & {"prompt", "prompt_to_repeat", "original_message", "original_paragraph"}:
        raise DatasetError(path, row_number, "instruction_id_list", f"{instruction_id} depends on the prompt text; "
                                                                    "the offline set does not use such checkers")
    unknown, missing = set(arguments) - accepted, accepted - set(arguments)
    if unknown or missing:
        raise DatasetError(path, row_number, "kwargs", f"{instruction_id}: unknown arguments {sorted(unknown)}, "
                                                       f"missing arguments {sorted(missing)}")
    # lm-eval drops falsy arguments before building the checker, which would then draw them at random.
    falsy = sorted(name for name, value in arguments.items() if not value)
    if falsy:
        raise DatasetError(path, row_number, "kwargs", f"{instruction_id}: arguments {falsy} are empty or zero")
    try:
        checker.build_description(**arguments)
    except (TypeError, ValueError) as err:
        raise DatasetError(path, row_number, "kwargs", f"{instruction_id}: {err}") from None


def score_ifeval(prompts: list[IFEvalPrompt], responses: list[str], nltk_data_dir: Path | str) -> tuple[dict, list]:
    """lm-eval's four IFEval metrics over the prompts, and one record per prompt (response and per-instruction
    results, strict and loose) for paired comparisons."""
    utils, _ = _lm_eval_ifeval(nltk_data_dir)
    records = []
    for prompt, response in zip(prompts, responses, strict=True):
        scored = utils.process_results(prompt.as_doc(), [response])
        records.append({"id": prompt.id, "instruction_id_list": list(prompt.instruction_id_list),
                        "response": response, "prompt_level_strict": scored["prompt_level_strict_acc"],
                        "prompt_level_loose": scored["prompt_level_loose_acc"],
                        "inst_level_strict": scored["inst_level_strict_acc"],
                        "inst_level_loose": scored["inst_level_loose_acc"]})
    summary = {
        "inst_level_loose_acc": utils.agg_inst_level_acc([r["inst_level_loose"] for r in records]),
        "inst_level_strict_acc": utils.agg_inst_level_acc([r["inst_level_strict"] for r in records]),
        "prompt_level_loose_acc": sum(r["prompt_level_loose"] for r in records) / len(records),
        "prompt_level_strict_acc": sum(r["prompt_level_strict"] for r in records) / len(records),
        "n_prompts": len(records), "n_instructions": sum(len(r["inst_level_loose"]) for r in records),
        "sentence_model": sentence_model_in_use(),
    }
    return summary, records
