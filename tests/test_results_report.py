"""The results report (experiments/results_report.py, REPORT.md): every figure and table step of a profile with its
figure, its table (whatever columns: per-seed values, 95% CIs, the paper's), the command, notebook and provenance;
a step not run yet is listed as such; the same inputs give the same bytes; it is the last step of every profile but
the demo."""

import json
import math

import pandas as pd
import pytest

from experiments.plans import FIGURE_NOTEBOOKS, PROFILES, REPORT_FILE, REPORT_STEP
from experiments.results_report import (NOT_RUN, REPO, build_report, format_cell, markdown_table, report_steps,
                                        step_outputs, write_report)

# The smallest valid PNG (1×1, grey).
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                    "3a7e9b550000000a49444154789c63600000000200015b3e9c2e0000000049454e44ae426082")


def fake_fig7(results):
    """What the fig7_teacher_context step leaves: its table (mean, 95% CI, one column per seed, the paper's number),
    its figure and its record in _state/."""
    table = pd.DataFrame({"model": ["text", "answer", "both"], "strict": [10.0, 21.666666, 30.0],
                          "strict ± 95% CI": [4.25, 18.972915, float("nan")], "strict (seed 0)": [8.0, 20.0, 30.0],
                          "strict (seed 1)": [12.0, 23.333333, float("nan")], "paper": [75, float("nan"), 89]})
    table.to_csv(results / "fig7_teacher_context.csv", index=False)
    (results / "fig7_teacher_context.md").write_text(table.to_markdown(index=False) + "\n")
    (results / "fig7_teacher_context.png").write_bytes(PNG)
    (results / "_state").mkdir(parents=True, exist_ok=True)
    (results / "_state" / "fig7_teacher_context.json").write_text(json.dumps({
        "fingerprint": "0123", "seconds": 6.84, "tables": ["fig7_teacher_context.md"],
        "parameters": {"figure_name": "fig7_teacher_context", "metric": "strict", "results_dir": str(results),
                       "title": "Fig. 7: teacher context (knowledge acquisition, strict accuracy)"},
        "provenance": {"commit": "ddc97b54cefc+changes", "date": "2026-12-03T21:22:14+00:00",
                       "machine": "x86_64, 2 cores (AMD EPYC)", "seconds": 6.8}}))


def test_a_figure_that_ran_is_listed_with_its_table_command_and_provenance_and_a_missing_one_as_not_run(tmp_path):
    results = tmp_path / "tiny"
    results.mkdir()
    fake_fig7(results)
    path = write_report("tiny", results, seeds=[0, 1])
    assert path == results / REPORT_FILE
    text = path.read_text()
    section = text[text.index('<a id="fig7_teacher_context">'):]
    section = section[:section.index("<a id=", 1)]
    assert "## Fig. 7: teacher context (knowledge acquisition, strict accuracy)" in section
    assert "![fig7_teacher_context](fig7_teacher_context.png)" in section
    # The table from the CSV, every column of it: mean, CI, per seed, the paper's number; NaN left empty.
    assert "| model | strict | strict ± 95% CI | strict (seed 0) | strict (seed 1) | paper |" in section
    assert "| answer | 21.67 | 18.97 | 20 | 23.33 |  |" in section
    assert "| both | 30 |  | 30 |  | 89 |" in section
    assert "The paper's numbers (Qwen2.5-7B-Instruct" in section and "| text | 75 |" in section
    assert (f"`python -m experiments.pipeline tiny --only fig7_teacher_context --results-dir {results} --seeds 2`"
            in section)
    assert "`notebooks/compare_runs.py`" in section and '"figure_name": "fig7_teacher_context"' in section
    assert ("Provenance: commit `ddc97b54cefc+changes`, 2026-12-03T21:22:14+00:00, x86_64, 2 cores (AMD EPYC), 6.8 s"
            in section)
    # Another figure of the profile, not run: listed, nothing crashes.
    fig3 = text[text.index('<a id="fig3_sequential">'):]
    assert f"Step `fig3_sequential` ({NOT_RUN})" in fig3 and f"Figure `fig3_sequential.png`: {NOT_RUN}." in fig3
    assert f"| [`fig3_sequential`](#fig3_sequential) | skills learned" in text
    assert "| Fig. 7 | [`fig7_teacher_context`](#fig7_teacher_context) |" in text
    assert "| ran | ddc97b54cefc+changes | 2026-12-03T21:22:14+00:00 | 6.8 |" in text
    # Rewritten from the same files: the same bytes.
    write_report("tiny", results, seeds=[0, 1])
    assert path.read_text() == text


def test_an_empty_results_folder_lists_every_step_as_not_run(tmp_path):
    steps = report_steps("paper", "results/paper")
    text = build_report("paper", steps, tmp_path, "results/paper")
    assert f"0 of {len(steps)} steps ran; {len(steps)} not run yet." in text
    assert "`python -m experiments.pipeline paper --only table1`" in text  # the profile's defaults: no options


def test_cells_are_rounded_and_escaped():
    assert [format_cell(v) for v in (3, 2.0, 59.16666, 62.5, 0.0821917, float("nan"), None, True, "a")] == \
        ["3", "2", "59.17", "62.5", "0.0822", "", "", "True", "a"]
    table = markdown_table(pd.DataFrame({"Unnamed: 0": ["x|y"], "v": [math.pi]}))
    assert table.splitlines() == ["|  | v |", "|:---|---:|", "| x\\|y | 3.14 |"]
    long = markdown_table(pd.DataFrame({"v": range(5)}), max_rows=3)
    assert "| 2 |" in long and "| 3 |" not in long and "2 more rows in the CSV" in long


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_report_is_the_last_step_and_waits_for_every_figure_and_table(profile):
    steps = PROFILES[profile](f"results/{profile}")
    if profile == "demo":  # it writes into the tiny profile's folder, whose report is the tiny profile's
        assert REPORT_STEP not in [step.name for step in steps]
        return
    report = steps[-1]
    assert report.name == REPORT_STEP and report.notebook == "results_report"
    assert report.parameters["profile"] == profile
    figures = {step.name for step in steps if step.notebook in FIGURE_NOTEBOOKS}
    assert figures and figures <= set(report.after)
    assert [step.name for step in report_steps(profile, f"results/{profile}")] == list(report.after)


def test_the_tiny_report_lists_every_figure_and_table_of_the_tiny_plan():
    results = REPO / "results" / "tiny"
    steps = report_steps("tiny", "results/tiny")
    text = build_report("tiny", steps, results, "results/tiny")
    for step in steps:
        assert f'<a id="{step.name}"></a>' in text
        outputs = step_outputs(step)
        assert outputs.figures or outputs.tables or step.notebook not in FIGURE_NOTEBOOKS, step.name
        for stem in outputs.figures:
            shown = f"![{stem}]({stem}.png)" if (results / f"{stem}.png").exists() else f"`{stem}.png`: {NOT_RUN}"
            assert shown in text, (step.name, stem)
        for stem in outputs.tables:
            assert f"`{stem}.csv`" in text or f"`{stem}.md`" in text, (step.name, stem)
    for stem in ("table1_knowledge", "fig2_kl_to_base", "fig3_sequential", "fig4_pareto", "fig7_teacher_context"):
        assert f"![{stem}]({stem}.png)" in text
    committed = results / REPORT_FILE
    if committed.exists():  # the committed report is the one these files give (rerun the report step if not)
        assert set(committed.read_text().splitlines()) >= {f'<a id="{step.name}"></a>' for step in steps}
