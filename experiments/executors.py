"""Where the pipeline's steps run. The plan, the fingerprints, skip-if-done and provenance stay in
experiments/pipeline.py; an executor only decides where each step that is not done runs, and after what:

- "local": one after another in this process (the default);
- "pool": up to N steps at once on this machine, each in its own process with its own GPUs (CUDA_VISIBLE_DEVICES),
  a step starting when the steps it needs have succeeded (one machine with 8 GPUs);
- "slurm": every step a SLURM job, submitted through submitit, each job starting only after the jobs of the steps it
  needs succeed (SLURM's own `afterok` dependencies; a failed job cancels its dependants). A rerun submits only what
  is not done; `--dry-run` prints every job's script, resources and dependencies, and the GPU-hours per figure,
  without submitting.

Every step runs as `python -m experiments.pipeline <profile> --only <step> --skip-upstream`: the step alone, with the
fingerprints of the whole plan, so its record is the one a sequential run writes. A training step that needs several
GPUs runs `accelerate launch` inside its job (the train notebook's `processes`), and a killed training job resumes
from its checkpoint when it runs again.

Resources per step kind come from RESOURCES (one place to change them) and, for training steps, from the plan's
`processes` and the GPU-hour estimate of experiments/paper_scale.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from experiments.plans import Step

EXECUTORS = ("local", "pool", "slurm")


@dataclass(frozen=True)
class Resources:
    """What one step's job asks for."""

    gpus: int  # GPUs on one node (a training step's processes; 0: a CPU-only step)
    cpus: int
    mem_gb: int
    minutes: int  # wall-clock limit


# Per notebook, on a GPU cluster (device="cuda"): evaluations and selections take one GPU, figures none. A training
# step takes its `processes` GPUs and a time limit from its GPU-hour estimate (TIME_SAFETY × estimate, at least
# MIN_TRAIN_MINUTES). Change them here; `--resources FILE` (a JSON object {notebook or step name: {field: value}})
# overrides them for one command.
RESOURCES = {
    "train": Resources(gpus=1, cpus=8, mem_gb=64, minutes=24 * 60),
    "evaluate": Resources(gpus=1, cpus=8, mem_gb=64, minutes=4 * 60),
    "select_best": Resources(gpus=1, cpus=8, mem_gb=96, minutes=24 * 60),  # trains the chosen run's other seeds
    "prior_capabilities": Resources(gpus=1, cpus=8, mem_gb=64, minutes=4 * 60),
    "preflight": Resources(gpus=1, cpus=8, mem_gb=64, minutes=2 * 60),
}
FIGURE = Resources(gpus=0, cpus=2, mem_gb=8, minutes=30)  # tables and figures from results on disk
CPU_STEP = Resources(gpus=0, cpus=1, mem_gb=8, minutes=4 * 60)  # a step of a CPU profile (device="cpu")
CPUS_PER_GPU, MEM_GB_PER_GPU = 8, 64  # a training step with several processes scales these
# The FLOP estimate leaves out start-up, weight pushes into vLLM and checkpoints: the limit is generous.
TIME_SAFETY, MIN_TRAIN_MINUTES = 2.0, 4 * 60


def _device(step: Step) -> str:
    """Where a step computes: a training step's TrainConfig device, else the notebook's own `device` parameter."""
    return step.parameters.get("config", {}).get("device", step.parameters.get("device", "cpu"))


