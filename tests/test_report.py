"""Tables over seeds: a list of evaluation names gives the mean and the Student-t 95% CI across seeds, a single name
the plain number; the CI column appears only where some row has several seeds."""

import math

import pytest

from experiments.report import (CI, comparison_table, knowledge_table, pareto_table, pass_at_k_table, plot_pass_at_k,
                                sequential_table)
from sdft_core.io import write_json


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
    assert list(table.columns) == ["correct", "correct" + CI]


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
    assert list(curve.columns) == ["1", "1" + CI, "2", "2" + CI]
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
