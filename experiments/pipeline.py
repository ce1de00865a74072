"""Run notebooks in batch with papermill, in dependency order, skipping steps whose inputs have not changed.

    python -m experiments.pipeline demo            # the knowledge-acquisition demo (make demo)
    python -m experiments.pipeline smoke           # the same notebooks on a tiny configuration (tests, CI)
    python -m experiments.pipeline tiny --seeds 1  # every figure on CPU, one training seed instead of three

Profiles and their steps are defined in experiments/plans.py.

A step is one notebook run with its parameters. Its fingerprint hashes the notebook source, the parameters, the
code (sdft_core/, tasks/ with the embedded data, data_prep/ and experiments/) and the fingerprints of the steps it depends on; a step
whose fingerprint matches the last successful run is skipped. Executed notebooks are kept under
results/<profile>/notebooks/. A failing step names the notebook and the cell, and steps already finished stay intact.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd
import papermill

from experiments import executors
from experiments.paper_scale import gpu_hours_table, step_costs
from experiments.plans import DEFAULT_RESULTS, PROFILES, REPORT_FILE, Step, steps_needed_for
from sdft_core.io import fingerprint, provenance, read_json, write_json, write_text

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
KERNEL_NAME = "sdft-kit"
CODE_DIRS = ("sdft_core", "tasks", "data_prep", "experiments")
# Lines that say nothing to a user of `make demo`: the kernel's warning about local TCP (the kernel runs on this
# machine and talks only to this process), tqdm's "IProgress not found" (papermill shows no widgets; tqdm falls back
# to the text bar with its ETA, which stays), and papermill's per-cell markers.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
QUIET_WARNINGS = "ignore:IProgress not found"
PAPERMILL_MARKERS = ("Executing Cell", "Ending Cell", "Input Notebook", "Output Notebook", "Executing notebook",
                     "Working directory")


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


def only(steps: list[Step], targets: list[str]) -> list[Step]:
    """The steps `targets` need (plans.steps_needed_for); an unknown step name ends the command."""
    try:
        return steps_needed_for(steps, targets)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def profile_steps(profile: str, results_dir: Path, seeds: int | None = None) -> list[Step]:
    """The steps of a profile; `seeds`: train every run with seeds 0 … seeds−1 instead of the profile's default."""
    # Notebooks run with the repository as working directory; relative paths keep executed notebooks portable.
    relative = os.path.relpath(results_dir, REPO)
    if seeds is None:
        return PROFILES[profile](relative)
    if seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, got {seeds}")
    return PROFILES[profile](relative, seeds=tuple(range(seeds)))


def run_profile(profile: str, results_dir: Path | str | None = None, log_output: bool = True,
                targets: list[str] | None = None, seeds: int | None = None,
                skip_upstream: bool = False, executor: str = "local", **placement) -> dict[str, str]:
    """Run the steps of a profile (all, or those `targets` need: with skip_upstream, the targets alone); results go
    to results_dir (relative paths resolve against the repository). executor: where the steps run
    (experiments/executors.py); `placement`: its options (workers, gpus, partition, dry_run, wait, resources)."""
    results_dir = REPO / (results_dir or DEFAULT_RESULTS[profile])
    steps = profile_steps(profile, results_dir, seeds)
    if targets:
        steps = only(steps, targets)
    if executor != "local":
        return run_elsewhere(profile, steps, results_dir, seeds, executor, **placement)
    return run_steps(steps, results_dir / "_state", results_dir / "notebooks", log_output,
                     set(targets) if targets and skip_upstream else None)


def run_elsewhere(profile: str, steps: list[Step], results_dir: Path, seeds: int | None, executor: str,
                  workers: int = 2, gpus: list[str] | None = None, partition: str | None = None,
                  dry_run: bool = False, wait: bool = False, resources: dict | None = None) -> dict[str, str]:
    """Hand the steps that are not done to a pool of local processes or to SLURM (executors.py); each runs alone
    with the whole plan's fingerprints, so what it records is what a sequential run records."""
    ids = step_fingerprints(steps)
    to_run = {step.name for step, state, _ in step_status(steps, results_dir / "_state", results_dir / "notebooks",
                                                           ids) if state != "done"}
    print(f"{len(to_run)} of {len(steps)} steps to run ({len(steps) - len(to_run)} done).", flush=True)
    on_gpu = [step for step in steps if executors.resources_for(step).gpus]
    estimates = {name: cost.total_h for name, cost in step_costs(steps).items()} if on_gpu else {}
    training_gpus = max([int(step.parameters.get("processes", 1)) for step in on_gpu if step.notebook == "train"],
                        default=1)
    resources_of = lambda step: executors.resources_for(step, estimates.get(step.name), resources, training_gpus)
    command_of = lambda name: executors.step_command(profile, name, results_dir, seeds)
    jobs = results_dir / "_jobs"
    if executor == "pool":
        executors.run_pool(steps, to_run, command_of, workers, gpus, resources_of, jobs)
    elif dry_run:
        print_dry_run(steps, to_run, command_of, resources_of, jobs, partition, estimates)
    else:
        executors.submit_slurm(steps, to_run, command_of, resources_of, jobs, partition, wait)
    return ids


