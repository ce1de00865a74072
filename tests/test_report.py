"""Tables over seeds: a list of evaluation names gives the mean and the Student-t 95% CI across seeds, a single name
the plain number; the CI column appears only where some row has several seeds."""

import math

import pytest

from experiments.report import (CI, comparison_table, knowledge_table, pareto_table, pass_at_k_table, plot_pass_at_k,
                                sequential_table, teacher_samples_table)
from sdft_core.io import write_json
from tasks.registry import load_task


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
