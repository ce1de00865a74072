"""Where steps run (experiments/executors.py): resources from the plan, the SLURM dry run of the paper profile, and
the local pool, whose results equal the sequential run's."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import executors, pipeline
from experiments.executors import Resources, dependencies, resources_for, run_pool
from experiments.plans import PAPER_GPUS, PROFILES, Step
from sdft_core.io import read_json

ROOT = Path(__file__).resolve().parent.parent
POOL_TARGETS = ["best_extraction_sweep_sft", "fig2_kl_to_base"]  # two branches of the smoke plan, one with a chain


def paper_steps():
    return {step.name: step for step in PROFILES["paper"]("results/paper")}


def test_resources_come_from_the_plan_and_can_be_overridden_in_one_place():
    steps = paper_steps()
    train = steps["train_paper_science_sdft_lr1e-05_ep2_bs32_ema0.01"]
    assert resources_for(train, estimated_hours=4.0) == Resources(
        PAPER_GPUS, executors.CPUS_PER_GPU * PAPER_GPUS, executors.MEM_GB_PER_GPU * PAPER_GPUS,
        max(executors.MIN_TRAIN_MINUTES, 2 * 60 * 4 // PAPER_GPUS))
    assert resources_for(train, estimated_hours=40.0).minutes == 2 * 60 * 40 // PAPER_GPUS  # 2x the estimate
    assert resources_for(steps["eval_paper_science_base"]) == executors.RESOURCES["evaluate"]
    assert resources_for(steps["best_paper_science_sdft"], training_gpus=PAPER_GPUS).gpus == PAPER_GPUS
    assert resources_for(steps["fig4_pareto_paper_science"]).gpus == 0
    overrides = {"evaluate": {"minutes": 30}, "eval_paper_science_base": {"gpus": 2}}
    assert resources_for(steps["eval_paper_science_base"], overrides=overrides) == Resources(2, 8, 64, 30)
    smoke = {step.name: step for step in PROFILES["smoke"]("results/smoke")}
    assert resources_for(smoke["train_knowledge_sdft"]) == executors.CPU_STEP  # a CPU profile asks for no GPU


def test_a_done_step_is_no_dependency():
    steps = [Step("a", "train"), Step("b", "evaluate", after=("a",)), Step("c", "fig", after=("a", "b"))]
    assert dependencies(steps, {"a", "b", "c"}) == {"a": [], "b": ["a"], "c": ["a", "b"]}
    assert dependencies(steps, {"b", "c"}) == {"b": [], "c": ["b"]}


def test_the_slurm_dry_run_prints_every_job_with_its_dependencies_and_the_gpu_hours(tmp_path, capsys):
    pipeline.run_profile("paper", tmp_path, targets=["fig4_pareto_paper_science"], executor="slurm", dry_run=True)
    out = capsys.readouterr().out
    jobs = out.count("## job ")
    assert jobs == len(pipeline.only(PROFILES["paper"](str(tmp_path)), ["fig4_pareto_paper_science"]))
    assert out.count("#!/bin/bash") == jobs
    evaluation = out[out.index("## job eval_paper_science_sft_lr5e-06_ep1_bs16_val"):]
    evaluation = evaluation[: evaluation.index("## job", 5)]
    assert "#SBATCH --dependency='afterok:<train_paper_science_sft_lr5e-06_ep1_bs16>'" in evaluation
    assert "#SBATCH --kill-on-invalid-dep=yes" in evaluation and "--gpus-per-node=1" in evaluation
    training = out[out.index("## job train_paper_science_sdft_lr1e-05_ep2_bs32_ema0.01"):]
    assert f"#SBATCH --gpus-per-node={PAPER_GPUS}" in training[: training.index("## job", 5)]
    assert "| fig4_pareto_paper_science |" in out and "GPU-h" in out
    assert not (tmp_path / "_jobs").exists()  # nothing was submitted


def test_the_pool_stops_the_dependants_of_a_failed_step_and_names_it(tmp_path):
    steps = [Step("ok", "fig"), Step("bad", "fig"), Step("after_bad", "fig", after=("bad",)),
             Step("after_ok", "fig", after=("ok",))]
    command_of = lambda name: ["python", "-c", f"import sys; print('step {name}'); sys.exit({int(name == 'bad')})"]
    with pytest.raises(executors.StepFailed, match=r"failed: bad .*not run because of them: after_bad"):
        run_pool(steps, {s.name for s in steps}, command_of, workers=2, log_dir=tmp_path)
    assert (tmp_path / "after_ok.log").read_text().strip() == "step after_ok"
    assert not (tmp_path / "after_bad.log").exists()


def test_the_pool_shares_out_gpus(tmp_path):
    steps = [Step(f"s{i}", "train", {"processes": 2, "config": {"device": "cuda"}}) for i in range(3)]
    command_of = lambda name: ["python", "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"]
    run_pool(steps, {s.name for s in steps}, command_of, workers=3, gpus=["0", "1", "2", "3"],
             resources=resources_for, log_dir=tmp_path)
    seen = [(tmp_path / f"s{i}.log").read_text().strip() for i in range(3)]
    assert all(len(devices.split(",")) == 2 for devices in seen) and set(seen) <= {"0,1", "2,3"}


def results_of(folder):
    """What the pool run must reproduce: the trained weights, the evaluations, the selection and the figure's table."""
    found = {path.relative_to(folder).as_posix(): json.loads(path.read_text()) for path in folder.glob("eval/*.json")}
    found.update({path.parent.name: read_json(path)["weights_fingerprint"] for path in folder.glob("runs/*/summary.json")})
    found["best"] = read_json(folder / "best" / "extraction_sweep_sft.json")
    found["fig2"] = (folder / "fig2_kl_to_base.md").read_text()
    return found


