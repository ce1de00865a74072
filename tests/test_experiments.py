"""The profiles' step graphs: every step names an existing notebook with parameters that notebook declares, every
dependency exists and comes first, and shared runs are defined once."""

import json
import os
import subprocess
from pathlib import Path

import papermill
import pytest

from experiments import pipeline
from experiments.launch import launch_command
from experiments.pipeline import notebook_path, only
from experiments.plans import DEFAULT_SEEDS, PAPER_GPUS, PROFILES, Plan, tiny_plan
from sdft_core.config import TrainConfig
from sdft_core.io import changed_sources, read_json

DECLARED: dict[str, set[str]] = {}


def declared(notebook: str) -> set[str]:
    if notebook not in DECLARED:
        DECLARED[notebook] = set(papermill.inspect_notebook(str(notebook_path(notebook))))
    return DECLARED[notebook]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_step_is_runnable_in_order(profile):
    steps = PROFILES[profile]("results/check")
    seen = set()
    for step in steps:
        assert notebook_path(step.notebook).exists(), step.notebook
        unknown = set(step.parameters) - declared(step.notebook)
        assert not unknown, f"{step.name}: {step.notebook} has no parameters {sorted(unknown)}"
        assert set(step.after) <= seen, f"{step.name} runs before {set(step.after) - seen}"
        seen.add(step.name)
    assert len(seen) == len(steps)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_pipeline_replaces_the_runs_it_retrains(profile):
    """A step reruns because its code or configuration changed: its run folder holds the old run, which train()
    refuses to replace unless asked (a notebook opened by hand never replaces a committed result)."""
    steps = [step for step in PROFILES[profile]("results/check") if step.notebook in ("train", "select_best")]
    assert steps and all(step.parameters["overwrite"] is True for step in steps)
    assert launch_command(2, "knowledge", 0, Path("run"), Path("run.json"), overwrite=True)[-1] == "--overwrite"


def test_a_step_cannot_be_defined_twice_differently():
    plan = Plan("results/check")
    plan.train("run", "knowledge", learning_rate=1e-4)
    plan.train("run", "knowledge", learning_rate=1e-4)  # the same definition: shared, fine
    with pytest.raises(ValueError, match="defined twice"):
        plan.train("run", "knowledge", learning_rate=3e-4)


def test_demo_is_the_knowledge_table_of_the_tiny_profile():
    tiny = {step.name: step for step in PROFILES["tiny"]("results/tiny", seeds=(0,))}
    demo = PROFILES["demo"]("results/tiny")
    assert [s.name for s in demo] == [s.name for s in only(list(tiny.values()), ["knowledge_report"])]
    assert all(tiny[s.name] == s for s in demo)  # identical steps: the demo's runs are the tiny profile's runs


def test_every_training_run_is_repeated_per_seed_and_chains_stay_within_a_seed():
    steps = {step.name: step for step in tiny_plan("results/tiny", seeds=(0, 1, 2))}
    assert PROFILES["tiny"].__defaults__[-1] == DEFAULT_SEEDS == (0, 1, 2)
    single = {step.name for step in tiny_plan("results/tiny", seeds=(0,))}
    trained = [name for name in single if name.startswith("train_")]
    for name in trained:
        for seed in (1, 2):
            repeated = steps[f"{name}_seed{seed}"]
            assert repeated.parameters["config"]["seed"] == seed
            assert repeated.parameters["run_name"].endswith(f"_seed{seed}")
        assert steps[name].parameters["config"]["seed"] == 0
    # Sequential training and re-invocation start from the previous model of the same seed.
    third = steps["train_seq_sdft_3_knowledge_seed2"]
    assert third.parameters["config"]["model"] == "results/tiny/runs/seq_sdft_2_extraction_seed2/model"
    assert third.after == ("train_seq_sdft_2_extraction_seed2",)
    # The base model is evaluated once; every trained model once per seed, and reports get all seeds.
    assert "eval_knowledge_base_seed1" not in steps and "prior_base_seed1" not in steps
    assert steps["knowledge_report"].parameters["rows"]["sdft"] == [
        "knowledge_sdft", "knowledge_sdft_seed1", "knowledge_sdft_seed2"]
    assert {"eval_knowledge_sdft_seed2", "eval_knowledge_base"} <= set(steps["knowledge_report"].after)
    assert steps["fig4_pareto"].parameters["models"]["extraction_dft_lr0.0003"]["prior"][2] == \
        "extraction_dft_lr0.0003_seed2"
    assert steps["fig3_sequential"].parameters["seeds"] == [0, 1, 2]


