"""The training loop on a tiny random model: resumption, skipping, divergence, normalisation, masking."""

import json
import shutil

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
    # A clone holds a finished run's summary but not its (git-ignored) model folder: the run is trained again.
    shutil.rmtree(tmp_path / "run" / "model")
    assert train(cfg, EXAMPLES, tmp_path / "run", progress=False)["run_id"] == first["run_id"]
    assert "model folder is missing" in capsys.readouterr().out
    assert (tmp_path / "run" / "model" / "config.json").exists()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == first["steps"]
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


def test_offline_methods_learn_from_the_same_teacher_samples(tmp_path, tiny_model_dir):
    for method in ("offline_distill", "sft_teacher_samples"):
        train(config(tiny_model_dir, method=method, teacher_kind="frozen"), EXAMPLES, tmp_path / method,
              progress=False)
    distill = json.loads((tmp_path / "offline_distill" / "teacher_samples.json").read_text())["samples"]
    sft = json.loads((tmp_path / "sft_teacher_samples" / "teacher_samples.json").read_text())["samples"]
    assert [s["tokens"] for s in distill] == [s["tokens"] for s in sft] and all(s["tokens"] for s in sft)
    kl = [json.loads(l)["kl_per_token"] for l in (tmp_path / "offline_distill" / "metrics.jsonl").open()]
    assert len(kl) == 4 and all(k >= 0 for k in kl)


def test_cpt_and_reinvocation_run(tmp_path, tiny_model_dir):
    from sdft_core.config import reinvocation_config

    documents = [Example(f"d{i}", "", f"Document {i} says something.") for i in range(4)]
    cpt = train(config(tiny_model_dir, method="cpt"), documents, tmp_path / "cpt", progress=False)
    assert cpt["steps"] == 2
    general = [Example(f"g{i}", f"Tell me a fact about {i}.", "") for i in range(4)]
    reinvoke = reinvocation_config(tiny_model_dir, tiny_model_dir, learning_rate=1e-3, batch_size=2,
                                   micro_batch_size=2, max_new_tokens=4, save_model=False)
    summary = train(reinvoke, general, tmp_path / "reinvoke", progress=False)
    # Teacher = student at the start and the prompts are identical, so the first step's KL is zero.
    first = json.loads((tmp_path / "reinvoke" / "metrics.jsonl").read_text().splitlines()[0])
    assert summary["steps"] == 2 and first["kl_per_token"] == pytest.approx(0.0, abs=1e-6)


def test_offline_methods_require_a_frozen_teacher(tiny_model_dir):
    with pytest.raises(ValueError, match="fixed teacher"):
        config(tiny_model_dir, method="offline_distill")


def test_sampler_log_probs_agree_with_the_trainer_at_temperature_one(tiny_model_dir, embedded_tokenizer):
    from sdft_core.loss import truncated_importance_weights
    from sdft_core.model import load_model

    model = load_model(tiny_model_dir).eval()
    torch.manual_seed(1)
    batch = generate(model, embedded_tokenizer, [[1, 100, 200, 2], [1, 300, 2]], max_new_tokens=6,
                     temperature=1.0, return_logprobs=True)
    with torch.no_grad():
        logp = torch.log_softmax(model.get_output_embeddings()(completion_hidden(model, batch)), -1)
    trainer = logp.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(trainer[mask], batch.sampler_logprobs[mask], rtol=1e-4, atol=1e-4)
    ratio = truncated_importance_weights(trainer, batch.sampler_logprobs, cap=2.0)
    torch.testing.assert_close(ratio[mask], torch.ones_like(ratio[mask]), rtol=1e-3, atol=1e-3)


def test_importance_sampling_runs_in_the_loop_and_logs_its_statistics(tmp_path, tiny_model_dir):
    train(config(tiny_model_dir, importance_sampling=True, temperature=0.7), EXAMPLES[:4], tmp_path / "run",
          progress=False)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all(r["is_ratio_mean"] > 0 and 0 <= r["is_capped_fraction"] <= 1 for r in rows)