def comparable(results: dict) -> dict:
    """Every weight, number and answer, without the timings, provenance and paths of the runs that produced them
    (an evaluation's cache key hashes its model's path)."""
    for key, value in results.items():
        if key.startswith("eval/"):
            for part in ("provenance", "eval_seconds", "fingerprint", "model"):
                value.pop(part, None)
    return results


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The steps of POOL_TARGETS run one after another (the local executor): what the others must reproduce."""
    folder = tmp_path_factory.mktemp("sequential")
    pipeline.run_profile("smoke", folder, log_output=False, targets=POOL_TARGETS)
    return comparable(results_of(folder))


@pytest.mark.slow
def test_the_pool_gives_the_sequential_results(tmp_path, sequential):
    pipeline.run_profile("smoke", tmp_path / "pool", targets=POOL_TARGETS, executor="pool", workers=2)
    assert comparable(results_of(tmp_path / "pool")) == sequential
    # Every step recorded its run, so a rerun runs nothing.
    status = pipeline.step_status(pipeline.only(pipeline.profile_steps("smoke", tmp_path / "pool"), POOL_TARGETS),
                                  tmp_path / "pool" / "_state", tmp_path / "pool" / "notebooks")
    assert {state for _, state, _ in status} == {"done"}


@pytest.fixture(scope="module")
def slurm():
    """The single-node cluster of .ci/start_slurm.sh (CI starts it; here it is started if SLURM is installed)."""
    if shutil.which("sbatch") is None or subprocess.run([str(ROOT / ".ci" / "start_slurm.sh")],
                                                        capture_output=True).returncode != 0:
        if os.environ.get("SDFT_REQUIRE_SLURM"):
            pytest.fail("SLURM is required here (SDFT_REQUIRE_SLURM) but .ci/start_slurm.sh could not start it")
        pytest.skip("no SLURM on this machine: .ci/start_slurm.sh starts one (root, Debian's slurm-wlm and munge)")


@pytest.mark.slow
def test_slurm_jobs_give_the_sequential_results(tmp_path, slurm, sequential):
    pipeline.run_profile("smoke", tmp_path / "slurm", targets=POOL_TARGETS, executor="slurm", wait=True)
    assert comparable(results_of(tmp_path / "slurm")) == sequential
    jobs = set((tmp_path / "slurm" / "_jobs").iterdir())
    pipeline.run_profile("smoke", tmp_path / "slurm", targets=POOL_TARGETS, executor="slurm", wait=True)
    assert set((tmp_path / "slurm" / "_jobs").iterdir()) == jobs  # a rerun submits nothing: every step is done


@pytest.mark.slow
def test_a_failed_slurm_job_cancels_its_dependants_and_is_named(tmp_path, slurm):
    steps = [Step("bad", "fig"), Step("after_bad", "fig", after=("bad",))]
    command_of = lambda name: [sys.executable, "-c", f"import sys; sys.exit({int(name == 'bad')})"]
    with pytest.raises(executors.StepFailed, match=r"bad \(FAILED\), after_bad \(CANCELLED"):
        executors.submit_slurm(steps, {"bad", "after_bad"}, command_of, resources_for, tmp_path, wait_for_jobs=True,
                               poll_seconds=1)


@pytest.mark.slow
def test_a_killed_training_job_resumes_from_its_checkpoint_when_resubmitted(tmp_path, slurm, tiny_model_dir):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "experiments.train_run", "--task", "knowledge", "--model", tiny_model_dir,
               "--output-dir", str(run), "--method", "sft", "--max-train-examples", "8", "--epochs", "25",
               "--batch-size", "2", "--micro-batch-size", "2", "--checkpoint-every", "1", "--warmup-steps", "0",
               "--learning-rate", "1e-3"]
    steps, command_of = [Step("train_run", "train")], lambda name: command
    job = executors.submit_slurm(steps, {"train_run"}, command_of, resources_for, tmp_path / "jobs")["train_run"]
    checkpoint = run / "checkpoint" / "state.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.2)
    subprocess.run(["scancel", job], check=True)
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        time.sleep(0.5)
    assert checkpoint.exists() and not (run / "summary.json").exists(), "the job was not killed mid-run"
    killed_at = torch.load(checkpoint, weights_only=True)["step"]
    executors.submit_slurm(steps, {"train_run"}, command_of, resources_for, tmp_path / "jobs", wait_for_jobs=True,
                           poll_seconds=1)
    assert read_json(run / "summary.json")["steps"] == 100  # long enough that scancel lands mid-run
    logs = "".join(path.read_text() for path in (tmp_path / "jobs").rglob("*_log.out"))
    assert f"from the checkpoint after step" in logs and killed_at >= 1
    # The resumed run's metrics are one line per step, as an uninterrupted run's.
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == list(
        range(1, 101))