def test_a_sweep_selects_with_seed_0_and_repeats_the_chosen_configuration_per_seed():
    steps = {step.name: step for step in PROFILES["paper"]("results/paper")}
    # Sweep candidates train with seed 0 only (the as-written ablation is one configuration, trained per seed).
    assert not any("_seed" in name for name in steps if name.startswith("train_") and "as_written" not in name)
    selection = steps["best_paper_tool_use_sdft"]
    assert selection.parameters["seeds"] == [0, 1, 2]
    models = steps["fig4_pareto_paper_tool_use"].parameters["models"]
    assert models["sdft"]["eval"] == ["paper_tool_use_sdft", "paper_tool_use_sdft_seed1", "paper_tool_use_sdft_seed2"]


def test_seeds_must_include_0_and_be_distinct():
    for seeds in ((), (1, 2), (0, 0)):
        with pytest.raises(ValueError, match="seeds"):
            Plan("results/check", seeds)


def test_status_tells_up_to_date_from_stale_and_new_and_a_change_upstream_makes_dependents_stale(tmp_path):
    from dataclasses import replace

    from sdft_core.io import write_json
    from experiments.pipeline import step_fingerprints, step_status

    steps = PROFILES["smoke"]("results/check")[:4]
    assert steps[1].after == () and steps[1].name in steps[3].after  # data, then a run trained on it
    ids = step_fingerprints(steps)
    for step, fingerprint_of_last_run in zip(steps[:2], (ids[steps[0].name], "other inputs")):
        write_json(tmp_path / "_state" / f"{step.name}.json", {"fingerprint": fingerprint_of_last_run, "seconds": 60})
        (tmp_path / "notebooks").mkdir(exist_ok=True)
        (tmp_path / "notebooks" / f"{step.name}.ipynb").write_text("{}")
    status = step_status(steps, tmp_path / "_state", tmp_path / "notebooks")
    assert [(state, seconds) for _, state, seconds in status] == [("done", 60), ("stale", 60), ("new", None),
                                                                  ("new", None)]
    # A finished step whose executed notebook is gone reruns.
    (tmp_path / "notebooks" / f"{steps[0].name}.ipynb").unlink()
    assert step_status(steps, tmp_path / "_state", tmp_path / "notebooks")[0][1] == "stale"
    # A dependency's parameters are part of its dependents' fingerprints.
    changed = [steps[0], replace(steps[1], parameters={**steps[1].parameters, "changed": 1}), *steps[2:]]
    changed_ids = step_fingerprints(changed)
    assert changed_ids[steps[0].name] == ids[steps[0].name] and changed_ids[steps[2].name] == ids[steps[2].name]
    assert changed_ids[steps[1].name] != ids[steps[1].name] and changed_ids[steps[3].name] != ids[steps[3].name]


