"""Expert demonstrations by rejection sampling (paper B.3, Science Q&A).

For each training prompt, up to `max_samples` (paper: 8) responses are sampled from the configured model (paper:
GPT-4o) and the first whose final answer matches the ground truth is kept as the demonstration. The yield (fraction
of prompts that got a valid demonstration; paper: 100% on SciKnowEval Chemistry L-3) is reported.

    python -m data_prep.demonstrations --input-path data/paper/sciknoweval/train.jsonl \
        --output-path data/paper/sciknoweval/train_demonstrations.jsonl [--base-url http://localhost:8000/v1]

Input rows: id, prompt, answer. Output rows: id, prompt, demonstration (the fields of sdft_core.data.Example), plus
answer and samples_used (which sample was kept). A summary (yield, samples used, prompts without a demonstration)
is written beside the output as <output>.summary.json.

Resuming: ids already in the output file are not asked again, the output is rewritten (atomically) after every
sampling round, and every response is cached, so a rerun or an interrupted run pays for nothing twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sdft_core.data import DatasetError, read_jsonl, read_rows, require
from sdft_core.openai_client import ChatClient, ChatRequest, ClientConfig, check_credentials, run_command_line, \
    user_message
from sdft_core.io import write_json, write_jsonl
from tasks.multiple_choice import multiple_choice_matches

AnswerMatcher = Callable[[str, str], bool]
"""answer_matches(response, ground_truth) → whether the response's final answer is the ground truth."""

ANSWER_MATCHERS: dict[str, AnswerMatcher] = {"multiple_choice": multiple_choice_matches}


# --- Entry point -----------------------------------------------------------------------------------------------------
@dataclass
class DemonstrationConfig(ClientConfig):
    input_path: str = ""
    """JSONL of training prompts: id, prompt, answer (the ground truth; for SciKnowEval the option letter)."""
    output_path: str = ""
    """JSONL of demonstrations written here; a summary goes to <output>.summary.json."""
    max_samples: int = 8
    """Responses sampled per prompt at most (paper: 8)."""
    temperature: float | None = 1.0
    """Sampling temperature of the responses (None: the server's default)."""
    max_tokens: int | None = None
    """Longest response in tokens (None: the server's default)."""
    seed: int = 0
    """Sample k of a prompt is requested with seed `seed + k`: repeated samples are distinct requests (and cache
    entries), reproducible on servers that honour seeds (vLLM; OpenAI on a best-effort basis)."""
    matcher: str = "multiple_choice"
    """Which answer_matches to use (a key of ANSWER_MATCHERS) when none is passed in."""

    def __post_init__(self):
        super().__post_init__()
        if not self.input_path or not self.output_path:
            raise ValueError("DemonstrationConfig needs input_path and output_path")
        if self.max_samples < 1:
            raise ValueError(f"DemonstrationConfig.max_samples must be at least 1, got {self.max_samples}")
        if self.matcher not in ANSWER_MATCHERS:
            raise ValueError(f"DemonstrationConfig.matcher must be one of {sorted(ANSWER_MATCHERS)}")


def summary_path(output_path: str | Path) -> Path:
    return Path(output_path).with_suffix(".summary.json")


def _read_prompts(path: str) -> list[dict]:
    return read_rows(path, ("id", "prompt", "answer"))


def _read_finished(path: str, prompts: dict[str, dict]) -> dict[str, dict]:
    """Demonstrations from an earlier run, for ids still in the input (with the same prompt)."""
    if not Path(path).exists():
        return {}
    finished = {}
    for number, row in enumerate(read_jsonl(path), start=1):
        for name in ("id", "prompt", "demonstration", "answer"):
            require(path, number, row, name, str)
        if row["id"] in prompts and prompts[row["id"]]["prompt"] != row["prompt"]:
            raise DatasetError(path, number, "prompt", f"differs from the input's prompt for id {row['id']!r}; "
                                                       "remove the stale output file to rebuild it")
        if row["id"] in prompts:
            finished[row["id"]] = row
    return finished


def build_demonstrations(config: DemonstrationConfig, answer_matches: AnswerMatcher | None = None) -> dict:
    """Sample demonstrations for every prompt of config.input_path; returns the summary it writes."""
    check_credentials(config)
    answer_matches = answer_matches or ANSWER_MATCHERS[config.matcher]
    prompts = _read_prompts(config.input_path)
    by_id = {row["id"]: row for row in prompts}
    kept = _read_finished(config.output_path, by_id)
    client = ChatClient(config)

    def write_progress():
        write_jsonl(config.output_path, [kept[row["id"]] for row in prompts if row["id"] in kept])

    # Round k asks sample k of every prompt still without a demonstration, so the whole batch runs concurrently.
    pending = [row for row in prompts if row["id"] not in kept]
    for sample in range(config.max_samples):
        if not pending:
            break
        requests = [ChatRequest(user_message(row["prompt"]), temperature=config.temperature,
                                max_tokens=config.max_tokens, seed=config.seed + sample) for row in pending]
        results = client.complete_many(requests, desc=f"demonstrations, sample {sample + 1}/{config.max_samples}")
        still_pending = []
        for row, result in zip(pending, results):
            if answer_matches(result.text, row["answer"]):
                kept[row["id"]] = {"id": row["id"], "prompt": row["prompt"], "demonstration": result.text,
                                   "answer": row["answer"], "samples_used": sample + 1}
            else:
                still_pending.append(row)
        pending = still_pending
        write_progress()  # an interrupted run keeps every finished round
    write_progress()  # also when no round ran: the output then matches the current input's ids

    summary = {
        "input": str(config.input_path), "model": config.model, "host": client.host,
        "max_samples": config.max_samples, "seed": config.seed, "temperature": config.temperature,
        "prompts": len(prompts), "with_demonstration": len(kept),
        "yield": len(kept) / len(prompts),
        "samples_used": {str(k): v for k, v in sorted(Counter(r.get("samples_used") for r in kept.values()
                                                              if r.get("samples_used")).items())},
        "without_demonstration": [row["id"] for row in pending],
    }
    write_json(summary_path(config.output_path), summary)
    print(f"demonstrations: {len(kept)}/{len(prompts)} prompts have a valid demonstration "
          f"(yield {summary['yield']:.1%}); written to {config.output_path}")
    print(client.usage.report())
    return summary


def main(argv: list[str] | None = None) -> None:
    run_command_line(build_demonstrations, DemonstrationConfig, argv, __doc__)


if __name__ == "__main__":
    main()