def resources_for(step: Step, estimated_hours: float | None = None, overrides: dict | None = None,
                  training_gpus: int = 1) -> Resources:
    """The resources of `step`: RESOURCES by notebook (FIGURE for a notebook not listed, CPU_STEP on a CPU), a
    training step's GPUs from its `processes`, its time limit from `estimated_hours` (GPU-hours), a selection's GPUs
    from `training_gpus` (it trains the chosen run's other seeds as its candidates trained), then `overrides` by
    notebook and by step name."""
    if step.notebook not in RESOURCES:
        chosen = FIGURE
    elif _device(step) != "cuda":
        chosen = CPU_STEP
    else:
        chosen = RESOURCES[step.notebook]
        if step.notebook == "train":
            gpus = int(step.parameters.get("processes", 1))
            minutes = chosen.minutes if estimated_hours is None else max(
                MIN_TRAIN_MINUTES, math.ceil(TIME_SAFETY * 60 * estimated_hours / gpus))
            chosen = Resources(gpus, CPUS_PER_GPU * gpus, MEM_GB_PER_GPU * gpus, minutes)
        elif step.notebook == "select_best":
            chosen = Resources(training_gpus, CPUS_PER_GPU * training_gpus, MEM_GB_PER_GPU * training_gpus,
                               chosen.minutes)
    for key in (step.notebook, step.name):
        if overrides and key in overrides:
            chosen = dataclasses.replace(chosen, **overrides[key])
    return chosen


def step_command(profile: str, step: str, results_dir: Path, seeds: int | None) -> list[str]:
    """The command that runs one step alone, with the plan's fingerprints (what every executor runs)."""
    return ([sys.executable, "-m", "experiments.pipeline", profile, "--only", step, "--skip-upstream",
             "--results-dir", str(results_dir)] + (["--seeds", str(seeds)] if seeds else []))


def dependencies(steps: list[Step], to_run: set[str]) -> dict[str, list[str]]:
    """For every step to run, the steps to run that it needs (a done step is no dependency)."""
    return {step.name: [name for name in step.after if name in to_run] for step in steps if step.name in to_run}


class StepFailed(RuntimeError):
    pass


def run_pool(steps: list[Step], to_run: set[str], command_of, workers: int, gpus: list[str] | None = None,
             resources=None, log_dir: Path | None = None) -> None:
    """Run the steps `to_run` (in plan order), up to `workers` at once, each once the steps it needs have succeeded.
    With `gpus` (device ids), a step takes as many of them as its resources ask for (CUDA_VISIBLE_DEVICES) and waits
    for them to be free; without, each takes a worker. A failed step stops the steps after it (the others go on);
    its output is in log_dir/<step>.log. Raises StepFailed naming every failed step and what it stopped."""
    needs = dependencies(steps, to_run)
    order = [step for step in steps if step.name in to_run]
    free = list(gpus or [])
    done, failed, skipped = set(), {}, set()
    running: dict[Future, tuple[Step, list[str]]] = {}
    log_dir = log_dir or Path(".")
    log_dir.mkdir(parents=True, exist_ok=True)

    def launch(step: Step, devices: list[str]) -> int:
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        with (log_dir / f"{step.name}.log").open("w") as log:
            return subprocess.run(command_of(step.name), stdout=log, stderr=subprocess.STDOUT, env=env).returncode

    with ThreadPoolExecutor(max_workers=workers) as pool:
        while order or running:
            for step in list(order):
                if any(name in failed or name in skipped for name in needs[step.name]):
                    order.remove(step)
                    skipped.add(step.name)
                    print(f"[pool] {step.name}: not run, a step it needs failed", flush=True)
                    continue
                if len(running) >= workers or not all(name in done for name in needs[step.name]):
                    continue
                want = resources(step).gpus if (gpus is not None and resources) else 0
                if want > len(free):
                    continue
                devices, free = free[:want], free[want:]
                order.remove(step)
                print(f"[pool] {step.name}: started" + (f" on GPUs {','.join(devices)}" if devices else ""),
                      flush=True)
                running[pool.submit(launch, step, devices)] = (step, devices)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                step, devices = running.pop(future)
                free += devices
                if future.result() == 0:
                    done.add(step.name)
                    print(f"[pool] {step.name}: done", flush=True)
                else:
                    failed[step.name] = log_dir / f"{step.name}.log"
                    tail = failed[step.name].read_text().strip().splitlines()[-1:]
                    print(f"[pool] {step.name}: FAILED ({tail[0] if tail else 'no output'})", flush=True)
    if failed:
        raise StepFailed(f"failed: {', '.join(f'{name} (log: {log})' for name, log in failed.items())}; not run "
                         f"because of them: {', '.join(sorted(skipped)) or 'none'}. Rerun the command to run what "
                         f"is not done.")