def test_a_clone_without_the_weights_retrains_and_recomputes_what_reads_them_and_a_failed_step_runs_again(
        tmp_path, monkeypatch):
    """Model folders are not committed: in a clone the records of finished steps are there but the weights are not.
    The training step runs again, and so does every step after it (a model retrained elsewhere is not bit-identical,
    so its evaluation must not be the committed one); with the weights there, nothing runs."""
    from sdft_core.io import write_json
    from experiments.pipeline import run_steps, step_fingerprints, step_status

    steps = PROFILES["demo"](str(tmp_path))
    state_dir, executed_dir = tmp_path / "_state", tmp_path / "notebooks"
    trained = {step.name: Path(step.outputs[0]) for step in steps if step.notebook == "train"}
    assert set(trained) == {"train_knowledge_sft", "train_knowledge_sdft"}
    assert all(step.outputs == () for step in steps if step.notebook != "train")
    executed_dir.mkdir()
    for step, fingerprint_of_last_run in step_fingerprints(steps).items():
        write_json(state_dir / f"{step}.json", {"fingerprint": fingerprint_of_last_run, "seconds": 60})
        (executed_dir / f"{step}.ipynb").write_text("{}")
    for folder in trained.values():
        folder.mkdir(parents=True)

    def states():
        return {step.name: state for step, state, _ in step_status(steps, state_dir, executed_dir)}

    assert set(states().values()) == {"done"}
    trained["train_knowledge_sdft"].rmdir()  # a clone: the record is there, the weights are not
    expected = ["train_knowledge_sdft", "eval_knowledge_sdft", "knowledge_report"]
    assert [name for name, state in states().items() if state != "done"] == expected

    ran, failing = [], {"eval_knowledge_sdft"}

    def execute(source, output, parameters, **options):
        name = Path(output).stem
        ran.append(name)
        Path(output).write_text("{}")
        if name in failing:
            raise papermill.PapermillExecutionError(0, 3, "", "RuntimeError", "killed", [])
        if name in trained:
            trained[name].mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(pipeline, "write_provenance", lambda state_dir: None)
    with pytest.raises(SystemExit, match="eval_knowledge_sdft"):
        run_steps(steps, state_dir, executed_dir, log_output=False)
    assert ran == expected[:2]
    # The retrained model is there now, but the evaluation that failed after it has no record: it runs again.
    assert [name for name, state in states().items() if state != "done"] == expected[1:]
    ran.clear()
    failing.clear()
    run_steps(steps, state_dir, executed_dir, log_output=False)
    assert ran == expected[1:]
    ran.clear()
    run_steps(steps, state_dir, executed_dir, log_output=False)
    assert ran == []


def test_the_end_of_a_run_prints_the_tables_it_wrote_and_only_those(tmp_path, capsys):
    import time

    from experiments.pipeline import print_new_tables

    (tmp_path / "old.md").write_text("| old |\n")
    os.utime(tmp_path / "old.md", (0, 0))
    (tmp_path / "provenance.md").write_text("| step |\n")
    since = time.time() - 1
    print_new_tables(tmp_path, since)
    assert "every step was up to date" in capsys.readouterr().out
    (tmp_path / "table1.md").write_text("| sdft | 40 |\n")
    print_new_tables(tmp_path, since)
    out = capsys.readouterr().out
    assert "| sdft | 40 |" in out and "old" not in out and "| step |" not in out


def test_papermill_bookkeeping_lines_are_filtered_and_notebook_output_is_shown(monkeypatch, capsys):
    import logging

    from experiments import pipeline

    logger = logging.getLogger("papermill")
    for attribute, value in (("handlers", []), ("level", logger.level), ("propagate", logger.propagate)):
        monkeypatch.setattr(logger, attribute, value)
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    pipeline.stream_notebook_output()
    logger.info("Executing Cell 3---------")
    logger.info("train sdft: 40 steps")
    assert capsys.readouterr().out == "train sdft: 40 steps\n"
    assert os.environ["PYTHONWARNINGS"] == pipeline.QUIET_WARNINGS


def test_skip_upstream_runs_the_named_steps_alone(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda source, output, **options: ran.append(Path(output).stem))
    monkeypatch.setattr(pipeline, "write_provenance", lambda state_dir: None)
    pipeline.run_profile("tiny", tmp_path, targets=["fig7_teacher_context"], seeds=1, skip_upstream=True,
                         log_output=False)
    assert ran == ["fig7_teacher_context"]
    ran.clear()
    pipeline.run_profile("tiny", tmp_path / "all", targets=["fig7_teacher_context"], seeds=1, log_output=False)
    assert "train_knowledge_context_text" in ran and ran[-1] == "fig7_teacher_context"


def test_skip_upstream_refuses_a_step_whose_skipped_dependency_left_no_model(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda source, output, **options: ran.append(Path(output).stem))
    monkeypatch.setattr(pipeline, "write_provenance", lambda state_dir: None)
    targets = ["eval_knowledge_sdft", "eval_knowledge_sft"]
    with pytest.raises(SystemExit, match=r"eval_knowledge_sdft needs .*runs/knowledge_sdft/model, written by "
                                         r"train_knowledge_sdft"):
        pipeline.run_profile("tiny", tmp_path, targets=targets, seeds=1, skip_upstream=True, log_output=False)
    assert ran == []  # refused before any step ran, though eval_knowledge_sft comes first
    for run in ("knowledge_sdft", "knowledge_sft"):
        (tmp_path / "runs" / run / "model").mkdir(parents=True)
    pipeline.run_profile("tiny", tmp_path, targets=targets, seeds=1, skip_upstream=True, log_output=False)
    assert sorted(ran) == sorted(targets)


