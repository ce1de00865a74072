"""Tables over seeds: a list of evaluation names gives the mean, the Student-t 95% CI across seeds and each seed's
value, a single name the plain number; the CI and per-seed columns appear only where some row has several seeds.
Figures: intervals are cut at the metric's range and the axes stay within it; method names as the paper writes them;
Fig. 4 names the learning rate of each point."""

import math

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import LineCollection

from experiments.report import (CI, comparison_table, knowledge_table, markdown_table, pareto_table, pass_at_k_table,
                                per_seed, plot_comparison, plot_knowledge_table, plot_pareto, plot_pass_at_k,
                                plot_scale_gap, plot_sequential, save_table, scale_gap_table, seed_columns,
                                sequential_table, teacher_samples_table)
from sdft_core.io import write_json
from sdft_core.plotting import PERCENT, clipped_errors, learning_rate_label, learning_rate_of, method_name
from tasks.registry import load_task

matplotlib.use("Agg")


def write_eval(results, name, correct, **extra):
    write_json(results / "eval" / f"{name}.json", {"test": {"correct": correct, **extra}})


def test_a_row_over_three_seeds_is_their_mean_with_a_student_t_interval(tmp_path):
    for name, value in (("sft", 0.2), ("sft_seed1", 0.4), ("sft_seed2", 0.6), ("base", 0.1)):
        write_eval(tmp_path, name, value)
    table = comparison_table(tmp_path, {"base": "base", "SFT": ["sft", "sft_seed1", "sft_seed2"]})
    assert table.loc["SFT", "correct"] == pytest.approx(40.0)
    # sample sd 20 points, t(0.975, 2) = 4.3027: half-width 4.3027 * 20 / sqrt(3)
    assert table.loc["SFT", "correct" + CI] == pytest.approx(4.302653 * 20 / math.sqrt(3), rel=1e-5)
    assert table.loc["base", "correct"] == pytest.approx(10.0) and math.isnan(table.loc["base", "correct" + CI])
    # Each seed's value beside the mean and CI, by the seed its name carries; the base model (evaluated once) has
    # its one value under seed 0.
    assert list(table.columns) == ["correct", "correct" + CI, "correct seed0", "correct seed1", "correct seed2"]
    assert list(table.loc["SFT", seed_columns(table, "correct")]) == pytest.approx([20.0, 40.0, 60.0])
    assert table.loc["base", "correct seed0"] == pytest.approx(10.0) and math.isnan(table.loc["base", "correct seed2"])
    assert per_seed(table, "correct") == [[pytest.approx(10.0)], [pytest.approx(20.0), pytest.approx(40.0),
                                                                 pytest.approx(60.0)]]


def test_tables_are_written_with_per_seed_values(tmp_path):
    """The CSV keeps one column per seed; the Markdown folds them into one "<metric> per seed" column."""
    for name, value in (("sft", 0.2), ("sft_seed1", 0.4), ("sft_seed2", 0.6), ("base", 0.1)):
        write_eval(tmp_path, name, value)
    table = comparison_table(tmp_path, {"base": "base", "SFT": ["sft", "sft_seed1", "sft_seed2"]})
    save_table(table, tmp_path / "t")
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    assert header == "model,correct,correct ± 95% CI,correct seed0,correct seed1,correct seed2"
    markdown = (tmp_path / "t.md").read_text()
    assert "correct per seed" in markdown.splitlines()[0] and "20.00 / 40.00 / 60.00" in markdown
    assert "seed0" not in markdown
    assert markdown == markdown_table(table)


def test_one_seed_everywhere_gives_no_interval_column(tmp_path):
    write_eval(tmp_path, "a", 0.5)
    assert list(comparison_table(tmp_path, {"a": ["a"]}).columns) == ["correct"]


def test_knowledge_table_averages_every_column_over_seeds(tmp_path):
    for name, strict in (("k", 0.1), ("k_seed1", 0.3)):
        write_json(tmp_path / "eval" / f"{name}.json",
                   {"test": {"strict": strict, "lenient": 0.5}, "ood": {"strict": 0.0, "lenient": 0.25},
                    "forgetting": {"kl_to_base": 2 * strict, "top1_agreement": 0.9}})
    table = knowledge_table(tmp_path, {"sdft": ["k", "k_seed1"]})
    assert table.loc["sdft", "Acc. (strict)"] == pytest.approx(20.0)
    assert table.loc["sdft", "KL to base (nats)"] == pytest.approx(0.4)
    assert table.loc["sdft", "Acc. (lenient)" + CI] == pytest.approx(0.0)
    assert table.loc["sdft", "paper strict"] == 89  # the paper's number stays beside ours


