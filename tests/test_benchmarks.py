"""The benchmark scripts run (tiny shapes on CPU): their numbers are measured elsewhere, their code is checked here."""

import subprocess
import sys
from pathlib import Path

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
