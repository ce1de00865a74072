"""The benchmark scripts run (tiny shapes on CPU): their numbers are measured elsewhere, their code is checked here;
and every one of them prints the machine it ran on above its table."""

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdft_core.io import machine_details, machine_header

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(*arguments: str) -> str:
    done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def cpu_model() -> str:
    """The CPU model as /proc/cpuinfo names it, read here independently of sdft_core.io."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def assert_machine_above_table(out: str, measured: bool = True) -> str:
    """Exactly one machine line, above the first table, naming this CPU, its cores, torch's threads and build."""
    lines = out.splitlines()
    found = [i for i, line in enumerate(lines) if line.startswith("Machine")]
    assert len(found) == 1, out[:3000]
    line = lines[found[0]]
    assert line.startswith("Machine: " if measured else "Machine (arithmetic only"), line
    assert found[0] < next(i for i, row in enumerate(lines) if row.startswith("|---")), out[:3000]
    assert f"CPU {cpu_model()} (" in line and f"{os.cpu_count()} cores" in line, line
    assert f"torch threads {torch.get_num_threads()} " in line, line  # the children inherit the same environment
    assert f"torch {torch.__version__} (" in line and f"Python {platform.python_version()};" in line, line
    return line


def test_the_machine_header_names_cpu_cores_threads_and_the_torch_build():
    details = machine_details()
    assert details["cpu"] == cpu_model() and details["cpu_cores"] == os.cpu_count() >= 1
    assert details["torch"] == torch.__version__ and details["torch_threads"] == torch.get_num_threads()
    assert details["cuda"] == torch.version.cuda and details["python"] == platform.python_version()
    assert details["parallel_backend"] in torch.__config__.parallel_info()  # e.g. "OpenMP"
    assert (details["mkl"] is not None) == torch.backends.mkl.is_available()
    assert (details["onednn"] is not None) == torch.backends.mkldnn.is_available()
    header = machine_header(details)
    assert header.startswith(f"Machine: CPU {cpu_model()} (") and f"{os.cpu_count()} cores" in header
    assert f"torch {torch.__version__} (" in header and f"{details['parallel_backend']} threading" in header
    assert ("CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build") in header
    assert details["date"] in header and details["commit"] in header
    assert machine_header(details, measured=False).startswith("Machine (arithmetic only: nothing in this table is "
                                                              f"measured on it): CPU {cpu_model()} (")


def test_the_machine_header_falls_back_to_platform_without_proc_cpuinfo(monkeypatch):
    read_text = Path.read_text

    def no_cpuinfo(self, *args, **kwargs):
        if str(self) == "/proc/cpuinfo":
            raise FileNotFoundError(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_cpuinfo)
    details = machine_details()
    assert details["cpu"] == (platform.processor() or platform.machine()) and details["cpu_variant"] is None
    assert f"CPU {details['cpu']} (" in machine_header(details)


def test_gpu_shapes_runs_on_cpu_with_a_tiny_config():
    out = run(str(BENCHMARKS / "gpu_shapes.py"), "--device", "cpu", "--configs", "tiny", "--lengths", "16",
              "--batch", "2", "--prompt-length", "8", "--chunk", "8", "--steps", "1")
    row = [line for line in out.splitlines() if line.startswith("| tiny |")]
    assert len(row) == 1 and "nan" not in row[0].split("|")[3]  # SFT step time measured
    assert_machine_above_table(out)


def test_kl_memory_prints_chunked_and_unchunked_peaks():
    out = run(str(BENCHMARKS / "kl_memory.py"), "--batch", "1", "--hidden", "16", "--vocab", "512",
              "--lengths", "32", "--chunk", "8", "--no-ema")
    assert "| 32 |" in out
    assert_machine_above_table(out)


def test_lora_memory_counts_the_adapters_peft_trains(tiny_model_dir):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import lora_memory
    finally:
        sys.path.remove(str(BENCHMARKS))
    from sdft_core.lora import apply_lora
    from sdft_core.model import load_model

    base, adapter = lora_memory.parameter_counts(str(Path(tiny_model_dir) / "config.json"), rank=4)
    model = load_model(tiny_model_dir)
    assert base == sum(p.numel() for p in model.parameters())
    wrapped = apply_lora(model, 4, 8.0, 0.0, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"])
    # Per decoder layer: r·(in + out) for each adapted linear layer (hidden 32, MLP 64, 2 KV heads of 8 dims).
    per_layer = 4 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 3)
    assert adapter == sum(p.numel() for p in wrapped.parameters() if p.requires_grad) == 2 * per_layer
    parts = lora_memory.budgets(7_000_000_000, 40_000_000)
    # Mixed precision: float32 weights 4 + gradients 4 + AdamW 8 + EMA teacher 4 + autocast's bf16 weight cache 2
    assert sum(parts["full SDFT"].values()) == pytest.approx(22 * 7)


def test_rollout_speed_prints_both_decoders_and_the_floor():
    out = run(str(BENCHMARKS / "rollout_speed.py"), "--batches", "1", "2", "--max-new-tokens", "3", "--repeats", "1")
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and all(float(row[3]) > 0 and float(row[4]) > 0 and float(row[8]) > 0 for row in rows)
    assert_machine_above_table(out)


def test_lora_memory_says_its_table_is_arithmetic_not_measured(monkeypatch, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import lora_memory
    finally:
        sys.path.remove(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", ["lora_memory.py", "--config", str(BENCHMARKS / "configs" / "qwen2.5-0.5b.json"),
                                      "--max-gpus", "1"])
    lora_memory.main()
    assert_machine_above_table(capsys.readouterr().out, measured=False)


def test_step_time_prints_its_machine_on_a_tiny_model(tiny_model_dir):
    out = run(str(BENCHMARKS / "step_time.py"), "--model", tiny_model_dir, "--steps", "2", "--batch", "2",
              "--max-new-tokens", "2", "--repeats", "1")
    assert_machine_above_table(out)
    assert "SDFT / SFT step time:" in out and out.count("| sdft") == 3


def test_vs_trl_prints_its_machine_on_a_tiny_model(tiny_model_dir):
    pytest.importorskip("trl.experimental.sdft", reason="TRL (the `peers` extra) is not installed")
    out = run(str(BENCHMARKS / "vs_trl.py"), "--model", tiny_model_dir, "--steps", "2", "--batch", "2",
              "--max-new-tokens", "2", "--repeats", "1")
    assert_machine_above_table(out)
    assert "TRL / ours step time:" in out


def test_gpu_acceptance_records_the_machine_header_with_its_results():
    """The whole toy run is tests/test_gpu_acceptance.py's; here only what goes into its "machine" block."""
    spec = importlib.util.spec_from_file_location("gpu_acceptance", BENCHMARKS / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = module.machine("cpu")
    assert info["cpu"] == cpu_model() and info["cpu_cores"] == os.cpu_count() and info["torch"] == torch.__version__
    assert info["device"] == "cpu" and info["gpu"] is None and set(machine_details()) <= set(info)
    header = info["header"]
    assert header.startswith(f"Machine: CPU {cpu_model()} (") and f"{os.cpu_count()} cores" in header
    assert f"torch {torch.__version__} (" in header and header.endswith(info["date"])
