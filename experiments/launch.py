"""Where a training step runs: in this process (the tiny profile, one GPU), or in several processes through
`accelerate launch` (the paper profile: FSDP or DDP over the GPUs of one machine).

    train_step(config, "knowledge", 0, "results/tiny/runs/x")                   # in this process
    train_step(config, "paper_science", 0, "results/paper/runs/x", processes=8)  # accelerate launch, 8 processes

With several processes the run's TrainConfig is written to `<run>/launch_config.json` and
`accelerate launch --multi_gpu --num_processes N -m experiments.train_run --config-file ...` trains it; its output
streams into the caller's (the notebook's) output. `--multi_gpu` on a machine without GPUs starts N CPU processes
through torchrun (gloo), which is how the tests run this path. Mixed precision is the kit's own (TrainConfig.dtype),
so accelerate's is off.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from sdft_core.config import TrainConfig
from sdft_core.data import Task
from sdft_core.io import ensure_writable_folder, read_json, write_json
from sdft_core.train import train


def launch_command(processes: int, task: str, max_train_examples: int, output_dir: Path, config_file: Path,
                   stop_after_step: int | None = None, overwrite: bool = False) -> list[str]:
    """The `accelerate launch` command line that trains the run of `config_file` in `processes` processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "experiments.train_run", "--task", task, "--output-dir", str(output_dir),
               "--config-file", str(config_file), "--max-train-examples", str(max_train_examples)]
    return (command + (["--stop-after-step", str(stop_after_step)] if stop_after_step else [])
            + (["--overwrite"] if overwrite else []))


def train_step(config: TrainConfig, task: Task, max_train_examples: int, output_dir: Path | str, processes: int = 1,
               stop_after_step: int | None = None, overwrite: bool = False) -> dict:
    """Train (or resume, or skip) one run on the first `max_train_examples` training examples of `task` (0: all), in
    this process or in `processes` processes (which load the task by its registry name); returns the run's summary. overwrite: replace another run (or a damaged
    checkpoint) found in `output_dir` (sdft_core.train.train; without it such a folder is refused)."""
    output_dir = Path(output_dir)
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if processes == 1:
        examples = task.train[: max_train_examples or None]
        return train(config, examples, output_dir, stop_after_step=stop_after_step, overwrite=overwrite)
    ensure_writable_folder(output_dir)  # the launch config below is the first thing written there
    config_file = output_dir / "launch_config.json"
    write_json(config_file, dataclasses.asdict(config))
    command = launch_command(processes, task.name, max_train_examples, output_dir, config_file, stop_after_step, overwrite)
    print("[launch]", " ".join(command[1:]), flush=True)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
    if process.returncode:
        raise RuntimeError(f"training {output_dir} in {processes} processes failed (accelerate launch exited with "
                           f"{process.returncode}); the processes' output is above")
    summary = output_dir / "summary.json"
    return read_json(summary) if summary.exists() else {"stopped_after_step": stop_after_step}