def test_pareto_and_pass_at_k_average_over_seeds(tmp_path):
    for name, correct, average in (("r", 0.5, 0.30), ("r_seed1", 0.7, 0.40)):
        write_eval(tmp_path, name, correct)
        write_json(tmp_path / "prior" / f"{name}.json", {"average": average})
        write_json(tmp_path / "passk" / f"{name}.json", {"pass_at_k": {"1": correct, "2": correct + 0.1}})
    points = pareto_table(tmp_path, {"sdft": {"method": "sdft", "eval": ["r", "r_seed1"], "prior": ["r", "r_seed1"]}})
    assert points.loc["sdft", "new task"] == pytest.approx(60.0)
    assert points.loc["sdft", "prior capabilities (avg)"] == pytest.approx(35.0)
    curve = pass_at_k_table(tmp_path, {"sdft": ["r", "r_seed1"], "base": "r"})
    assert list(curve.columns) == ["1", "1" + CI, "1 seed0", "1 seed1", "2", "2" + CI, "2 seed0", "2 seed1"]
    assert list(curve.loc["sdft", ["1", "2"]]) == pytest.approx([60.0, 70.0])
    # Two seeds 20 points apart: sample sd 14.14, Student t(0.975, 1 df) = 12.706, half-width 12.706 · 14.14 / √2.
    assert curve.loc["sdft", "1" + CI] == pytest.approx(12.7062 * 10.0, rel=1e-4)
    assert curve.loc["base", "1"] == pytest.approx(50.0) and math.isnan(curve.loc["base", "1" + CI])
    plot_pass_at_k(curve, "pass@k", tmp_path / "curve")
    assert (tmp_path / "curve.png").exists()


def test_sequential_table_reads_every_seed_and_normalises_the_means(tmp_path):
    write_eval(tmp_path, "t_base", 0.0)
    for method, values in (("sft", (0.2, 0.4)), ("sdft", (0.8, 0.6))):
        write_eval(tmp_path, f"seq_{method}_1_on_t", values[0])
        write_eval(tmp_path, f"seq_{method}_1_on_t_seed1", values[1])
    frame = sequential_table(tmp_path, ["sft", "sdft"], ["t"], seeds=(0, 1)).set_index("method")
    assert frame.loc["sft", "accuracy"] == pytest.approx(30.0)
    assert frame.loc["sdft", "normalized"] == pytest.approx(1.0)
    assert frame.loc["sft", "normalized"] == pytest.approx(30.0 / 70.0)


def write_teacher_samples(results, run, samples, max_new_tokens):
    rows = [{"id": item_id, "text": text, "tokens": [0] * length} for item_id, text, length in samples]
    write_json(results / "runs" / run / "teacher_samples.json", {"run_id": run, "samples": rows})
    write_json(results / "runs" / run / "config.json", {"config": {"max_new_tokens": max_new_tokens}})


def test_teacher_samples_are_scored_by_the_tasks_scorer_against_their_training_prompts(tmp_path):
    task = load_task("extraction")
    first, second, third, fourth = task.eval_splits["train"][:4]
    wrong_city = third.demonstration.replace(third.reference["city"], "Nowhere")
    assert wrong_city != third.demonstration
    write_teacher_samples(tmp_path, "run", [(first.id, first.demonstration, 2), (second.id, "Sure, here it is", 4),
                                            (third.id, wrong_city, 4), (fourth.id, fourth.demonstration, 1)], 4)
    write_teacher_samples(tmp_path, "run_seed1", [(first.id, "To create a solution, we", 4)], 4)
    table = teacher_samples_table(tmp_path, {"seed 0": "run", "both seeds": ["run", "run_seed1"]}, task)
    # Seed 0: the two demonstrations are correct; the one with the wrong city is JSON but not correct.
    assert table.loc["seed 0", "correct"] == pytest.approx(50.0)
    assert table.loc["seed 0", "valid_json"] == pytest.approx(75.0)
    assert table.loc["seed 0", "ran to the token budget"] == pytest.approx(50.0)
    assert table.loc["both seeds", "correct"] == pytest.approx(25.0)
    assert table.loc["both seeds", "ran to the token budget"] == pytest.approx(75.0)
    # 50 and 0: sample sd 25·√2, t(0.975, 1) = 12.7062, half-width 12.7062 · 25·√2 / √2
    assert table.loc["both seeds", "correct" + CI] == pytest.approx(12.7062 * 25, rel=1e-4)


def test_a_teacher_sample_of_an_unknown_prompt_names_the_file(tmp_path):
    write_teacher_samples(tmp_path, "run", [("no-such-id", "{}", 1)], 4)
    with pytest.raises(ValueError, match=r"runs/run/teacher_samples.json.*no-such-id"):
        teacher_samples_table(tmp_path, {"x": "run"}, load_task("extraction"))


# --- Figures -------------------------------------------------------------------------------------------------------

