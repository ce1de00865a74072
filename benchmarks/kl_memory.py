"""Peak memory of the full-vocabulary KL loss (forward + backward), chunked vs unchunked, as completions grow.

    python benchmarks/kl_memory.py                       # SmolLM2-135M shapes (H=576, V=49,152)
    python benchmarks/kl_memory.py --hidden 3584 --vocab 152064 --lengths 256 512 1024   # Qwen2.5-7B head

Each configuration runs in a fresh subprocess and reports its peak resident memory (ru_maxrss) minus the memory of
the same process after building its inputs, so what is measured is what the loss itself allocates. The unchunked loss
holds several [B, T, V] float32 tensors at once (O(T·V)); the chunked one recomputes one chunk's logits at a time in
backward (O(chunk·V)). Also times the EMA teacher update of the embedded model (135M parameters). The table comes
under a line naming the machine (`sdft_core.io.machine_header`), as a child process sees it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# torch, the kit and the peers are imported inside the functions that run in the measured subprocess, not here: the
# parent only launches and tabulates, so each child's peak memory and import time are its own.


def measure_loss(batch: int, length: int, hidden: int, vocab: int, chunk: int | None) -> dict:
    import torch

    from sdft_core.loss import distillation_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    teacher_head = torch.nn.Linear(hidden, vocab, bias=False)
    student_hidden = torch.randn(batch, length, hidden, requires_grad=True)
    teacher_hidden = torch.randn(batch, length, hidden)
    tokens = torch.randint(0, vocab, (batch, length))
    weights = torch.ones(batch, length)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    loss, *_ = distillation_loss(student_hidden, teacher_hidden, tokens, weights, head, teacher_head,
                                 chunk_size=chunk)
    loss.backward()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"extra_peak_mb": (peak - baseline) / 1024, "seconds": seconds}


def measure_ema(repeats: int = 5) -> dict:
    from sdft_core.model import EMBEDDED_MODEL, load_model
    from sdft_core.teacher import Teacher

    student = load_model(EMBEDDED_MODEL)
    teacher = Teacher(student, "ema", 0.01)
    teacher.update(student)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        teacher.update(student)
    parameters = sum(p.numel() for p in student.parameters())
    return {"seconds_per_update": (time.perf_counter() - started) / repeats, "parameters": parameters}


def machine() -> dict:
    """The machine line, from a child like the measured ones (the parent does not import torch)."""
    from sdft_core.io import machine_header

    return {"header": machine_header()}


def run_child(arguments: list[str]) -> dict:
    output = subprocess.run([sys.executable, __file__, *arguments], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--no-ema", action="store_true", help="skip the EMA timing (it loads the embedded model)")
    parser.add_argument("--child", choices=["loss", "ema", "machine"], help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--unchunked", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "loss":
        print(json.dumps(measure_loss(args.batch, args.length, args.hidden, args.vocab,
                                      None if args.unchunked else args.chunk)))
        return
    if args.child == "ema":
        print(json.dumps(measure_ema()))
        return
    if args.child == "machine":
        print(json.dumps(machine()))
        return

    shape = ["--batch", str(args.batch), "--hidden", str(args.hidden), "--vocab", str(args.vocab),
             "--chunk", str(args.chunk)]
    print(run_child(["--child", "machine"])["header"])
    print(f"Full-vocabulary KL, forward + backward: B={args.batch}, H={args.hidden}, V={args.vocab}, "
          f"chunk={args.chunk}, float32, CPU")
    print("| completion length | logits B·T·V (MB) | unchunked peak (MB) | chunked peak (MB) | ratio | "
          "unchunked s | chunked s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        unchunked = run_child(["--child", "loss", "--length", str(length), "--unchunked", *shape])
        chunked = run_child(["--child", "loss", "--length", str(length), *shape])
        logits_mb = args.batch * length * args.vocab * 4 / 2**20
        print(f"| {length} | {logits_mb:.0f} | {unchunked['extra_peak_mb']:.0f} | {chunked['extra_peak_mb']:.0f} | "
              f"{unchunked['extra_peak_mb'] / max(chunked['extra_peak_mb'], 1):.1f}x | {unchunked['seconds']:.2f} | "
              f"{chunked['seconds']:.2f} |")
    if args.no_ema:
        return
    ema = run_child(["--child", "ema"])
    print(f"\nEMA teacher update (float32 lerp over {ema['parameters'] / 1e6:.0f}M parameters): "
          f"{ema['seconds_per_update'] * 1000:.0f} ms per optimizer step")


if __name__ == "__main__":
    main()