def print_dry_run(steps: list[Step], to_run: set[str], command_of, resources_of, folder: Path,
                  partition: str | None, estimates: dict[str, float]) -> None:
    """Every job that `--executor slurm` would submit: its resources, the jobs it waits for and its sbatch script;
    then the GPU-hours per figure (GPU profiles)."""
    needs = executors.dependencies(steps, to_run)
    for step in steps:
        if step.name not in to_run:
            continue
        resources = resources_of(step)
        print(f"## job {step.name}\nresources: {resources.gpus} GPU, {resources.cpus} CPU, {resources.mem_gb} GB, "
              f"{resources.minutes} min" + (f" (estimate {estimates[step.name]:.2f} GPU-h)"
                                             if step.name in estimates else "")
              + f"\nafter: {', '.join(needs[step.name]) or '-'}\n")
        print(executors.sbatch_script(step, resources, command_of(step.name), needs[step.name], folder, partition))
    if estimates:
        print(gpu_hours_table(steps))


def step_fingerprints(steps: list[Step]) -> dict[str, str]:
    """Each step's fingerprint: its notebook, parameters, the library code and its dependencies' fingerprints."""
    code = code_fingerprint()
    ids: dict[str, str] = {}
    for step in steps:
        ids[step.name] = fingerprint(step.notebook, notebook_path(step.notebook).read_text(), step.parameters, code,
                                     [ids[name] for name in step.after])
    return ids


def last_run(step: Step, step_id: str, state_file: Path, executed: Path) -> tuple[str, float | None]:
    """"done" (the last run had fingerprint `step_id`, its executed notebook and its outputs are there: a run skips
    the step), "stale" (it ran with other inputs or code, or what it wrote is gone) or "new", and how many seconds
    the last run took (None if none)."""
    if not state_file.exists():
        return "new", None
    state = read_json(state_file)
    done = (state["fingerprint"] == step_id and executed.exists()
            and all((REPO / output).exists() for output in step.outputs))
    return ("done" if done else "stale"), state["seconds"]


def step_status(steps: list[Step], state_dir: Path, executed_dir: Path,
                ids: dict[str, str] | None = None) -> list[tuple[Step, str, float | None]]:
    """Each step with its `last_run` status and seconds, where a step after one that runs runs too ("stale"): a
    model retrained in a clone, which holds the records of finished steps but not their weights, is not bit-identical
    to the one that was evaluated, so what reads it is computed again (evaluations are cached by the weights they
    read: an unchanged model's are served from the cache). ids: the steps' fingerprints, where `steps` leaves out
    some of the steps they need (default: step_fingerprints(steps))."""
    ids = ids or step_fingerprints(steps)
    runs: set[str] = set()
    status = []
    for step in steps:
        state, seconds = last_run(step, ids[step.name], state_dir / f"{step.name}.json",
                                  executed_dir / f"{step.name}.ipynb")
        if state == "done" and runs.intersection(step.after):
            state = "stale"
        if state != "done":
            runs.add(step.name)
        status.append((step, state, seconds))
    return status


def stream_notebook_output() -> None:
    """Show what the notebooks print (papermill logs it at INFO), without papermill's own bookkeeping lines, and keep
    the kernel's noise out (the kernel inherits the environment)."""
    logger = logging.getLogger("papermill")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(lambda record: not record.getMessage().lstrip().startswith(PAPERMILL_MARKERS))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    warnings = os.environ.get("PYTHONWARNINGS")
    if QUIET_WARNINGS not in (warnings or ""):
        os.environ["PYTHONWARNINGS"] = f"{warnings},{QUIET_WARNINGS}" if warnings else QUIET_WARNINGS


