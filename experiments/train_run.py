"""Train one run on a task from the command line; the entry point for `accelerate launch` (multi-process, multi-GPU).

    python -m experiments.train_run --task knowledge --output-dir results/runs/sdft --learning-rate 1e-4
    accelerate launch --multi_gpu --num_processes 2 -m experiments.train_run --task knowledge --output-dir ... \
        --batch-size 8 --micro-batch-size 4 [--sharding fsdp] [--device cpu]
    python -m experiments.train_run --task knowledge --preset paper_as_run --output-dir ...
    python -m experiments.train_run --task knowledge --lora-rank 16 --output-dir ...     # LoRA (sdft_core/lora.py)
    python -m experiments.train_run --task knowledge --config-file run.json --output-dir ...  # a whole TrainConfig

Every TrainConfig field is a flag (underscores become dashes; sdft_core/options.py: true/false, "none", lists as
several values); `--help` shows each field's documentation. Flags win over a config file (a JSON object of
TrainConfig fields, as experiments/launch.py writes it), the file over a preset, a preset over the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from sdft_core.config import PRESETS, TrainConfig, preset_config
from sdft_core.io import read_json
from sdft_core.options import add_field_options
from sdft_core.train import train
from tasks.registry import load_task


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.train_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="task name (tasks.registry.TASKS)")
    parser.add_argument("--output-dir", required=True, help="the run's folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a named preset")
    parser.add_argument("--config-file", help="a JSON object of TrainConfig fields (flags win over it)")
    parser.add_argument("--max-train-examples", type=int, default=0, help="use only the first N examples (0: all)")
    parser.add_argument("--stop-after-step", type=int, help="stop after this optimizer step, leaving a checkpoint "
                        "(split a long run over several sessions; a rerun resumes it)")
    parser.add_argument("--overwrite", action="store_true", help="replace what --output-dir holds that this run "
                        "cannot continue: another run (another config, data or training code) or a damaged "
                        "checkpoint; without it such a folder is refused and left as it is")
    add_field_options(parser, TrainConfig, skip=("extra",), given_only=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name != "extra" and getattr(args, f.name) is not None}
    task = load_task(args.task)
    from_file = read_json(args.config_file) if args.config_file else {}
    if unknown := sorted(set(from_file) - {f.name for f in dataclasses.fields(TrainConfig)}):
        raise SystemExit(f"{args.config_file}: {unknown} are not TrainConfig fields (sdft_core/config.py)")
    given = {**from_file, **overrides}
    given.setdefault("max_new_tokens", task.max_new_tokens)
    given.setdefault("extra", {"task": args.task})
    config = preset_config(args.preset or "", **given)
    summary = train(config, task.train[: args.max_train_examples or None], args.output_dir,
                    stop_after_step=args.stop_after_step, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
