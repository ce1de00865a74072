"""Evaluation helpers on the tiny random model: scoring records, sequence KL, caching."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from experiments.selection import select_best
from sdft_core.config import TrainConfig
from sdft_core.data import EvalItem, Example, Task
from sdft_core.eval import evaluate
from sdft_core.eval.evaluate import evaluate_model, prompt_ids, sampled_sequence_kl, score_items
from sdft_core.io import UnwritableFolder, read_json, write_json
from sdft_core.model import load_model, weights_fingerprint
from sdft_core.train import train


def test_score_items_averages_every_boolean():
    items = [EvalItem("a", "q1", {"answer": "x"}), EvalItem("b", "q2", {"answer": "y"})]
    score = lambda response, ref: {"correct": response == ref["answer"], "nonempty": bool(response)}
    metrics, records = score_items(items, ["x", ""], score)
    assert metrics == {"correct": 0.5, "nonempty": 0.5, "n": 2}
    assert [r["id"] for r in records] == ["a", "b"] and records[0]["response"] == "x"


def test_sequence_kl_is_zero_against_itself_and_positive_against_another_context(tiny_model_dir,
                                                                                  embedded_tokenizer):
    model = load_model(tiny_model_dir).eval()
    prompts = prompt_ids(embedded_tokenizer, ["Name a colour.", "Count to three."])
    other = prompt_ids(embedded_tokenizer, ["Some context first. Name a colour.", "More context. Count to three."])
    same = sampled_sequence_kl(model, prompts, model, prompts, embedded_tokenizer, 5, progress=False)
    different = sampled_sequence_kl(model, prompts, model, other, embedded_tokenizer, 5, progress=False)
    assert all(abs(k) < 1e-5 for k in same) and all(k > 0 for k in different)


def test_evaluate_model_is_cached_and_counts_response_tokens(tmp_path, tiny_model_dir, capsys):
    items = [EvalItem(f"i{n}", f"Say {n}.", {"answer": str(n)}) for n in range(3)]
    task = Task("toy", "toy", [], {"test": items}, lambda r, ref: {"correct": ref["answer"] in r}, max_new_tokens=4)
    first = evaluate_model(tiny_model_dir, task, ["test"], ["Hello?"], str(tmp_path / "e.json"),
                           base_model_name=tiny_model_dir)
    assert first["test"]["n"] == 3 and 0 < first["test"]["mean_response_tokens"] <= 4
    assert "kl_to_base" in first["forgetting"]
    second = evaluate_model(tiny_model_dir, task, ["test"], ["Hello?"], str(tmp_path / "e.json"),
                            base_model_name=tiny_model_dir)
    assert second == first and "up to date" in capsys.readouterr().out


def test_a_damaged_cached_evaluation_is_named_and_computed_again(tmp_path, tiny_model_dir, capsys):
    items = [EvalItem("i0", "Say 0.", {"answer": "0"})]
    task = Task("toy", "toy", [], {"test": items}, lambda r, ref: {"correct": ref["answer"] in r}, max_new_tokens=3)
    output = tmp_path / "e.json"
    first = evaluate_model(tiny_model_dir, task, ["test"], [], str(output), base_model_name=tiny_model_dir)
    output.write_text(output.read_text()[:40])  # cut short, as by a full disk
    again = evaluate_model(tiny_model_dir, task, ["test"], [], str(output), base_model_name=tiny_model_dir)
    assert f"[eval] warning: the cached result {output} cannot be read (" in capsys.readouterr().out
    assert again["records"] == first["records"] and read_json(output)["fingerprint"] == first["fingerprint"]


def test_an_evaluation_that_cannot_be_written_fails_before_the_model_loads(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(evaluate, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    (tmp_path / "eval").write_text("a file where the results folder should be")
    task = Task("toy", "toy", [], {"test": [EvalItem("i0", "Say 0.", {"answer": "0"})]},
                lambda r, ref: {"correct": True}, max_new_tokens=3)
    with pytest.raises(UnwritableFolder, match="cannot write to the output folder .*/eval \\(it is a file"):
        evaluate_model(tiny_model_dir, task, ["test"], [], str(tmp_path / "eval" / "e.json"),
                       base_model_name=tiny_model_dir)


def test_a_cached_evaluation_is_keyed_by_the_weights_it_read(tmp_path, tiny_model_dir, capsys):
    """Train, evaluate, perturb one weight, evaluate again: recomputed. Evaluate the untouched model: skipped, even
    when the run's summary (its run id) is the same before and after."""


    examples = [Example(f"e{i}", f"Say {i}.", f"{i}") for i in range(2)]
    config = TrainConfig(model=tiny_model_dir, method="sft", batch_size=2, micro_batch_size=2, warmup_steps=0)
    summary = train(config, examples, tmp_path / "run", progress=False)
    model_dir = str(tmp_path / "run" / "model")
    assert summary["weights_fingerprint"] == weights_fingerprint(model_dir)
    assert {"commit", "machine", "date", "seconds"} <= set(summary["provenance"])
    items = [EvalItem("i0", "Say 0.", {"answer": "0"})]
    task = Task("toy", "toy", [], {"test": items}, lambda r, ref: {"correct": ref["answer"] in r}, max_new_tokens=3)
    output = str(tmp_path / "e.json")
    first = evaluate_model(model_dir, task, ["test"], [], output, base_model_name=tiny_model_dir)
    assert "seconds" in first["provenance"]
    evaluate_model(model_dir, task, ["test"], [], output, base_model_name=tiny_model_dir)
    assert "up to date" in capsys.readouterr().out

    weights_file = tmp_path / "run" / "model" / "model.safetensors"
    weights = load_file(weights_file)
    name = next(iter(weights))
    weights[name].view(-1)[0] += 1e-3
    save_file(weights, weights_file, metadata={"format": "pt"})
    second = evaluate_model(model_dir, task, ["test"], [], output, base_model_name=tiny_model_dir)
    assert "up to date" not in capsys.readouterr().out
    assert second["fingerprint"] != first["fingerprint"]
    assert read_json(tmp_path / "run" / "summary.json")["run_id"] == summary["run_id"]  # the run id did not change
    evaluate_model(model_dir, task, ["test"], [], output, base_model_name=tiny_model_dir)
    assert "up to date" in capsys.readouterr().out