def check_skipped_outputs(steps: list[Step], run_only: set[str]) -> None:
    """Before any work: a step run alone (--skip-upstream) needs what its skipped dependencies write (a model folder);
    a missing one ends the command, naming it and the step that writes it."""
    writes = {step.name: step.outputs for step in steps}
    missing = [f"{step.name} needs {output}, written by {before}" for step in steps if step.name in run_only
               for before in step.after if before not in run_only
               for output in writes[before] if not (REPO / output).exists()]
    if missing:
        raise SystemExit("--skip-upstream: " + "; ".join(missing) + ". Name those steps in --only too, or drop "
                         "--skip-upstream to run what the targets need.")


def run_steps(steps: list[Step], state_dir: Path, executed_dir: Path, log_output: bool = True,
              run_only: set[str] | None = None) -> dict[str, str]:
    """Run `steps` in order, skipping those unchanged since their last run; run_only: run these alone (the others
    still make up their fingerprints)."""

    if log_output:
        stream_notebook_output()
    ids = step_fingerprints(steps)
    if run_only is not None:
        check_skipped_outputs(steps, run_only)
    executed_dir.mkdir(parents=True, exist_ok=True)
    steps = [step for step in steps if run_only is None or step.name in run_only]
    status = step_status(steps, state_dir, executed_dir, ids)
    for index, (step, state, _) in enumerate(status, start=1):
        source = notebook_path(step.notebook)
        state_file = state_dir / f"{step.name}.json"
        output = executed_dir / f"{step.name}.ipynb"
        if state == "done":
            print(f"[{index}/{len(steps)}] {step.name}: unchanged since its last run, skipped")
            continue
        print(f"[{index}/{len(steps)}] {step.name}: running {source.relative_to(REPO)}", flush=True)
        # Its record goes until it finishes: a step that fails or is killed, after a dependency ran, runs again.
        state_file.unlink(missing_ok=True)
        started, wall_clock = time.perf_counter(), time.time()
        try:
            papermill.execute_notebook(
                str(source), str(output), parameters=step.parameters, kernel_name=KERNEL_NAME, cwd=str(REPO),
                progress_bar=False, log_output=log_output, request_save_on_cell_execute=True,
                extra_arguments=KERNEL_ARGUMENTS)
        except papermill.PapermillExecutionError as err:
            raise SystemExit(
                f"step {step.name!r} failed in {source.relative_to(REPO)}, cell {err.exec_count} "
                f"({err.ename}: {err.evalue}). The executed notebook with the traceback is {output}. "
                f"Finished steps are kept; rerun to continue from this step.") from None
        seconds = time.perf_counter() - started
        tables = [table.name for table in tables_written_since(state_dir.parent, wall_clock)]
        write_json(state_file, {"fingerprint": ids[step.name], "seconds": seconds, "parameters": step.parameters,
                                "provenance": provenance(seconds), "tables": tables})
        write_provenance(state_dir)
        print(f"[{index}/{len(steps)}] {step.name}: done in {seconds:.0f} s", flush=True)
    return ids


def tables_written_since(results: Path, since: float) -> list[Path]:
    """The tables (*.md) in `results` modified at or after `since` (a time.time()), provenance.md and the results
    report (REPORT.md, which gathers the tables) aside."""
    return sorted(p for p in results.glob("*.md")
                  if p.stat().st_mtime >= since and p.name not in ("provenance.md", REPORT_FILE))


def write_provenance(state_dir: Path) -> None:
    """provenance.md beside _state/: for every step that has run, the tables it wrote and the commit, machine, date
    and seconds of its last run, so every table in the results folder says where it was computed."""
    rows = []
    for state_file in sorted(state_dir.glob("*.json")):
        state = read_json(state_file)
        rows.append({"step": state_file.stem, "tables": ", ".join(state.get("tables", [])),
                     **state.get("provenance", {"commit": "(not recorded)"})})
    write_text(state_dir.parent / "provenance.md", pd.DataFrame(rows).to_markdown(index=False) + "\n")


