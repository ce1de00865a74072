"""The training loop on a tiny random model: resumption, skipping, refusing another run's folder, damaged
checkpoints, divergence, normalisation, masking."""

import json
import shutil

import pytest
import torch

import sdft_core.train as train_module
from sdft_core.config import TrainConfig
from sdft_core.data import Example
from sdft_core.forward import completion_hidden, loss_weights
from sdft_core.io import UnwritableFolder
from sdft_core.rollout import Batch, HFSampler, completion_mask, generate
from sdft_core.train import (CorruptCheckpoint, RunFolderInUse, TrainingDiverged, data_order, full_batches,
                             guided_fraction_at, run_id_for, train)

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
                    tmp_path / "run", progress=False, overwrite=True)
    assert changed["run_id"] != first["run_id"]


def folder_contents(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_folder_holding_another_run_is_refused_with_what_differs_and_left_untouched(tmp_path, tiny_model_dir,
                                                                                      monkeypatch):
    cfg = config(tiny_model_dir, method="sft")
    train(cfg, EXAMPLES, tmp_path / "run", progress=False)
    before = folder_contents(tmp_path / "run")
    with pytest.raises(RunFolderInUse) as refused:
        train(config(tiny_model_dir, method="sft", learning_rate=5e-4, epochs=2.0), EXAMPLES[:4], tmp_path / "run",
              progress=False)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'run'} holds another run than the one asked for (")
    assert "epochs 1.0 → 2.0; learning_rate 0.001 → 0.0005; the training data (8 examples there, 4 now))" in message
    assert "training code" not in message and "overwrite=True" in message and "Nothing in it was changed" in message
    # The same configuration and data under other training code: only the code is named.
    monkeypatch.setattr(train_module, "training_code_fingerprint", lambda: "edited")
    with pytest.raises(RunFolderInUse, match=r"asked for \(the training code \(sdft_core/\{config,data,"):
        train(cfg, EXAMPLES, tmp_path / "run", progress=False)
    assert folder_contents(tmp_path / "run") == before


def test_a_damaged_checkpoint_is_named_and_discarded_only_with_overwrite(tmp_path, tiny_model_dir, capsys):
    cfg = config(tiny_model_dir, method="sft")  # 4 steps
    train(cfg, EXAMPLES, tmp_path / "run", stop_after_step=1, progress=False)
    state = tmp_path / "run" / "checkpoint" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a copy cut short
    before = folder_contents(tmp_path / "run")
    with pytest.raises(CorruptCheckpoint) as refused:
        train(cfg, EXAMPLES, tmp_path / "run", progress=False)
    message = str(refused.value)  # torch's first sentence, e.g. "... failed finding central directory", then ours
    assert message.startswith(f"the checkpoint {state} cannot be read (") and "): it is damaged" in message
    assert "internal miniz error" not in message and "overwrite=True" in message
    assert folder_contents(tmp_path / "run") == before
    summary = train(cfg, EXAMPLES, tmp_path / "run", progress=False, overwrite=True)
    assert f"the checkpoint {state} cannot be read; discarding it: training starts from step 0." in \
        capsys.readouterr().out
    assert summary["steps"] == 4 and not state.parent.exists()
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").open()] == [1, 2, 3, 4]


def test_an_output_folder_that_cannot_be_written_fails_before_the_model_loads(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(train_module, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    (tmp_path / "taken").write_text("a file where the run folder should be")
    with pytest.raises(UnwritableFolder, match=f"cannot write to the output folder {tmp_path / 'taken'} \\(it is a "
                                               f"file, not a folder\\)"):
        train(config(tiny_model_dir), EXAMPLES, tmp_path / "taken", progress=False)
    with pytest.raises(UnwritableFolder, match=f"output folder {tmp_path / 'taken' / 'run'} \\(Not a directory"):
        train(config(tiny_model_dir), EXAMPLES, tmp_path / "taken" / "run", progress=False)


def test_non_finite_loss_stops_with_the_step(tmp_path, tiny_model_dir):
    cfg = config(tiny_model_dir, method="sft", learning_rate=1e30, warmup_steps=0)
    with pytest.raises(TrainingDiverged, match=r"step \d+: the sft loss is (nan|inf)"):
        train(cfg, EXAMPLES * 4, tmp_path / "run", progress=False)


def test_data_order_is_a_permutation_per_epoch():
    order = data_order(5, 2.4, seed=3)
    assert len(order) == 12 and sorted(order[:5]) == sorted(order[5:10]) == list(range(5))
    assert order == data_order(5, 2.4, seed=3) and order != data_order(5, 2.4, seed=4)


def test_data_order_repeats_each_prompt_for_several_rollouts():
    assert data_order(5, 2.4, seed=3, repeats=3) == [i for i in data_order(5, 2.4, seed=3) for _ in range(3)]


def test_rollouts_per_prompt_put_each_prompt_in_a_batch_several_times(tmp_path, tiny_model_dir, monkeypatch):
    seen = []
    original = HFSampler.sample

    def recording_sample(self, prompts, *args, **kwargs):
        seen.append([tuple(p) for p in prompts])
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(HFSampler, "sample", recording_sample)
    cfg = config(tiny_model_dir, batch_size=4, micro_batch_size=2, rollouts_per_prompt=2)
    summary = train(cfg, EXAMPLES, tmp_path / "run", progress=False)
    assert summary["steps"] == 4 and summary["examples_seen"] == 16  # 8 prompts × 2 rollouts, 4 per step
    for group in seen:  # each micro-batch holds one prompt twice
        assert len(group) == 2 and group[0] == group[1]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["epoch"] == pytest.approx(1.0)


def test_guided_fraction_falls_linearly_to_zero(tiny_model_dir):
    cfg = config(tiny_model_dir, guided_fraction=0.8)
    assert [guided_fraction_at(cfg, step, 4) for step in (1, 2, 3, 4)] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert guided_fraction_at(config(tiny_model_dir), 1, 4) == 0.0


@pytest.mark.parametrize("guided_by", ["teacher", "demonstration"])
def test_guided_rollouts_come_from_the_guide_and_the_rest_from_the_student(tmp_path, tiny_model_dir, guided_by,
                                                                           monkeypatch):
    """With guided_fraction 1 the first step's rollouts are all the guide's: the demonstrations themselves, or
    samples of the teacher under its own context (the student's sampler is never called then); later steps mix."""
    student_calls, teacher_calls = [], []
    original_sample = HFSampler.sample
    monkeypatch.setattr(HFSampler, "sample", lambda self, prompts, *a, **k: student_calls.append(len(prompts))
                        or original_sample(self, prompts, *a, **k))
    import sdft_core.train as train_module
    original_generate = train_module.generate
    monkeypatch.setattr(train_module, "generate", lambda model, tokenizer, prompts, *a, **k: teacher_calls.append(
        [tokenizer.decode(p) for p in prompts]) or original_generate(model, tokenizer, prompts, *a, **k))
    demonstrations = []
    original_step = train_module.distillation_step

    def recording_step(loop, step, first_group, student_prompts, teacher_prompts, fixed=None, demos=None, beta=0.0):
        demonstrations.append((step, beta, demos))
        return original_step(loop, step, first_group, student_prompts, teacher_prompts, fixed, demos, beta)

    monkeypatch.setattr(train_module, "distillation_step", recording_step)
    cfg = config(tiny_model_dir, guided_fraction=1.0, guided_by=guided_by, batch_size=4, micro_batch_size=4)
    train(cfg, EXAMPLES, tmp_path / "run", progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["guided_fraction"] for m in metrics] == [1.0, 0.5]
    assert [beta for _, beta, _ in demonstrations] == [1.0, 0.5]
    if guided_by == "teacher":
        assert teacher_calls and all("This is an example for a response" in t for t in teacher_calls[0])
        assert len(teacher_calls[0]) == 4 and demonstrations[0][2] is None
        assert sum(student_calls) + sum(len(c) for c in teacher_calls) == 8  # 2 steps of 4 rollouts
    else:
        assert not teacher_calls and demonstrations[0][2] is not None
        assert demonstrations[0][2][0][-1] == 2  # the demonstration ends with the end-of-sequence token
    # Step 1 is all guided, so the student sampled at most step 2's 4 rollouts.
    assert sum(student_calls) <= 4


def test_guided_rows_are_the_demonstrations(tiny_model_dir):
    """sample_rollouts with beta 1: every completion is the demonstration, behind the student prompt."""
    from accelerate import Accelerator

    from sdft_core.model import load_model, load_tokenizer
    from sdft_core.train import Loop, sample_rollouts

    tokenizer, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    cfg = config(tiny_model_dir, guided_fraction=1.0, guided_by="demonstration")
    loop = Loop(cfg, model, model, None, tokenizer, Accelerator(cpu=True), None, HFSampler(model, tokenizer))
    demonstrations = [[11, 12, 2], [13, 2]]
    batch = sample_rollouts(loop, 0, [[5, 6], [7]], [[5], [7]], demonstrations, beta=1.0)
    assert batch.completion_ids.tolist() == [[11, 12, 2], [13, 2, 2]]
    assert batch.completion_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.prompt_ids.tolist() == [[5, 6], [2, 7]] and batch.prompt_mask.tolist() == [[1, 1], [0, 1]]


@pytest.mark.parametrize("values, problem", [({"rollouts_per_prompt": 0}, "rollouts_per_prompt"),
                                             ({"guided_fraction": 1.5}, "guided_fraction"),
                                             ({"guided_fraction": 0.5, "importance_sampling": True},
                                              "guided_fraction"),
                                             ({"guided_fraction": 0.5, "sharding": "fsdp"}, "guided_fraction"),
                                             ({"rollouts_per_prompt": 3}, "divide batch_size"),
                                             ({"teacher_template": "{question}"}, "teacher_template")])
def test_new_sdft_fields_are_validated(tiny_model_dir, values, problem):
    with pytest.raises(ValueError, match=problem):
        config(tiny_model_dir, **values)


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
    # On-policy at temperature 1 the sampler is the trained model: every ratio is 1 and none is capped ...
    train(config(tiny_model_dir, importance_sampling=True), EXAMPLES[:4], tmp_path / "on", progress=False)
    rows = [json.loads(l) for l in (tmp_path / "on" / "metrics.jsonl").open()]
    assert [r["is_ratio_mean"] for r in rows] == pytest.approx([1.0] * len(rows), abs=1e-4)
    assert all(r["is_capped_fraction"] == 0 for r in rows)
    # ... at temperature 0.1 the sampler is far sharper than the trained model: ratios move away from 1.
    train(config(tiny_model_dir, importance_sampling=True, temperature=0.1), EXAMPLES[:4], tmp_path / "cold",
          progress=False)
    rows = [json.loads(l) for l in (tmp_path / "cold" / "metrics.jsonl").open()]
    assert all(abs(r["is_ratio_mean"] - 1.0) > 1e-2 for r in rows)


def test_given_fields_win_over_a_preset_and_a_preset_over_the_defaults():
    from sdft_core.config import PRESETS, preset_config

    as_run = preset_config("paper_as_run", learning_rate=3e-4, direction="reverse")
    assert as_run.direction == "reverse" and as_run.learning_rate == 3e-4  # given
    assert as_run.mask_first_tokens == PRESETS["paper_as_run"]["mask_first_tokens"] == 3  # preset over default
    assert preset_config(learning_rate=3e-4) == TrainConfig(learning_rate=3e-4)  # no preset: the defaults
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("paper_as_imagined")


def test_a_partial_last_batch_is_filled_from_the_start_of_the_order():
    assert full_batches([3, 1, 0, 2, 4], 4) == [3, 1, 0, 2, 4, 3, 1, 0]
    assert full_batches([1, 0], 8) == [1, 0, 1, 0, 1, 0, 1, 0]  # fewer examples than one batch
    assert full_batches([0, 1, 2, 3], 2) == [0, 1, 2, 3]
    # Repeated rollouts stay in whole groups (batch_size is a multiple of rollouts_per_prompt).
    assert full_batches(data_order(3, 1.0, 0, repeats=2), 4)[-2:] == data_order(3, 1.0, 0, repeats=2)[:2]


def test_every_step_holds_a_full_batch(tmp_path, tiny_model_dir):
    # 5 examples at batch 2: the third step used to hold one example (an empty share for a second process).
    summary = train(config(tiny_model_dir, method="sft"), EXAMPLES[:5], tmp_path / "run", progress=False)
    assert summary["steps"] == 3 and summary["examples_seen"] == 6


def test_mixed_precision_keeps_updates_that_pure_bf16_rounds_away(tmp_path, tiny_model_dir):
    """One AdamW step at lr 1e-5 (an Adam step is about lr in size, below half the bf16 spacing of a weight of
    0.01 or more): float32 master weights keep it, bf16 weights lose most of it."""
    from safetensors.torch import load_file

    initial = {k: v.float() for k, v in load_file(f"{tiny_model_dir}/model.safetensors").items()}
    changed = {}
    for dtype in ("bfloat16", "bfloat16_pure"):
        cfg = config(tiny_model_dir, method="sft", dtype=dtype, learning_rate=1e-5, warmup_steps=0, batch_size=4,
                     micro_batch_size=4, save_model=True)
        train(cfg, EXAMPLES[:4], tmp_path / dtype, progress=False)
        trained = load_file(str(tmp_path / dtype / "model" / "model.safetensors"))
        # Against the initial weights as this run held them (bf16-rounded for pure bf16).
        moved = sum((trained[k] != initial[k].to(trained[k].dtype)).sum().item() for k in initial)
        changed[dtype] = moved / sum(v.numel() for v in initial.values())
    assert load_file(str(tmp_path / "bfloat16" / "model" / "model.safetensors"))[next(iter(initial))].dtype == \
        torch.float32
    assert changed["bfloat16"] > 0.9 and changed["bfloat16_pure"] < 0.5, changed


def test_mixed_precision_keeps_adam_state_in_float32(tmp_path, tiny_model_dir):
    cfg = config(tiny_model_dir, method="sft", dtype="bfloat16", warmup_steps=0)
    train(cfg, EXAMPLES, tmp_path / "run", stop_after_step=1, progress=False)
    state = checkpoint_state(tmp_path / "run")
    assert {v.dtype for v in state["student"].values()} == {torch.float32}
    assert {s["exp_avg"].dtype for s in state["optimizer"]["state"].values()} == {torch.float32}


def test_the_run_id_changes_when_the_training_code_changes(tmp_path, tiny_model_dir, monkeypatch):
    import sdft_core.train as train_module

    cfg = config(tiny_model_dir, method="sft")
    before = run_id_for(cfg, EXAMPLES)
    copy = tmp_path / "sdft_core"
    shutil.copytree(train_module.TRAINING_SOURCE_DIR, copy)
    monkeypatch.setattr(train_module, "TRAINING_SOURCE_DIR", copy)
    assert run_id_for(cfg, EXAMPLES) == before  # the same code, read from elsewhere
    (copy / "loss.py").write_text((copy / "loss.py").read_text().replace("def ", "def  ", 1))
    assert run_id_for(cfg, EXAMPLES) != before
