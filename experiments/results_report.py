"""results/<profile>/REPORT.md: every figure and table of a profile in one Markdown file.

For each step of the profile that writes a figure or a table (the results-report step's dependencies, see
plans.with_report): the paper's figure or table it reproduces, the figure (a relative image link), its table (rendered
from the CSV the step wrote, whatever columns it has: means, per-seed values, 95% CIs, the paper's numbers), the
paper's own numbers where experiments/report.py keeps them, the command that makes it, the notebook and the
parameters it ran with, and where, when and how long it ran (the step's record in _state/, as in provenance.md). A
step that has not run yet is listed as such.

The report is a function of the files in the results folder only (no date of its own), so rewriting it with unchanged
inputs gives the same bytes:

    python -m experiments.results_report tiny     # rewrite results/tiny/REPORT.md from what is there (seconds)

The pipeline writes it as the last step of a profile (notebooks/results_report), so `make reproduce` ends with it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.plans import DEFAULT_RESULTS, PROFILES, REPORT_FILE, REPORT_STEP, Step
from experiments.report import PAPER_FIG2, PAPER_FIG7, PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE5_TOOL_USE
from sdft_core.io import read_json, write_text

REPO = Path(__file__).resolve().parent.parent
NOT_RUN = "not run yet"
MAX_ROWS = 100  # longer tables are cut, with a pointer to the whole CSV


@dataclass(frozen=True)
class Outputs:
    """What a step writes into the results folder, as paths without suffix relative to it: figures (<stem>.png, and
    .pdf) and tables (<stem>.csv and .md)."""

    figures: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()


def step_outputs(step: Step) -> Outputs:
    """The figures and tables `step`'s notebook writes (as the notebooks name them, from the step's parameters)."""
    p, notebook = step.parameters, step.notebook
    if notebook == "knowledge_report":
        name = p.get("name", "knowledge_acquisition")
        return Outputs((name,), (name,))
    if notebook == "compare_runs":
        name = p.get("figure_name", "fig7_teacher_context")
        return Outputs((name,), (name,) + ((f"{name}_teacher_samples",) if p.get("teacher_sample_rows") else ()))
    if notebook == "preflight":
        name = p.get("name") or f"preflight_{p.get('task', 'knowledge')}_{p.get('teacher_template', 'paper')}"
        return Outputs((name,), (name,))
    if notebook == "fig4_pareto":
        return Outputs(("fig4_pareto",), ("fig4_pareto", "table5_prior_capabilities", "table5_paired_vs_base"))
    if notebook in ("fig2_kl_to_base", "fig3_sequential", "fig5_pass_at_k", "fig5_scale"):
        return Outputs((notebook,), (notebook,))
    if notebook == "table2_answer_only":
        return Outputs((), ("table2_answer_only",))
    if notebook == "recipe_search":
        return Outputs((), ("recipe_search/summary",))
    if notebook == "teaching_one_sdft_step":
        return Outputs(("reward_heatmap", "kl_heatmap", "step_effect"), ())
    return Outputs()


# --- What each step reproduces -----------------------------------------------------------------------------------

FIXED_TITLES = {
    "fig2_kl_to_base": ("Fig. 2 (right)", "distance to the base policy: the SFT model vs the "
                                          "demonstration-conditioned teacher"),
    "fig3_sequential": ("Fig. 3", "skills learned one after another: SFT vs SDFT on every task after every stage"),
    "fig5_pass_at_k": ("Fig. 5 (right)", "pass@k of the base model, SFT and SDFT"),
    "fig5_scale": ("Fig. 5 (left)", "SDFT − SFT new-task accuracy across model sizes"),
    "table2_answer_only": ("Table 2", "answer-only supervision: accuracy and how much the model still writes"),
    "recipe_search": ("", "the SDFT recipe search on validation questions (where the tiny profile's recipe comes "
                          "from; summary of results/<profile>/recipe_search/)"),
    "teaching_one_sdft_step": ("§3, Eq. 1 (illustrated)", "one SDFT step up close: the teacher's token scores, the "
                                                          "KL per token and the step's effect"),
}


def describe(step: Step) -> tuple[str, str]:
    """(the paper's figure or table the step reproduces, "" for the kit's own diagnostics; a title)."""
    p = step.parameters
    if step.notebook in FIXED_TITLES:
        return FIXED_TITLES[step.notebook]
    if step.notebook == "compare_runs":  # the title names the figure: "Fig. 7: teacher context (…)"
        reference, _, title = p.get("title", "").partition(": ")
        return (reference, title) if title else ("", reference or step.name)
    if step.notebook == "knowledge_report":
        rows = ", ".join(p.get("rows", {}))
        if p.get("name") == "table1_knowledge":
            return "Table 1", f"knowledge acquisition ({rows})"
        if p.get("name", "knowledge_acquisition") == "knowledge_acquisition":
            return "Table 1", f"knowledge acquisition, the demo's rows ({rows})"
        return "", f"knowledge acquisition ({rows})"
    if step.notebook == "fig4_pareto":
        return "Fig. 4, Table 5", f"new-task accuracy vs prior capabilities ({p.get('task', '')})"
    if step.notebook == "preflight":
        model = f", model {p['model_dir']}" if "model_dir" in p else ""
        return "", (f"pre-flight diagnostic: {p.get('task', 'knowledge')}, teacher template "
                    f"{p.get('teacher_template', 'paper')!r}{model}")
    if step.notebook == "select_best":
        return "Appendix B.1", f"selection by validation accuracy: {p.get('name', step.name)}"
    return "", step.notebook


def reference_order(reference: str) -> tuple:
    """Sort key: the paper's figures by number, then its tables, its appendix, its sections, then the kit's own."""
    for rank, prefix in enumerate(("Fig.", "Table", "Appendix", "§")):
        if reference.startswith(prefix):
            number = re.search(r"\d+(\.\d+)?", reference)
            return rank, float(number.group()) if number else 0.0
    return 4, 0.0


def paper_numbers(step: Step) -> tuple[str, pd.DataFrame] | None:
    """The paper's numbers for the step's figure or table, as experiments/report.py keeps them (caption, table)."""
    reference, _ = describe(step)
    if reference == "Table 1":
        frame = pd.DataFrame(PAPER_TABLE1, index=["strict (%)", "lenient (%)", "OOD (%)"]).T
        return "Qwen2.5-7B-Instruct, knowledge acquisition (OOD: one number)", frame
    if reference.startswith("Fig. 2"):
        return "Qwen2.5-7B-Instruct, ToolAlpaca", pd.DataFrame({"KL to base (nats)": PAPER_FIG2})
    if reference == "Fig. 7":
        return ("Qwen2.5-7B-Instruct, strict accuracy (the answer-only bar has no number in the text)",
                pd.DataFrame({"strict (%)": PAPER_FIG7}))
    if reference == "Table 2":
        return ("Olmo-3-7B-Think, medical", pd.DataFrame(PAPER_TABLE2, index=["Acc. (%)", "Avg. # tokens"]).T)
    if reference.startswith("Fig. 4"):
        return ("Qwen2.5-7B-Instruct, Table 5 tool use (the tiny profile's new task is a stand-in)",
                pd.DataFrame(PAPER_TABLE5_TOOL_USE, index=["Tooluse (%)", "Avg. (%)"]).T)
    return None


# --- Rendering ----------------------------------------------------------------------------------------------------

def format_cell(value) -> str:
    """A table cell: integers as such, other numbers to 2 decimals without trailing zeros (3 significant digits below
    1, so that small p-values and KLs stay visible), missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        value = float(value)
        if math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return (f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) >= 1 else f"{value:.3g}")
    return str(value)


