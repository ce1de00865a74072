"""The training loop on a tiny random model: resumption, skipping, divergence, normalisation, masking."""

import json

import pytest
import torch

from sdft_core.config import TrainConfig
from sdft_core.data import Example
from sdft_core.rollout import Batch, completion_mask, generate
from sdft_core.train import TrainingDiverged, completion_hidden, data_order, loss_weights, train

EXAMPLES = [Example(f"e{i}", f"Question number {i}?", f"Answer {i}.", f"Context {i}.") for i in range(8)]


def config(model_dir, **overrides):
    values = dict(model=model_dir, method="sdft", learning_rate=1e-3, epochs=1.0, batch_size=2, micro_batch_size=1,
                  warmup_steps=1, max_new_tokens=6, teacher_context="context_and_demonstration", save_model=False)
    return TrainConfig(**{**values, **overrides})


def checkpoint_state(run_dir):
    return torch.load(run_dir / "checkpoint" / "state.pt", weights_only=True)


@pytest.mark.parametrize("method", ["sdft", "sft"])
def test_resume_gives_identical_weights_teacher_and_optimizer(tmp_path, tiny_model_dir, method):
    cfg = config(tiny_model_dir, method=method)  # 4 steps
    train(cfg, EXAMPLES, tmp_path / "straight", stop_after_step=3, progress=False)
    train(cfg, EXAMPLES, tmp_path / "resumed", stop_after_step=1, progress=False)
    train(cfg, EXAMPLES, tmp_path / "resumed", stop_after_step=3, progress=False)  # resumes from step 1
    straight, resumed = checkpoint_state(tmp_path / "straight"), checkpoint_state(tmp_path / "resumed")
    assert straight["step"] == resumed["step"] == 3
    for part in ("student", "teacher") if method == "sdft" else ("student",):
        for key in straight[part]:
            assert torch.equal(straight[part][key], resumed[part][key]), (part, key)
    assert straight["optimizer"]["state"].keys() == resumed["optimizer"]["state"].keys()
    for index, values in straight["optimizer"]["state"].items():
        assert torch.equal(values["exp_avg"], resumed["optimizer"]["state"][index]["exp_avg"])
    # The metrics of the resumed run are those of the straight run, step for step.
    read = lambda d: [json.loads(l) for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in read("straight")] == [r["loss"] for r in read("resumed")]
    if method == "sdft":  # the teacher moved away from the student's initial weights (EMA, not frozen)
        assert any(not torch.equal(straight["teacher"][k], straight["student"][k]) for k in straight["teacher"])


def test_finished_run_is_skipped_and_changed_config_retrains(tmp_path, tiny_model_dir, capsys):
    cfg = config(tiny_model_dir, method="sft", save_model=True)
    first = train(cfg, EXAMPLES, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model" / "config.json").exists() and not (tmp_path / "run" / "checkpoint").exists()
    assert train(cfg, EXAMPLES, tmp_path / "run", progress=False) == first
    assert "already finished" in capsys.readouterr().out
    changed = train(config(tiny_model_dir, method="sft", learning_rate=5e-4, save_model=True), EXAMPLES,
                    tmp_path / "run", progress=False)
    assert changed["run_id"] != first["run_id"]


def test_non_finite_loss_stops_with_the_step(tmp_path, tiny_model_dir):
    cfg = config(tiny_model_dir, method="sft", learning_rate=1e30, warmup_steps=0)
    with pytest.raises(TrainingDiverged, match=r"step \d+: the sft loss is (nan|inf)"):
        train(cfg, EXAMPLES * 4, tmp_path / "run", progress=False)


def test_data_order_is_a_permutation_per_epoch():
    order = data_order(5, 2.4, seed=3)
    assert len(order) == 12 and sorted(order[:5]) == sorted(order[5:10]) == list(range(5))
    assert order == data_order(5, 2.4, seed=3) and order != data_order(5, 2.4, seed=4)


def test_completion_mask_ends_at_first_eos_and_first_tokens_can_be_masked():
    ids = torch.tensor([[5, 6, 2, 2, 2], [5, 2, 7, 2, 8], [5, 6, 7, 8, 9]])
    mask = completion_mask(ids, [2])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert loss_weights(mask, 2).tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 1, 1]]


def test_scored_log_probs_match_the_sampler(tiny_model_dir, embedded_tokenizer):
    # The trainer must score exactly the distribution the rollout sampled from (left padding, positions).
    from sdft_core.model import load_model

    model = load_model(tiny_model_dir).eval()
    prompts = [[1, 100, 200, 300, 2], [1, 400, 2]]
    torch.manual_seed(0)
    batch = generate(model, embedded_tokenizer, prompts, max_new_tokens=5, temperature=1.0)
    out = model.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, max_new_tokens=5,
                         do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=2)
    greedy = Batch(batch.prompt_ids, batch.prompt_mask, out.sequences[:, batch.prompt_ids.shape[1]:],
                   torch.ones_like(out.sequences[:, batch.prompt_ids.shape[1]:]))
    with torch.no_grad():
        logits = model.get_output_embeddings()(completion_hidden(model, greedy))
    torch.testing.assert_close(logits, torch.stack(out.scores, dim=1), rtol=1e-4, atol=1e-4)
