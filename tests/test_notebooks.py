"""Notebooks: committed inputs match their paired .py sources, parameters are visible to papermill, a notebook run as
it opens writes only to a git-ignored scratch folder, and the whole knowledge-acquisition demo runs end to end under
papermill on a tiny configuration."""

import ast
import shutil
import subprocess
import uuid

import jupytext
import nbformat
import papermill
import pytest

from experiments.pipeline import KERNEL_NAME, NOTEBOOKS, REPO, run_profile
from experiments.plans import smoke_plan
from experiments.report import KNOWLEDGE_COLUMNS

SOURCES = sorted(NOTEBOOKS.glob("*.py"))
# Notebooks for users, not steps of any profile: tests/test_own_data.py and tests/test_workshop.py run them.
STANDALONE = {"own_data", "workshop_learning_facts"}


def test_every_notebook_has_a_paired_source():
    assert SOURCES and sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == [p.stem for p in SOURCES]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_matches_its_source_and_has_no_outputs(source):
    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    expected = jupytext.read(source)
    assert [c.source for c in committed.cells] == [c.source for c in expected.cells], "run `make notebooks`"
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")
    assert committed.metadata["kernelspec"]["name"] == "sdft-kit"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_parameter_is_visible_to_papermill(source):
    notebook = jupytext.read(source)
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    assigned = {line.split("=")[0].strip() for line in cells[0].source.splitlines()
                if "=" in line and not line.startswith("#")}
    assert set(papermill.inspect_notebook(str(source.with_suffix(".ipynb")))) == assigned


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def test_every_notebook_writes_to_a_git_ignored_scratch_folder_by_default():
    """Opened by hand, a notebook must not replace committed results: its default results_dir is git-ignored and
    holds nothing committed (the pipeline always passes its profile's folder)."""
    defaults = {}
    for source in SOURCES:
        parameters = papermill.inspect_notebook(str(source.with_suffix(".ipynb")))
        if "results_dir" in parameters:
            defaults[source.stem] = ast.literal_eval(parameters["results_dir"]["default"])
    assert "train" in defaults
    for notebook, folder in defaults.items():
        assert git("check-ignore", "-q", f"{folder}/any_result.json").returncode == 0, (notebook, folder)
        assert not git("ls-files", folder).stdout, (notebook, folder)


def test_the_train_notebook_run_as_it_opens_changes_nothing_committed(tiny_model_dir, tmp_path):
    """notebooks/train.ipynb with its defaults (results_dir, task, method, every TrainConfig default) but a tiny model
    and a single step, run from the repository as a user would: git sees no change under results/ (only there, so that
    others' edits elsewhere in a shared checkout do not make this fail)."""
    run_name = f"test_defaults_{uuid.uuid4().hex[:8]}"  # not a scratch run the user may have
    run = REPO / "results" / "scratch" / "runs" / run_name
    before = git("status", "--porcelain", "--untracked-files=all", "--", "results").stdout
    try:
        papermill.execute_notebook(str(NOTEBOOKS / "train.ipynb"), str(tmp_path / "train.ipynb"),
                                   parameters={"run_name": run_name, "max_train_examples": 2,
                                               "config": {"model": tiny_model_dir, "batch_size": 2,
                                                          "micro_batch_size": 2, "max_new_tokens": 4}},
                                   kernel_name=KERNEL_NAME, cwd=str(REPO), progress_bar=False)
        assert (run / "summary.json").exists()
        assert git("status", "--porcelain", "--untracked-files=all", "--", "results").stdout == before
    finally:
        shutil.rmtree(run, ignore_errors=True)


FIGURES = ("knowledge_acquisition", "table1_knowledge", "fig2_kl_to_base", "fig3_sequential", "fig4_pareto",
           "fig5_pass_at_k", "fig5_scale", "fig6_offline_distillation", "fig7_teacher_context", "fig8_teacher_kind",
           "appendix_a1_estimators")
TABLES = FIGURES + ("table2_answer_only", "table5_prior_capabilities", "fig6_offline_distillation_teacher_samples")


@pytest.mark.slow
def test_every_notebook_of_the_tiny_profile_runs_under_papermill(tmp_path, capsys):
    """The whole tiny profile on a tiny configuration (smoke sizes): every notebook, every figure and table."""
    results = tmp_path / "smoke"
    first = run_profile("smoke", results, log_output=False)
    executed = {path.stem for path in (results / "notebooks").glob("*.ipynb")}
    assert {p.stem for p in SOURCES} - STANDALONE == {step.notebook for step in smoke_plan(str(results))}
    assert len(executed) == len(first)
    table = (results / "knowledge_acquisition.md").read_text()
    for model in ("base", "sft", "sdft"):
        assert f"| {model} " in table
    assert KNOWLEDGE_COLUMNS["strict"] in table
    for name in FIGURES:
        assert (results / f"{name}.png").stat().st_size > 0, name
    for name in TABLES:
        assert (results / f"{name}.md").stat().st_size > 0, name
    assert (results / "runs" / "knowledge_sdft" / "metrics.jsonl").read_text().count("\n") == 2
    provenance = (results / "provenance.md").read_text()  # every step: commit, machine, date, seconds
    assert all(f"| {step} " in provenance for step in first) and "(not recorded)" not in provenance
    assert "knowledge_acquisition.md" in provenance
    # A rerun finds every step unchanged and skips it.
    capsys.readouterr()
    assert run_profile("smoke", results, log_output=False) == first
    assert capsys.readouterr().out.count("skipped") == len(first)
