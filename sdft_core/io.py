"""Atomic file writes (a result file is either absent or complete, never half-written), the checks around them (an
output folder that can be written, a cached result that can be read), content fingerprints, and the provenance block
every result carries (which commit and machine produced it)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import torch


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path | str, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path | str, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path | str, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class UnwritableFolder(OSError):
    """An output folder that cannot be created or written in (a file stands in its place or on its path, no
    permission, a read-only disk)."""


def ensure_writable_folder(folder: Path | str) -> None:
    """Create `folder` if needed and check that a file can be written in it. Called before a model loads, so that a bad
    output path fails at once, naming the folder, rather than at the first write after minutes of work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        # mkdir on an existing file says "File exists", which hides the problem.
        reason = "it is a file, not a folder" if folder.is_file() else f"{error.strerror}: {error.filename}"
        raise UnwritableFolder(f"cannot write to the output folder {folder} ({reason}). Choose another output "
                               f"folder, or make this one a writable folder.") from error


def read_cache(path: Path | str, tag: str) -> dict | None:
    """The cached result in `path`: None if there is none, and None with a warning naming the file if it is not a
    JSON object (cut short by a full disk, edited by hand): the caller computes the result again and replaces it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        value = read_json(path)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        problem = str(error)
    else:
        if isinstance(value, dict):
            return value
        problem = f"a JSON {type(value).__name__}, not an object"
    print(f"[{tag}] warning: the cached result {path} cannot be read ({problem}); computing it again to replace it.")
    return None


def fingerprint(*values: Any) -> str:
    """A short stable hash of JSON-serialisable values (configs, dataset contents)."""
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd or Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def changed_sources(cwd: Path | None = None) -> list[str]:
    """Tracked files that differ from the commit, outside results/: what a run writes there (its config, metrics, the
    pipeline's state) is its output, not a change to what produced it."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results", cwd=cwd)
    return [line.split(maxsplit=1)[1] for line in status.splitlines()]  # "XY path", X or Y may be blank


def cpu_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ("model name", "cpu family", ...); empty where there is none."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def machine() -> str:
    """The processor (and GPU, if one is used) in words, e.g. "x86_64, 2 cores (AMD EPYC 7B13)"."""
    name = cpu_fields().get("model name")
    cpu = (f"{platform.machine()}, {os.cpu_count()} cores ({name})" if name
           else platform.processor() or platform.machine())
    if torch.cuda.is_available():
        cpu += f"; GPU {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return cpu


def machine_details() -> dict:
    """What a timing depends on, for the benchmark tables and their result files: the CPU model (/proc/cpuinfo, else
    platform.processor()) and its vector extension as torch uses it, the cores (all, and those this process may run
    on), torch's threads, the torch build (version, CUDA or CPU-only, ATen's threading backend, MKL, oneDNN), the GPU
    if any, Python, transformers, the commit and the date. Same CPU model, different numbers? Compare the rest."""
    fields = cpu_fields()  # a virtual machine's model name can be as vague as "AMD EPYC": family and model say more
    cpu, variant = fields.get("model name") or platform.processor() or platform.machine(), None
    if "cpu family" in fields and "model" in fields:
        variant = f"family {fields['cpu family']} model {fields['model']}"
        try:
            variant += f", {float(fields['cpu MHz']):.0f} MHz"
        except (KeyError, ValueError):
            pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        usable = os.cpu_count()
    info = torch.__config__.parallel_info()

    def found(pattern: str) -> str | None:
        match = re.search(pattern, info)
        return match.group(1).strip() if match else None

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    try:
        transformers_version = version("transformers")
    except PackageNotFoundError:  # not installed: say so
        transformers_version = None
    cuda = torch.cuda.is_available()
    stamp = provenance()
    return {"cpu": cpu, "cpu_variant": variant, "cpu_capability": capability, "arch": platform.machine(),
            "cpu_cores": os.cpu_count(), "cpu_cores_usable": usable, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "parallel_backend": found(r"ATen parallel backend: *(.+)"),
            "mkl": found(r"Math Kernel Library Version ([\w.]+)") if torch.backends.mkl.is_available() else None,
            "onednn": found(r"MKL-DNN (v[\w.]+)") if torch.backends.mkldnn.is_available() else None,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_count": torch.cuda.device_count() if cuda else 0, "python": platform.python_version(),
            "transformers": transformers_version, "os": platform.platform(), "commit": stamp["commit"],
            "date": stamp["date"]}


def machine_header(details: dict | None = None, measured: bool = True) -> str:
    """`machine_details()` as the line every benchmark prints above its table (and stores with its results).
    measured=False: a table of arithmetic, which names the machine only to say nothing was measured on it."""
    d = details or machine_details()
    usable = d["cpu_cores_usable"]
    cores = f"{d['cpu_cores']} cores" + (f" ({usable} usable)" if usable != d["cpu_cores"] else "")
    build = f"CUDA {d['cuda']} build" if d["cuda"] else "CPU-only build"
    libraries = ", ".join([f"{d['parallel_backend'] or 'unknown'} threading",
                           f"MKL {d['mkl']}" if d["mkl"] else "no MKL",
                           f"oneDNN {d['onednn']}" if d["onednn"] else "no oneDNN"])
    gpu = f"; GPU {d['gpu']} x{d['gpu_count']}" if d["gpu"] else ""
    kind = "Machine" if measured else "Machine (arithmetic only: nothing in this table is measured on it)"
    about = "; ".join(part for part in (d.get("cpu_variant"), d["arch"], d["cpu_capability"]) if part)
    return (f"{kind}: CPU {d['cpu']} ({about}), "
            f"{cores}, torch threads {d['torch_threads']} (inter-op {d['torch_interop_threads']}){gpu}; "
            f"torch {d['torch']} ({build}; {libraries}); Python {d['python']}; transformers {d['transformers']}; "
            f"{d['os']}; commit {d['commit']}; {d['date']}")


def provenance(seconds: float | None = None) -> dict:
    """Which commit ("+changes" when tracked files outside results/ differ from it), machine and date produced a
    result, and in how many seconds; stored with every training summary, evaluation and pipeline step."""
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    if commit != "unknown" and changed_sources():
        commit += "+changes"
    block = {"commit": commit, "machine": machine(),
             "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return block if seconds is None else {**block, "seconds": round(seconds, 1)}


def use_hub_offline() -> None:
    """Tell `datasets` and `huggingface_hub` (read when they are imported, e.g. by lm-eval) not to reach the hub, unless
    the environment says otherwise. Call before they are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