def test_select_best_picks_by_validation_then_trains_and_tests_the_chosen_configuration_per_seed(
        tmp_path, tiny_model_dir):

    examples = [Example(f"e{i}", f"Say {i}.", f"{i}") for i in range(4)]
    items = [EvalItem(f"i{n}", f"Say {n}.", {"answer": str(n)}) for n in range(2)]
    task = Task("toy", "toy", examples, {"val": items, "test": items}, lambda r, ref: {"correct": ref["answer"] in r},
                max_new_tokens=3)
    for run, rate, validation in (("lr1", 1e-3, 0.25), ("lr2", 1e-2, 0.75)):
        config = TrainConfig(model=tiny_model_dir, method="sft", learning_rate=rate, batch_size=2,
                             micro_batch_size=2, warmup_steps=0, epochs=1.0)
        train(config, examples[:2], tmp_path / "runs" / run, progress=False)
        write_json(tmp_path / "eval" / f"{run}_val.json", {"val": {"correct": validation}})
    choice = select_best(str(tmp_path), task, "sweep", ["lr1", "lr2"], "val", ["test"], [], seeds=(0, 1),
                         base_model_name=tiny_model_dir)
    assert choice["best"] == "lr2" and choice["seeds"] == [0, 1]
    repeated = read_json(tmp_path / "runs" / "lr2_seed1" / "config.json")
    assert repeated["config"]["seed"] == 1 and repeated["config"]["learning_rate"] == 1e-2
    assert repeated["num_examples"] == 2  # the candidate's training set, not the whole task
    assert read_json(tmp_path / "eval" / "sweep.json")["model"].endswith("lr2/model")
    assert read_json(tmp_path / "eval" / "sweep_seed1.json")["model"].endswith("lr2_seed1/model")


def test_pass_at_k_and_kl_to_base_load_every_model_in_the_given_dtype(tmp_path, tiny_model_dir, monkeypatch):
    # At paper scale these run on a GPU in bfloat16; they once loaded 7B models in float32 on the CPU whatever asked.
    loaded = []

    def spy(*arguments, **options):
        loaded.append(model := load_model(*arguments, **options))
        return model

    monkeypatch.setattr(evaluate, "load_model", spy)
    items = [EvalItem("i0", "Say 0.", {"answer": "0"})]
    task = Task("toy", "toy", [Example("e0", "Say 0.", "0")], {"test": items},
                lambda r, ref: {"correct": ref["answer"] in r}, max_new_tokens=3)
    evaluate.pass_at_k_counts(tiny_model_dir, task, "test", 2, str(tmp_path / "passk.json"),
                              base_model_name=tiny_model_dir, dtype="bfloat16", device="cpu")
    evaluate.kl_to_base_of_sft_and_teacher(tiny_model_dir, task, str(tmp_path / "kl.json"),
                                           base_model_name=tiny_model_dir, dtype="bfloat16", device="cpu")
    assert len(loaded) == 3 and all(next(m.parameters()).dtype == torch.bfloat16 for m in loaded)