def test_provenance_counts_changed_sources_but_not_a_runs_own_results(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "src.py").write_text("x = 1\n")
    (tmp_path / "results" / "metrics.jsonl").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    (tmp_path / "results" / "metrics.jsonl").write_text('{"loss": 1}\n')  # a run writing its output
    (tmp_path / "untracked.py").write_text("")
    assert changed_sources(cwd=tmp_path) == []
    (tmp_path / "src.py").write_text("x = 2\n")
    assert changed_sources(cwd=tmp_path) == ["src.py"]
    assert changed_sources(cwd=tmp_path / "results") == ["src.py"]  # from a subfolder: the whole repository


def test_the_paper_profile_trains_sdft_as_run_through_accelerate_with_the_ablation_beside_it():
    steps = {step.name: step for step in PROFILES["paper"]("results/paper")}
    trainings = [step for step in steps.values() if step.notebook == "train"]
    assert {step.parameters["processes"] for step in trainings} == {PAPER_GPUS}
    for step in trainings:  # every batch of the sweep splits into whole micro-batches over the processes
        config = TrainConfig(**step.parameters["config"])
        assert config.sharding == "fsdp" and config.dtype == "bfloat16"
        assert config.batch_size % (PAPER_GPUS * config.micro_batch_size) == 0, step.name
    sdft = steps["train_paper_tool_use_sdft_lr1e-05_ep2_bs32_ema0.01"].parameters["config"]
    assert sdft["direction"] == "forward" and sdft["rollout_engine"] == "vllm_colocate"
    ablation = steps["train_paper_tool_use_sdft_as_written_seed2"].parameters["config"]
    assert ablation["direction"] == "reverse" and ablation["learning_rate"] == 1e-5
    assert "sdft_as_written" in steps["fig4_pareto_paper_tool_use"].parameters["models"]


@pytest.mark.slow
def test_the_paper_profile_runs_on_this_cpu_through_its_own_code_path(tmp_path):
    """PAPER_DRY_RUN: the paper plan's steps (sweep → select_best → evaluate → figure) with the embedded model standing
    in for Qwen2.5-7B at smoke sizes: every training through `accelerate launch` with 2 processes, bf16 compute on
    float32 master weights, SDFT rollouts from the real vLLM engine (CPU build) in every process.
    What cannot run on this CPU, and so is not exercised here: CUDA and NCCL (gloo instead), vLLM's sleep mode (the
    CPU build refuses it), server mode (its weight broadcast needs NCCL), CUDA graphs (the CPU engine runs eager),
    FSDP with the colocated engine at 7B (memory), the paper's hub datasets and Table 1 (PAPER_DRY_RUN.knowledge)."""
    pipeline.run_profile("paper_dry_run", tmp_path, log_output=False)
    figure = tmp_path / "fig4_pareto.md"
    assert figure.exists() and (tmp_path / "fig4_pareto.png").exists()
    assert set(read_json(tmp_path / "best" / "extraction_sdft.json")["val_scores"]) == {
        "extraction_sdft_lr0.0001_ema0.01", "extraction_sdft_lr0.0003_ema0.01"}
    for run in ("extraction_sft_lr0.0001", "extraction_sdft_lr0.0003_ema0.01", "extraction_sdft_as_written"):
        written = read_json(tmp_path / "runs" / run / "config.json")
        assert written["processes"] == 2 and written["config"]["dtype"] == "bfloat16", run
        assert (tmp_path / "runs" / run / "model" / "model.safetensors").exists()
    sdft = read_json(tmp_path / "runs" / "extraction_sdft_lr0.0003_ema0.01" / "config.json")["config"]
    assert sdft["rollout_engine"] == "vllm_colocate" and sdft["direction"] == "forward"
    rows = [json.loads(line) for line in
            (tmp_path / "runs" / "extraction_sdft_lr0.0003_ema0.01" / "metrics.jsonl").read_text().splitlines()]
    # The engine (bf16) and the trainer (bf16 autocast over float32 weights) score the sampled tokens alike.
    assert all(abs(row["is_ratio_mean"] - 1) < 0.1 and row["loss_tokens"] > 0 for row in rows), rows
    assert read_json(tmp_path / "runs" / "extraction_sdft_as_written" / "config.json")["config"]["direction"] == \
        "reverse"