def interval_ends(ax, which: str = "y") -> list[float]:
    """Both ends of every error-bar segment drawn on the axes."""
    column = 1 if which == "y" else 0
    return [float(point[column]) for collection in ax.collections if isinstance(collection, LineCollection)
            for segment in collection.get_segments() for point in segment]


def test_an_interval_is_cut_at_the_metrics_range():
    errors = clipped_errors([95.0, 3.0, 50.0], [10.0, 10.0, float("nan")], PERCENT)
    assert errors[:, 0] == pytest.approx([10.0, 5.0])  # 85 … 100, not 105
    assert errors[:, 1] == pytest.approx([3.0, 10.0])  # 0 … 13, not −7
    assert errors[:, 2] == pytest.approx([0.0, 0.0])  # one seed: no bar


def test_pass_at_k_whiskers_that_would_pass_100_percent_are_drawn_cut_and_the_axis_stays_in_range(tmp_path):
    for name, correct in (("s", 0.80), ("s_seed1", 1.0), ("s_seed2", 1.0)):
        write_json(tmp_path / "passk" / f"{name}.json", {"pass_at_k": {"1": correct, "4": correct}, "items": 12})
    write_json(tmp_path / "passk" / "b.json", {"pass_at_k": {"1": 0.0, "4": 0.0}, "items": 12})
    write_json(tmp_path / "passk" / "z.json", {"pass_at_k": {"1": 0.0, "4": 0.0}, "items": 12})
    curve = pass_at_k_table(tmp_path, {"base": "b", "SFT": ["s", "s_seed1", "s_seed2"], "SDFT": "z"})
    assert curve.loc["SFT", "1"] + curve.loc["SFT", "1" + CI] > 100  # the table keeps the interval as computed
    fig = plot_pass_at_k(curve, "pass@k", tmp_path / "curve")
    ax = fig.axes[0]
    ends = interval_ends(ax)
    assert ends and max(ends) == pytest.approx(100.0) and min(ends) >= 0.0
    low, high = ax.get_ylim()
    assert -5 <= low <= 0 and 100 <= high <= 105
    assert (tmp_path / "curve.png").exists() and (tmp_path / "curve.pdf").exists()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["base model", "SFT", "SDFT"]
    assert "n = 3 seeds × 12 problems" in ax.get_title()
    # The base model and SDFT are both 0 at every k: the caption says so (neither hides the other unsaid).
    assert any("coincide" in text.get_text() for text in fig.texts)


def write_pareto_results(results, rate_values):
    models = {"base": {"method": "base", "eval": "base", "prior": "base"}}
    write_eval(results, "base", 0.0, n=32)
    write_json(results / "prior" / "base.json", {"average": 0.30, "benchmarks": ["mmlu"]})
    for label, method, values in rate_values:
        names = [label if seed == 0 else f"{label}_seed{seed}" for seed in range(len(values))]
        for name, (correct, prior) in zip(names, values):
            write_eval(results, name, correct, n=32)
            write_json(results / "prior" / f"{name}.json", {"average": prior, "benchmarks": ["mmlu"]})
        models[label] = {"method": method, "eval": names, "prior": names}
    return models


def test_the_pareto_plot_names_methods_and_learning_rates_and_keeps_its_axes_in_range(tmp_path):
    # Three seeds of a re-invoked SFT model far apart: a Student-t interval of −70 … 190 % if drawn as computed.
    models = write_pareto_results(tmp_path, [
        ("task_sft_lr0.0001_reinvoke", "sft_reinvoke", [(0.0, 0.3), (0.8, 0.25), (0.2, 0.35)]),
        ("task_sdft_lr0.0003", "sdft", [(0.5, 0.3), (0.6, 0.31), (0.55, 0.29)])])
    points = pareto_table(tmp_path, models)
    assert points.loc["task_sdft_lr0.0003", "learning rate"] == pytest.approx(3e-4)
    assert math.isnan(points.loc["base", "learning rate"])
    assert points.loc["task_sft_lr0.0001_reinvoke", "new task" + CI] > 100
    assert seed_columns(points, "prior capabilities (avg)") == [f"prior capabilities (avg) seed{s}" for s in range(3)]
    fig = plot_pareto(points, "Fig. 4", tmp_path / "pareto")
    ax = fig.axes[0]
    assert min(interval_ends(ax, "x")) >= 0.0 and max(interval_ends(ax, "x")) <= 100.0
    assert -5 <= ax.get_xlim()[0] and ax.get_xlim()[1] <= 105
    assert -5 <= ax.get_ylim()[0] and ax.get_ylim()[1] <= 105
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["base model", "SFT + re-invocation", "SDFT"]
    labels = {t.get_text() for t in ax.texts}
    assert {"lr 1e-4", "lr 3e-4"} <= labels
    assert "n = 3 seeds × 32 test items" in ax.get_title()


