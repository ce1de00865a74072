"""Run untrusted, model-written Python in a child process with a wall-time limit and a memory limit.

The child is a fresh `python -I` (isolated: no user site, no PYTHON* variables, no cwd on sys.path) in an empty
temporary folder, in its own session so a timeout kills everything it started. Before running the program the
child caps itself with resource.setrlimit: address space (memory), CPU seconds (a second line of defence behind the
wall clock), size of files it writes, and no core dumps. This contains accidents (infinite loops, memory hogs,
stray files); it is not a security boundary against code written to escape, so run evaluations on a machine or
container you are willing to lose, as the HumanEval authors advise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Runs first in the child: set the limits, then execute the program as __main__. argv: program, memory bytes,
# CPU seconds, file-size bytes.
_CHILD = """
import resource, sys
program, memory, cpu, fsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
sys.argv = [program]
with open(program, encoding="utf-8") as handle:
    code = compile(handle.read(), program, "exec")
exec(code, {"__name__": "__main__", "__file__": program})
"""

# Outcomes, in the order they are recognised.
PASSED, TIMEOUT, MEMORY, FAILED = "passed", "timeout", "memory_limit", "failed"


@dataclass(frozen=True)
class ExecutionResult:
    status: str
    """"passed" (exit 0), "timeout" (wall-time or CPU limit), "memory_limit" (MemoryError), "failed" (anything
    else: assertion, exception, syntax error)."""
    returncode: int | None
    """The child's exit status (negative: killed by that signal); None if it was killed at the wall-time limit."""
    stderr_tail: str
    """The end of the child's stderr, for reading why it failed."""

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def run_python(program: str, timeout_s: float, memory_mb: int, max_file_mb: int = 10,
               stderr_chars: int = 2000) -> ExecutionResult:
    """Execute `program` in a limited child process and report how it ended.

    timeout_s: wall-clock limit; the child's whole process group is killed when it is reached.
    memory_mb: address-space limit (RLIMIT_AS) of the child, in MiB; allocations beyond it raise MemoryError.
    max_file_mb: largest file the child may write (RLIMIT_FSIZE), in MiB.
    stderr_chars: how much of the end of stderr to keep.
    """
    if timeout_s <= 0 or memory_mb <= 0:
        raise ValueError(f"run_python needs positive limits, got timeout_s={timeout_s}, memory_mb={memory_mb}")
    cpu_seconds = max(1, int(timeout_s) + 1)  # the wall clock normally fires first; this catches a lost timer
    with tempfile.TemporaryDirectory(prefix="sdft_sandbox_") as workdir:
        program_path = Path(workdir) / "program.py"
        program_path.write_text(program, encoding="utf-8")
        command = [sys.executable, "-I", "-c", _CHILD, str(program_path), str(memory_mb * 2 ** 20),
                   str(cpu_seconds), str(max_file_mb * 2 ** 20)]
        # A minimal environment: nothing of the parent's (tokens, proxies) leaks into model-written code.
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
                       "OMP_NUM_THREADS": "1"}
        # stderr goes to a file, not a pipe: a background process the program leaves behind would hold a pipe open
        # and make us wait for it; we wait for the child only, then kill its whole group.
        stderr_path = Path(workdir) / "stderr.txt"
        with stderr_path.open("wb") as stderr_file:
            child = subprocess.Popen(command, cwd=workdir, env=environment, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=stderr_file, start_new_session=True)
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            child.wait()
            return ExecutionResult(TIMEOUT, None, "")
        finally:
            _kill_group(child)  # anything the program left running in the background
        stderr = stderr_path.read_bytes()
    stderr_text = stderr.decode("utf-8", errors="replace")[-stderr_chars:]
    if child.returncode == 0:
        return ExecutionResult(PASSED, 0, stderr_text)
    if child.returncode == -signal.SIGXCPU:  # the CPU-seconds limit was reached
        return ExecutionResult(TIMEOUT, child.returncode, stderr_text)
    if "MemoryError" in stderr_text:
        return ExecutionResult(MEMORY, child.returncode, stderr_text)
    return ExecutionResult(FAILED, child.returncode, stderr_text)


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # already gone
        pass