def print_status(steps: list[Step], results_dir: Path) -> None:
    """The --list table: every step, whether a run would skip it, and the time its last run took."""
    status = step_status(steps, results_dir / "_state", results_dir / "notebooks")
    for step, state, seconds in status:
        took = "-" if seconds is None else f"{seconds / 60:.1f} min"
        after = ", ".join(step.after) if len(step.after) <= 3 else f"{step.after[0]}, … ({len(step.after)} steps)"
        print(f"{step.name:45s} {step.notebook:25s} {state:5s} {took:>10s}  after: {after or '-'}")
    for state, meaning in (("done", "up to date (a run skips them)"), ("stale", "to rerun (inputs or code changed)")):
        timed = [seconds for _, s, seconds in status if s == state]
        print(f"{len(timed)} steps {meaning}; their last runs took {sum(timed) / 3600:.2f} h in all")
    print(f"{sum(s == 'new' for _, s, _ in status)} steps never ran")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument("--results-dir", help="where results go (default: results/tiny for demo and tiny)")
    parser.add_argument("--quiet", action="store_true", help="do not stream notebook output")
    parser.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps and what they need "
                        "(e.g. --only fig7_teacher_context table1)")
    parser.add_argument("--seeds", type=int, help="train every run with this many seeds (0, 1, …) instead of the "
                        "profile's default (tiny, paper: 3; demo, smoke: 1); tables give mean ± 95%% CI")
    parser.add_argument("--skip-upstream", action="store_true", help="with --only: run the named steps alone, "
                        "not the steps they need, whose results must already be in the results folder (e.g. trained "
                        "and evaluated on another machine, or by a clone at another commit)")
    parser.add_argument("--executor", choices=executors.EXECUTORS, default="local", help="where steps run: one "
                        "after another here (local), N at once here (pool), or each a SLURM job (slurm); "
                        "experiments/executors.py")
    parser.add_argument("--workers", type=int, default=2, help="pool: steps at once")
    parser.add_argument("--gpus", help="pool: the GPU ids to share out, e.g. 0,1,2,3,4,5,6,7 (each step takes the "
                        "GPUs its resources ask for)")
    parser.add_argument("--partition", help="slurm: the partition to submit to")
    parser.add_argument("--dry-run", action="store_true", help="slurm: print every job's script, resources and "
                        "dependencies, and the GPU-hours per figure, without submitting")
    parser.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and report the failed ones")
    parser.add_argument("--resources", help="a JSON file {notebook or step name: {gpus, cpus, mem_gb, minutes}} "
                        "over executors.RESOURCES")
    parser.add_argument("--list", action="store_true", help="list the profile's steps (with --only: those the "
                        "targets need), whether each is up to date, how long its last run took, and exit")
    args = parser.parse_args(argv)
    results = REPO / (args.results_dir or DEFAULT_RESULTS[args.profile])
    if args.list:
        steps = profile_steps(args.profile, results, args.seeds)
        print_status(only(steps, args.only) if args.only else steps, results)
        return
    started, wall_clock = time.perf_counter(), time.time()
    if args.skip_upstream and not args.only:
        parser.error("--skip-upstream needs --only")
    if args.executor != "local" and args.skip_upstream:
        parser.error("--skip-upstream runs steps here: use it without --executor")
    if args.dry_run and args.executor != "slurm":
        parser.error("--dry-run lists the jobs of --executor slurm")
    placement = {} if args.executor == "local" else {
        "workers": args.workers, "gpus": args.gpus.split(",") if args.gpus else None, "partition": args.partition,
        "dry_run": args.dry_run, "wait": args.wait, "resources": read_json(args.resources) if args.resources else None}
    run_profile(args.profile, results, log_output=not args.quiet, targets=args.only, seeds=args.seeds,
                skip_upstream=args.skip_upstream, executor=args.executor, **placement)
    if args.dry_run:
        return
    if args.executor == "slurm" and not args.wait:
        print("\nJobs submitted; rerun the same command to submit what is not done once they end.")
        return
    print(f"\nAll steps of profile {args.profile!r} finished in {time.perf_counter() - started:.0f} s.")
    print_new_tables(results, wall_clock)
    print(f"Results are in {results.relative_to(REPO) if results.is_relative_to(REPO) else results}/ "
          f"(tables *.md/*.csv, figures *.png/*.pdf, executed notebooks in notebooks/, where and when each step "
          f"ran in provenance.md" + (f"; all of it in {REPORT_FILE}" if (results / REPORT_FILE).exists() else "")
          + ").")


def print_new_tables(results: Path, since: float, at_most: int = 3) -> None:
    """The tables this run wrote (their text when there are at most `at_most`, as for `make demo`; else their
    names)."""
    tables = tables_written_since(results, since)
    if not tables:
        print("No table was rewritten: every step was up to date.")
    elif len(tables) <= at_most:
        for table in tables:
            print(f"\n{table.relative_to(REPO) if table.is_relative_to(REPO) else table}:\n{table.read_text()}")
    else:
        print(f"Tables written: {', '.join(t.name for t in tables)}")


if __name__ == "__main__":
    sys.exit(main())