def markdown_table(frame: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    """`frame` (index dropped: reset it first to show it) as a Markdown table, numeric columns right-aligned."""
    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    header = ["" if str(c).startswith("Unnamed: ") else escape(str(c)) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    for row in frame.head(max_rows).itertuples(index=False):
        lines.append("| " + " | ".join(escape(format_cell(v)) for v in row) + " |")
    if len(frame) > max_rows:
        lines.append(f"\n… {len(frame) - max_rows} more rows in the CSV.")
    return "\n".join(lines)


def table_file(results: Path, stem: str) -> Path | None:
    """The file a table is rendered from: <stem>.csv where there is one, else <stem>.md; None when neither exists."""
    return next((path for path in (results / f"{stem}.csv", results / f"{stem}.md") if path.exists()), None)


def render_table(results: Path, stem: str) -> tuple[str, str] | None:
    """(the file it came from, relative to `results`; the table in Markdown): from <stem>.csv where there is one,
    else <stem>.md as written; None when neither exists."""
    path = table_file(results, stem)
    if path is None:
        return None
    table = markdown_table(pd.read_csv(path)) if path.suffix == ".csv" else path.read_text().rstrip("\n")
    return path.relative_to(results).as_posix(), table


def step_record(results: Path, name: str) -> dict | None:
    """The step's record in _state/ (written by the pipeline when the step finished), None if it has none."""
    path = results / "_state" / f"{name}.json"
    return read_json(path) if path.exists() else None


def format_provenance(record: dict | None) -> str:
    if record is None:
        return "no record in `_state/` (not run by the pipeline in this folder)"
    block = record.get("provenance")
    if not block:
        return "(not recorded: the step ran before the pipeline kept provenance)"
    seconds = block.get("seconds")
    took = "" if seconds is None else (f", {seconds:g} s" + (f" ({seconds / 60:.1f} min)" if seconds >= 120 else ""))
    return f"commit `{block.get('commit', '?')}`, {block.get('date', '?')}, {block.get('machine', '?')}{took}"


def default_seeds(profile: str) -> tuple[int, ...]:
    return tuple(inspect.signature(PROFILES[profile]).parameters["seeds"].default)


def pipeline_command(profile: str, step: str, results_dir: str, seeds: tuple[int, ...]) -> str:
    """The command that (re)makes `step` and what it needs; --results-dir and --seeds only where they differ from the
    profile's defaults."""
    command = f"python -m experiments.pipeline {profile} --only {step}"
    if os.path.normpath(results_dir) != os.path.normpath(DEFAULT_RESULTS[profile]):
        command += f" --results-dir {results_dir}"
    if tuple(seeds) != default_seeds(profile):
        if tuple(seeds) != tuple(range(len(seeds))):
            raise ValueError(f"the pipeline trains with seeds 0 … n−1; {seeds} has no --seeds")
        command += f" --seeds {len(seeds)}"
    return command


def output_status(results: Path, step: Step, record: dict | None) -> str:
    """"ran" (the step has a record in _state/; "ran, outputs missing" where a file it writes is not there),
    "outputs present, no run record" or NOT_RUN."""
    outputs = step_outputs(step)
    present = [s for s in outputs.figures if (results / f"{s}.png").exists()] + \
              [s for s in outputs.tables if table_file(results, s) is not None]
    if record is not None:
        return "ran" if len(present) == len(outputs.figures) + len(outputs.tables) else "ran, outputs missing"
    return "outputs present, no run record" if present else NOT_RUN


def step_section(results: Path, step: Step, profile: str, results_dir: str, seeds: tuple[int, ...]) -> str:
    reference, title = describe(step)
    record = step_record(results, step.name)
    status = output_status(results, step, record)
    outputs = step_outputs(step)
    heading = f"{reference}: {title}" if reference else title[:1].upper() + title[1:]
    lines = [f'<a id="{step.name}"></a>', f"## {heading}", "",
             f"Step `{step.name}` ({status}). Paper: {reference or '— (the kit’s own)'}.", ""]
    for stem in outputs.figures:
        if (results / f"{stem}.png").exists():
            lines += [f"![{stem}]({stem}.png)", "", f"Figure: [`{stem}.png`]({stem}.png), "
                      f"[`{stem}.pdf`]({stem}.pdf)" if (results / f"{stem}.pdf").exists() else
                      f"Figure: [`{stem}.png`]({stem}.png)", ""]
        else:
            lines += [f"Figure `{stem}.png`: {NOT_RUN}.", ""]
    for stem in outputs.tables:
        table = render_table(results, stem)
        if table is None:
            lines += [f"Table `{stem}.csv`: {NOT_RUN}.", ""]
        else:
            source, text = table
            lines += [f"Table [`{source}`]({source}):", "", text, ""]
    if not outputs.figures and not outputs.tables:
        lines += ["(This step writes no figure or table of its own.)", ""]
    numbers = paper_numbers(step)
    if numbers is not None:
        caption, frame = numbers
        frame = frame.rename_axis("").reset_index()
        lines += [f"The paper's numbers ({caption}):", "", markdown_table(frame), ""]
    executed = results / "notebooks" / f"{step.name}.ipynb"
    copy = (f"; executed: [`{results_dir}/notebooks/{step.name}.ipynb`](notebooks/{step.name}.ipynb)"
            if executed.exists() else "")
    parameters = record.get("parameters", step.parameters) if record else step.parameters
    lines += [f"Command: `{pipeline_command(profile, step.name, results_dir, seeds)}` (runs what the step needs "
              f"first; `--skip-upstream` runs it alone).", "",
              f"Notebook: `notebooks/{step.notebook}.py` (and its .ipynb) with the parameters below{copy}.", "",
              "<details><summary>Parameters" + (" (as run)" if record and "parameters" in record else "")
              + "</summary>", "", "```json", json.dumps(parameters, indent=1, sort_keys=True, ensure_ascii=False),
              "```", "", "</details>", "", f"Provenance: {format_provenance(record)}.", ""]
    return "\n".join(lines)


def ordered(steps: list[Step]) -> list[Step]:
    """The paper's figures and tables in the paper's numbering, then the kit's own steps (each group in plan
    order)."""
    return sorted(steps, key=lambda step: reference_order(describe(step)[0]))


def build_report(profile: str, steps: list[Step], results: Path | str, results_dir: str | None = None,
                 seeds: tuple[int, ...] | None = None) -> str:
    """REPORT.md's text for `steps` (the figure and table steps of `profile`) from the files in `results`.
    results_dir: the folder as the commands name it (default: `results`); seeds: the plan's (default: the
    profile's)."""
    results = Path(results)
    results_dir = results_dir or str(results)
    seeds = tuple(seeds) if seeds is not None else default_seeds(profile)
    steps = ordered(steps)
    rows = []
    for step in steps:
        reference, title = describe(step)
        record = step_record(results, step.name)
        block = (record or {}).get("provenance") or {}
        seconds = block.get("seconds")
        rows.append({"paper": reference or "—", "step": f"[`{step.name}`](#{step.name})", "what": title,
                     "status": output_status(results, step, record),
                     "commit": block.get("commit", "(not recorded)" if record else ""), "date": block.get("date", ""),
                     "seconds": "" if seconds is None else f"{seconds:g}"})
    options = ((f" --results-dir {results_dir}" if os.path.normpath(results_dir) !=
                os.path.normpath(DEFAULT_RESULTS[profile]) else "")
               + (f" --seeds {len(seeds)}" if seeds != default_seeds(profile) else ""))
    head = [f"# Results: profile `{profile}`", "",
            f"Every figure and table of the profile `{profile}` (seeds {', '.join(map(str, seeds))}) as it stands in "
            f"this folder: the paper's figure or table it reproduces, the figure, its table (from the CSV the step "
            f"wrote: a mean over training seeds, with the Student-t 95% CI half-width beside it where there are "
            f"several), the paper's numbers, the command and notebook that make it, and where and when it ran "
            f"(its record in `_state/`; all steps: [provenance.md](provenance.md)). Written by the profile's last "
            f"step, `{REPORT_STEP}` (notebooks/results_report); `python -m experiments.results_report {profile}{options}` "
            f"rewrites it from the files here in seconds.", "",
            f"{sum(r['status'].startswith('ran') for r in rows)} of {len(rows)} steps ran; "
            f"{sum(r['status'] == NOT_RUN for r in rows)} not run yet.", "",
            markdown_table(pd.DataFrame(rows), max_rows=len(rows)), ""]
    return "\n".join(head + [step_section(results, step, profile, results_dir, seeds) for step in steps]).rstrip(
        "\n") + "\n"


def report_steps(profile: str, results_dir: str, seeds: tuple[int, ...] | None = None) -> list[Step]:
    """The steps the profile's report lists: its results-report step's dependencies, in plan order."""
    steps = PROFILES[profile](results_dir, **({"seeds": tuple(seeds)} if seeds is not None else {}))
    by_name = {step.name: step for step in steps}
    if REPORT_STEP not in by_name:
        raise ValueError(f"profile {profile!r} has no {REPORT_STEP} step")
    return [by_name[name] for name in by_name[REPORT_STEP].after]


def write_report(profile: str, results_dir: str | Path | None = None,
                 seeds: tuple[int, ...] | list[int] | None = None) -> Path:
    """Write results_dir/REPORT.md (atomically) for the profile's figure and table steps; returns its path.
    results_dir: relative to the repository, as the pipeline passes it (default: the profile's folder)."""
    results_dir = str(results_dir or DEFAULT_RESULTS[profile])
    seeds = tuple(seeds) if seeds is not None else None
    results = REPO / results_dir  # an absolute results_dir stays as it is
    text = build_report(profile, report_steps(profile, results_dir, seeds), results, results_dir, seeds)
    path = results / REPORT_FILE
    write_text(path, text)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", choices=sorted(name for name in PROFILES if name != "demo"))
    parser.add_argument("--results-dir", help="the profile's results folder (default: its usual one)")
    parser.add_argument("--seeds", type=int, help="the seeds the profile ran with (default: the profile's)")
    args = parser.parse_args(argv)
    path = write_report(args.profile, args.results_dir, tuple(range(args.seeds)) if args.seeds else None)
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
