"""The GPU acceptance script (benchmarks/gpu_acceptance.py) at toy size on the CPU: the same checks, runs and JSON that
the lent GPU produces at full size. Its numbers are checked here, not only its exit status."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"sdft_bf16_full", "sdft_bf16_lora16", "sdft_bf16_fsdp1"}

def load_script():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", ROOT / "benchmarks" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_acceptance_runs_every_check_at_toy_size_on_cpu(tmp_path):
    output = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_acceptance", "--size", "toy", "--device", "cpu",
                           "--output", str(output)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert output.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(output.read_text())
    # The exit status, the verdict and the failure list agree.
    assert (done.returncode == 0) == results["passed"] == (not results["failures"]), done.stderr[-3000:]
    assert results["machine"]["torch"] == torch.__version__ and results["machine"]["cpu_cores"] >= 1
    assert results["model"]["vocab_size"] == 49152 and results["steps"] == 2

    step0 = results["step0"]
    assert "error" not in step0, step0
    assert 0 < step0["loss_float32"] < 1 and 0 < step0["loss_bf16_autocast"] < 1  # a KL per token, not 0
    assert step0["relative_difference"] == pytest.approx(
        abs(step0["loss_bf16_autocast"] - step0["loss_float32"]) / step0["loss_float32"])
    assert step0["relative_difference"] <= step0["tolerance"] == 1e-2
    assert 0.99 <= step0["grad_cosine"] <= 1 + 1e-9 and step0["passed"]

    runs = {run["run"]: run for run in results["runs"]}
    assert set(runs) == RUNS
    for name, run in runs.items():
        assert "error" not in run, f"{name}: {run['error']}"
        assert run["steps"] == len(run["losses"]) == 2
        assert all(math.isfinite(loss) and loss >= 0 for loss in run["losses"]), run["losses"]
        assert run["final_loss"] == run["losses"][-1]
        assert run["seconds_step_median"] > 0 and run["completion_tokens_per_second"] > 0
        assert 0 < run["completion_length_mean"] <= results["max_new_tokens"]
        assert run["peak_memory_gb"] > 0.1  # the process's RSS: torch alone is more
        assert run["sharded"] == (name == "sdft_bf16_fsdp1"), "sharding='fsdp' in a 1-process group must shard"
    assert results["failures"] == [] and results["passed"]


def test_the_step0_check_fails_when_the_loss_loses_precision(tmp_path, embedded_tokenizer, monkeypatch):
    """The check has teeth: a log-softmax left in bf16 under autocast (what sdft_core.loss._log_probs guards against)
    moves the toy model's step-0 loss far past the tolerance."""
    import torch.nn.functional as F

    import sdft_core.loss

    script = load_script()
    model_dir, _ = script.build_model("toy", embedded_tokenizer, tmp_path / "model", "cpu")
    examples = script.synthetic_examples(4)
    good = script.check_step0(model_dir, embedded_tokenizer, examples, script.SIZES["toy"], "cpu")
    assert good["passed"] and good["relative_difference"] < 1e-3
    monkeypatch.setattr(sdft_core.loss, "_log_probs", lambda head, hidden: F.log_softmax(head(hidden), dim=-1))
    broken = script.check_step0(model_dir, embedded_tokenizer, examples, script.SIZES["toy"], "cpu")
    assert broken["loss_float32"] == pytest.approx(good["loss_float32"], rel=1e-6)  # float32 is unchanged
    assert broken["relative_difference"] > 10 * script.STEP0_LOSS_RTOL and not broken["passed"]