def slurm_parameters(step: Step, resources: Resources, partition: str | None,
                     depends_on: list[str] = ()) -> dict:
    """sbatch's options for one step's job, as submitit's SlurmExecutor takes them; `depends_on`: job ids (afterok:
    the job starts once they all succeed; kill_on_invalid_dep: it is cancelled if one fails)."""
    parameters = {"job_name": step.name, "time": resources.minutes, "nodes": 1, "ntasks_per_node": 1,
                  "cpus_per_task": resources.cpus, "mem": f"{resources.mem_gb}GB", "stderr_to_stdout": True}
    if resources.gpus:
        parameters["gpus_per_node"] = resources.gpus
    if partition:
        parameters["partition"] = partition
    if depends_on:
        parameters["dependency"] = "afterok:" + ":".join(depends_on)
        parameters["additional_parameters"] = {"kill_on_invalid_dep": "yes"}
    return parameters


def sbatch_script(step: Step, resources: Resources, command: list[str], depends_on: list[str], folder: Path,
                  partition: str | None) -> str:
    """The sbatch script submitit submits for this step (its dependencies named <step>: job ids exist only once the
    jobs they name are submitted)."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command=" ".join(command), folder=str(folder / "%j"),
                               **slurm_parameters(step, resources, partition, [f"<{name}>" for name in depends_on]))


def submit_slurm(steps: list[Step], to_run: set[str], command_of, resources, folder: Path,
                 partition: str | None = None, wait_for_jobs: bool = False, poll_seconds: float = 5.0) -> dict:
    """Submit one SLURM job per step to run, in plan order, each with `afterok` dependencies on the jobs of the
    steps it needs (kill_on_invalid_dep: a failed job cancels its dependants, as the scheduler decides). Returns
    {step: job id}. wait_for_jobs: wait until every job has ended, then raise StepFailed naming the failed and the
    cancelled ones (the failed job's error names the notebook and cell, as a local run does)."""
    import submitit

    needs = dependencies(steps, to_run)
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"))
    jobs = {}
    for step in steps:
        if step.name not in to_run:
            continue
        executor.update_parameters(**slurm_parameters(step, resources(step), partition,
                                                      [jobs[name].job_id for name in needs[step.name]]))
        jobs[step.name] = executor.submit(submitit.helpers.CommandFunction(command_of(step.name), cwd=os.getcwd()))
        print(f"[slurm] {step.name}: job {jobs[step.name].job_id}"
              + (f", after {', '.join(needs[step.name])}" if needs[step.name] else ""), flush=True)
    if wait_for_jobs:
        while not all(job.done() for job in jobs.values()):
            time.sleep(poll_seconds)
        outcomes = {name: _outcome(job) for name, job in jobs.items()}
        failed = {name: outcome for name, outcome in outcomes.items() if outcome}
        if failed:
            first = next(iter(failed))
            raise StepFailed(f"jobs that did not complete: {', '.join(f'{name} ({failed[name][0]})' for name in failed)}"
                             f". {first}: {failed[first][1]}. Rerun the command to submit what is not done.")
    return {name: job.job_id for name, job in jobs.items()}


def _outcome(job) -> tuple[str, str] | None:
    """None for a job that succeeded; else its state as SLURM's accounting gives it (FAILED, CANCELLED: a dependency
    failed, TIMEOUT, ...) and the last line of its output (for a failed step, the pipeline's message naming the
    notebook and cell)."""
    try:
        error = job.exception()
    except Exception as missing:  # no result file: the job never ran, or was killed before writing one
        error = missing
    if error is None:
        return None
    output = [line for line in (job.stdout() or "").splitlines() if line.strip()]
    return job.state, output[-1].strip() if output else "no output"
