"""Multi-process training through accelerate: 2 CPU processes compute what 1 process computes for the same global
batch, replicated (DDP) or sharded (FSDP2), and a checkpoint written by 2 processes resumes in 1."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sdft_core.io import read_json

COMMON = ["--task", "knowledge", "--max-train-examples", "8", "--batch-size", "4", "--micro-batch-size", "2",
          "--learning-rate", "1e-3", "--warmup-steps", "1", "--max-new-tokens", "6",
          "--teacher-context", "context_and_demonstration"]


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def one_process(model_dir, output, *extra):
    run([sys.executable, "-m", "experiments.train_run", "--model", model_dir, "--output-dir", str(output),
         *COMMON, *extra])


def two_processes(model_dir, output, *extra):
    # On a machine without GPUs, `--multi_gpu` makes accelerate start 2 CPU processes through torchrun (gloo);
    # `--cpu --num_processes 2` would start only one (accelerate 1.15 needs MPI for several CPU processes).
    run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "experiments.train_run",
         "--model", model_dir, "--output-dir", str(output), "--device", "cpu", *COMMON, *extra])
    written = read_json(output / "config.json")
    assert written["processes"] == 2, "the launcher started one process, not two"


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["replicate", "fsdp"])
@pytest.mark.parametrize("method", ["sdft", "sft"])
def test_two_processes_match_one_process(tmp_path, tiny_model_dir, method, sharding):
    one_process(tiny_model_dir, tmp_path / "one", "--method", method)
    two_processes(tiny_model_dir, tmp_path / "two", "--method", method, "--sharding", sharding)
    assert read_json(tmp_path / "two" / "summary.json")["sharded"] == (sharding == "fsdp")
    single, double = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert single.keys() == double.keys()
    initial = load_file(f"{tiny_model_dir}/model.safetensors")
    for key in single:
        # Same update up to the order of floating-point additions in the all-reduce ...
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-6)
    # ... and the update is not trivially zero.
    assert any(not torch.allclose(single[k], initial[k]) for k in single)


@pytest.mark.slow
def test_lora_sdft_in_two_processes_matches_one_process(tmp_path, tiny_model_dir):
    """DDP over a LoRA student (only the adapter is trainable; the EMA teacher is a second adapter on every process);
    the saved model is the merged student. Also the CLI's list flag (--lora-target-modules)."""
    extra = ["--method", "sdft", "--lora-rank", "4", "--lora-target-modules", "q_proj", "v_proj"]
    one_process(tiny_model_dir, tmp_path / "one", *extra)
    two_processes(tiny_model_dir, tmp_path / "two", *extra)
    assert read_json(tmp_path / "one" / "config.json")["config"]["lora_target_modules"] == ["q_proj", "v_proj"]
    single, double = weights(tmp_path / "one"), weights(tmp_path / "two")
    initial = load_file(f"{tiny_model_dir}/model.safetensors")
    for key in single:
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-6)
    changed = {k for k in single if not torch.equal(single[k], initial[k])}
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)  # only the adapted layers moved
    with pytest.raises(AssertionError, match="fsdp"):
        two_processes(tiny_model_dir, tmp_path / "fsdp", *extra, "--sharding", "fsdp")


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["replicate", "fsdp"])
def test_checkpoint_from_two_processes_resumes_in_one(tmp_path, tiny_model_dir, sharding):
    extra = ["--method", "sdft", "--checkpoint-every", "1"]
    one_process(tiny_model_dir, tmp_path / "straight", *extra)
    # Two processes stop after step 1 (a checkpoint is left), one process finishes the run from it.
    two_processes(tiny_model_dir, tmp_path / "mixed", *extra, "--stop-after-step", "1", "--sharding", sharding)
    assert (tmp_path / "mixed" / "checkpoint" / "state.pt").exists()
    one_process(tiny_model_dir, tmp_path / "mixed", *extra)
    straight, mixed = weights(tmp_path / "straight"), weights(tmp_path / "mixed")
    for key in straight:
        torch.testing.assert_close(mixed[key], straight[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_checkpoint_from_one_process_resumes_sharded_over_two(tmp_path, tiny_model_dir):
    extra = ["--method", "sdft", "--checkpoint-every", "1"]
    one_process(tiny_model_dir, tmp_path / "straight", *extra)
    one_process(tiny_model_dir, tmp_path / "mixed", *extra, "--stop-after-step", "1")
    two_processes(tiny_model_dir, tmp_path / "mixed", *extra, "--sharding", "fsdp")
    assert read_json(tmp_path / "mixed" / "summary.json")["sharded"]
    straight, mixed = weights(tmp_path / "straight"), weights(tmp_path / "mixed")
    for key in straight:
        torch.testing.assert_close(mixed[key], straight[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["replicate", "fsdp"])
def test_a_partial_last_batch_trains_the_same_over_two_processes(tmp_path, tiny_model_dir, sharding):
    """6 examples at batch 4: the last batch holds 2 (a second process used to get none and fail, or wait forever in
    the gradient all-reduce); it is filled to 4 from the order's start, so each process takes 2, as one would."""
    extra = ["--method", "sdft", "--max-train-examples", "6", "--normalize", "sequences"]
    one_process(tiny_model_dir, tmp_path / "one", *extra)
    two_processes(tiny_model_dir, tmp_path / "two", *extra, "--sharding", sharding)
    assert read_json(tmp_path / "two" / "summary.json")["examples_seen"] == 8
    single, double = weights(tmp_path / "one"), weights(tmp_path / "two")
    for key in single:
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-6)