def test_bars_over_seeds_show_cut_whiskers_and_one_dot_per_seed(tmp_path):
    for name, value in (("k", 0.90), ("k_seed1", 1.0), ("k_seed2", 0.70), ("base", 0.1)):
        write_eval(tmp_path, name, value, n=40)
    table = comparison_table(tmp_path, {"base": "base", "sdft": ["k", "k_seed1", "k_seed2"]}, paper={"sdft": 89})
    fig = plot_comparison(table, "Fig. 7", tmp_path / "bars")
    ax = fig.axes[0]
    assert max(interval_ends(ax)) <= 100.0 and ax.get_ylim()[1] <= 105
    dots = [c for c in ax.collections if not isinstance(c, LineCollection) and len(c.get_offsets()) == 3]
    assert dots and sorted(np.asarray(dots[0].get_offsets())[:, 1]) == pytest.approx([70.0, 90.0, 100.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base model", "SDFT"]
    assert "n = 3 seeds × 40 items" in ax.get_title()


def test_the_knowledge_figure_cuts_accuracy_whiskers_at_100_and_kl_whiskers_at_0(tmp_path):
    for name, strict, kl in (("k", 1.0, 0.1), ("k_seed1", 0.8, 5.0), ("k_seed2", 1.0, 0.2)):
        write_json(tmp_path / "eval" / f"{name}.json",
                   {"test": {"strict": strict, "lenient": strict, "n": 40}, "ood": {"strict": strict, "lenient": 1.0,
                                                                                    "n": 16},
                    "forgetting": {"kl_to_base": kl, "top1_agreement": 0.9}})
    table = knowledge_table(tmp_path, {"sdft": ["k", "k_seed1", "k_seed2"]})
    assert table.attrs["items"] == {"test": [40, 40, 40], "ood": [16, 16, 16]}
    fig = plot_knowledge_table(table, tmp_path / "knowledge")
    accuracy, forgetting = fig.axes[0], fig.axes[1]
    assert max(interval_ends(accuracy)) == pytest.approx(100.0) and accuracy.get_ylim()[1] <= 105
    assert min(interval_ends(forgetting)) == pytest.approx(0.0) and forgetting.get_ylim()[0] == 0.0
    assert "40 test / 16 OOD questions" in accuracy.get_title()


def test_the_sequential_and_scale_figures_draw_from_the_per_seed_columns(tmp_path):
    write_eval(tmp_path, "t_base", 0.0, n=10)
    for method, values in (("sft", (0.2, 0.9)), ("sdft", (0.8, 0.6))):
        write_eval(tmp_path, f"seq_{method}_1_on_t", values[0])
        write_eval(tmp_path, f"seq_{method}_1_on_t_seed1", values[1])
    frame = sequential_table(tmp_path, ["sft", "sdft"], ["t"], seeds=(0, 1))
    assert seed_columns(frame, "accuracy") == ["accuracy seed0", "accuracy seed1"]
    fig = plot_sequential(frame, tmp_path / "sequential")
    # Normalised by the best mean (70 %): accuracy 100 % is 1/0.7; no whisker reaches past it.
    assert max(interval_ends(fig.axes[0])) <= 1 / 0.7 + 1e-9
    for name, value in (("a", 0.5), ("a_seed1", 0.7), ("b", 0.6), ("b_seed1", 0.6)):
        write_eval(tmp_path, name, value, n=10)
    gap = scale_gap_table(tmp_path, {"135M": {"sft": ["a", "a_seed1"], "sdft": ["b", "b_seed1"]}})
    assert list(gap.loc["135M", ["SDFT − SFT seed0", "SDFT − SFT seed1"]]) == pytest.approx([10.0, -10.0])
    plot_scale_gap(gap, tmp_path / "scale")
    assert (tmp_path / "scale.png").exists()


def test_method_names_and_learning_rates_as_the_paper_writes_them():
    assert [method_name(k) for k in ("base", "sft", "sdft", "dft", "cpt", "oracle_rag", "sft_reinvoke")] == [
        "base model", "SFT", "SDFT", "DFT", "CPT", "Oracle RAG", "SFT + re-invocation"]
    assert method_name("SDFT (on-policy)") == "SDFT (on-policy)"  # a label that reads well stays
    assert learning_rate_of("extraction_sft_lr0.0003_reinvoke") == pytest.approx(3e-4)
    assert learning_rate_of("paper_tool_use_sdft_lr1e-05_ep2") == pytest.approx(1e-5)
    assert learning_rate_of("knowledge_sdft") is None
    assert learning_rate_label(1e-4) == "lr 1e-4" and learning_rate_label(3e-05) == "lr 3e-5"
