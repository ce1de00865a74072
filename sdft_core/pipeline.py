"""Run notebooks in batch with papermill, in dependency order, skipping steps whose inputs have not changed.

    python -m sdft_core.pipeline demo            # the knowledge-acquisition demo (make demo)
    python -m sdft_core.pipeline smoke           # the same notebooks on a tiny configuration (tests, CI)

A step is one notebook run with its parameters. Its fingerprint hashes the notebook source, the parameters, the
library code (sdft_core/, data_prep/ and the embedded data) and the fingerprints of the steps it depends on; a step
whose fingerprint matches the last successful run is skipped. Executed notebooks are kept under
results/<profile>/notebooks/. A failing step names the notebook and the cell, and steps already finished stay intact.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdft_core.io import fingerprint, read_json, write_json

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
KERNEL_NAME = "sdft-kit"
CODE_DIRS = ("sdft_core", "data_prep")


@dataclass
class Step:
    name: str
    notebook: str
    parameters: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()


def code_fingerprint() -> str:
    digest = hashlib.sha256()
    for directory in CODE_DIRS:
        for path in sorted((REPO / directory).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def notebook_path(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


def knowledge_demo_steps(results: str, train: dict, evaluation: dict) -> list[Step]:
    """Prepare data → train SFT and SDFT → evaluate base, SFT, SDFT → report."""
    runs = f"{results}/runs"
    steps = [Step("data", "knowledge_01_data", {"results_dir": results})]
    for method in ("sft", "sdft"):
        steps.append(Step(f"train_{method}", "train",
                          {"results_dir": results, "task": "knowledge", "run_name": f"knowledge_{method}",
                           "method": method, "teacher_context": "context_and_demonstration", **train["common"],
                           **train[method]}, after=("data",)))
    for name, model in (("base", "base"), ("sft", f"{runs}/knowledge_sft/model"),
                        ("sdft", f"{runs}/knowledge_sdft/model")):
        steps.append(Step(f"eval_{name}", "evaluate",
                          {"results_dir": results, "task": "knowledge", "name": name, "model_dir": model,
                           "splits": ["test", "ood"], **evaluation},
                          after=() if name == "base" else (f"train_{name}",)))
    steps.append(Step("report", "knowledge_04_report", {"results_dir": results},
                      after=("eval_base", "eval_sft", "eval_sdft")))
    return steps


# The demo's hyperparameters are the ones measured to teach the embedded model within the demo's time budget;
# README "Knowledge acquisition demo" gives the numbers they produced.
DEMO_TRAIN = {
    "common": {"epochs": 3.0, "batch_size": 8, "micro_batch_size": 8, "max_train_examples": 0},
    "sft": {"learning_rate": 1e-4},
    "sdft": {"learning_rate": 1e-4, "max_new_tokens": 48},
}
SMOKE_TRAIN = {
    "common": {"epochs": 1.0, "batch_size": 2, "micro_batch_size": 1, "max_train_examples": 4},
    "sft": {"learning_rate": 1e-4},
    "sdft": {"learning_rate": 1e-4, "max_new_tokens": 8},
}
PROFILES = {
    "demo": lambda results: knowledge_demo_steps(results, DEMO_TRAIN, {}),
    "smoke": lambda results: knowledge_demo_steps(
        results, SMOKE_TRAIN, {"max_items": 2, "max_general_prompts": 2, "max_new_tokens": 8}),
}


def run_profile(profile: str, results_dir: Path, log_output: bool = True) -> dict[str, str]:
    """Run every step of a profile; results go to results_dir (relative paths resolve against the repository)."""
    results_dir = REPO / results_dir
    # Notebooks run with the repository as working directory; relative paths keep executed notebooks portable.
    steps = PROFILES[profile](os.path.relpath(results_dir, REPO))
    return run_steps(steps, results_dir / "_state", results_dir / "notebooks", log_output)


def run_steps(steps: list[Step], state_dir: Path, executed_dir: Path, log_output: bool = True) -> dict[str, str]:
    import papermill

    code = code_fingerprint()
    executed_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    for index, step in enumerate(steps, start=1):
        source = notebook_path(step.notebook)
        step_id = fingerprint(step.notebook, source.read_text(), step.parameters, code,
                              [done[name] for name in step.after])
        state_file = state_dir / f"{step.name}.json"
        output = executed_dir / f"{step.name}.ipynb"
        if state_file.exists() and read_json(state_file)["fingerprint"] == step_id and output.exists():
            print(f"[{index}/{len(steps)}] {step.name}: unchanged since its last run, skipped")
            done[step.name] = step_id
            continue
        print(f"[{index}/{len(steps)}] {step.name}: running {source.relative_to(REPO)}", flush=True)
        started = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source), str(output), parameters=step.parameters, kernel_name=KERNEL_NAME, cwd=str(REPO),
                progress_bar=False, log_output=log_output, request_save_on_cell_execute=True)
        except papermill.PapermillExecutionError as err:
            raise SystemExit(
                f"step {step.name!r} failed in {source.relative_to(REPO)}, cell {err.exec_count} "
                f"({err.ename}: {err.evalue}). The executed notebook with the traceback is {output}. "
                f"Finished steps are kept; rerun to continue from this step.") from None
        seconds = time.perf_counter() - started
        write_json(state_file, {"fingerprint": step_id, "seconds": seconds, "parameters": step.parameters})
        print(f"[{index}/{len(steps)}] {step.name}: done in {seconds:.0f} s", flush=True)
        done[step.name] = step_id
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument("--results-dir", help="where results go (default: results/<profile>)")
    parser.add_argument("--quiet", action="store_true", help="do not stream notebook output")
    args = parser.parse_args(argv)
    results = REPO / (args.results_dir or f"results/{args.profile}")
    started = time.perf_counter()
    run_profile(args.profile, results, log_output=not args.quiet)
    print(f"\nAll steps of profile {args.profile!r} finished in {time.perf_counter() - started:.0f} s.")
    print(f"Results: {results}/ — table: knowledge_table.md, figure: knowledge_figure.png, "
          f"executed notebooks: notebooks/")


if __name__ == "__main__":
    sys.exit(main())
