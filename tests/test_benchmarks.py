"""The benchmark scripts run (tiny shapes on CPU): their numbers are measured elsewhere, their code is checked here."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(*arguments: str) -> str:
    done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_gpu_shapes_runs_on_cpu_with_a_tiny_config():
    out = run(str(BENCHMARKS / "gpu_shapes.py"), "--device", "cpu", "--configs", "tiny", "--lengths", "16",
              "--batch", "2", "--prompt-length", "8", "--chunk", "8", "--steps", "1")
    row = [line for line in out.splitlines() if line.startswith("| tiny |")]
    assert len(row) == 1 and "nan" not in row[0].split("|")[3]  # SFT step time measured


def test_kl_memory_prints_chunked_and_unchunked_peaks():
    out = run(str(BENCHMARKS / "kl_memory.py"), "--batch", "1", "--hidden", "16", "--vocab", "512",
              "--lengths", "32", "--chunk", "8", "--no-ema")
    assert "| 32 |" in out


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
