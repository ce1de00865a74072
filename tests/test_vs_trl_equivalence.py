"""Our SDFT step vs TRL's experimental SDFTTrainer configured exactly as benchmarks/vs_trl.py configures it, so that the
benchmark compares like with like: the same prompts token for token, the same data order, the same rollouts from the
same RNG state, the same per-token full-vocabulary reverse KL (hence the same first-step loss), the same gradient
where the loss normalisations coincide, the same EMA update, optimizer and schedule. Tiny random model; a few seconds
after TRL's import. Skipped when TRL (the `peers` extra) is not installed."""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

pytest.importorskip("trl.experimental.sdft", reason="TRL's experimental SDFTTrainer is not installed "
                    "(pip install -e '.[peers]'): there is nothing to compare against")
pytest.importorskip("datasets", reason="datasets (the `peers` extra) is not installed; TRL's trainer needs it")

from sdft_core.forward import completion_hidden, with_teacher_prompts  # noqa: E402
from sdft_core.loss import per_token_divergence, stepwise_divergence  # noqa: E402
from sdft_core.model import load_model  # noqa: E402
from sdft_core.prompts import student_prompt_ids, teacher_prompt_ids  # noqa: E402
from sdft_core.rollout import Batch, completion_mask, generate, left_pad, right_pad  # noqa: E402
from sdft_core.teacher import Teacher  # noqa: E402
from sdft_core.train import Loop, data_order, distillation_step  # noqa: E402

BATCH, STEPS, MAX_NEW_TOKENS = 4, 2, 8


@pytest.fixture(scope="module")
def vs_trl():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_trl.py"
    spec = importlib.util.spec_from_file_location("vs_trl", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def examples(vs_trl):
    return vs_trl.knowledge_examples(BATCH * STEPS)


@pytest.fixture
def build(vs_trl, examples, tiny_model_dir, tmp_path):
    def build(teacher_context="demonstration"):
        trainer = vs_trl.build_trl_trainer(tiny_model_dir, examples, teacher_context, STEPS, BATCH, MAX_NEW_TOKENS,
                                           str(tmp_path / "trl"))
        trainer.model.train()  # as in its training loop
        trainer.current_gradient_accumulation_steps = 1  # set by the training loop; compute_loss divides by it
        return trainer
    return build


def ordered(examples, vs_trl):
    return [examples[i] for i in data_order(len(examples), 1.0, vs_trl.SEED)]


def trl_teacher_prompts(trainer, rows) -> list[list[int]]:
    """The teacher prompt ids TRL's own builder produces (its padding stripped)."""
    dummy = torch.zeros(len(rows), 1, dtype=torch.long)
    built = trainer.teacher_context_builder.build([r["prompt"] for r in rows], [r["privileged_context"] for r in rows],
                                                  dummy, torch.ones_like(dummy))
    return [ids[mask.bool()][:-1].tolist() for ids, mask in zip(built["teacher_input_ids"],
                                                                 built["teacher_attention_mask"])]


@pytest.mark.parametrize("teacher_context", ["demonstration", "context_and_demonstration"])
def test_trl_sees_our_prompts_in_our_order(build, examples, vs_trl, teacher_context):
    trainer = build(teacher_context)
    tokenizer = trainer.processing_class
    rows, ours = list(trainer.train_dataset), ordered(examples, vs_trl)
    assert list(trainer._get_train_sampler()) == list(range(len(rows)))  # no reshuffling: our order
    assert [r["prompt"][0]["content"] for r in rows] == [e.prompt for e in ours]
    assert trainer._tokenize_prompts([r["prompt"] for r in rows]) == [student_prompt_ids(tokenizer, e, 512)
                                                                      for e in ours]
    assert trl_teacher_prompts(trainer, rows) == [teacher_prompt_ids(tokenizer, e, 1536, teacher_context)
                                                  for e in ours]


def test_trl_full_logit_alpha_1_is_our_reverse_kl():
    from trl.experimental.sdft.loss_utils import compute_full_logit_self_distillation_loss

    torch.manual_seed(0)
    student_logits = (3 * torch.randn(2, 5, 40, dtype=torch.float64)).requires_grad_()
    teacher_logits = 3 * torch.randn(2, 5, 40, dtype=torch.float64)
    theirs = compute_full_logit_self_distillation_loss(student_logits, teacher_logits, distillation_alpha=1.0)
    ours = per_token_divergence(torch.log_softmax(student_logits, -1), torch.log_softmax(teacher_logits, -1), "reverse")
    torch.testing.assert_close(theirs, ours, rtol=1e-12, atol=1e-12)
    (grad_theirs,) = torch.autograd.grad(theirs.sum(), student_logits)
    (grad_ours,) = torch.autograd.grad(ours.sum(), student_logits)
    torch.testing.assert_close(grad_theirs, grad_ours, rtol=1e-10, atol=1e-12)


def _perturb(model, seed):
    """A teacher that differs from the student (the tiny random model barely reads its prompt, so without this the
    KL is ~1e-5 and a relative comparison would test rounding)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize("lengths", ["varied", "equal"])
def test_first_step_loss_and_gradient_equal_ours(build, examples, vs_trl, tiny_model_dir, tmp_path, lengths):
    """Same initial weights, same fixed completions: TRL's logged distillation loss (per-token mean over the batch) is
    our step loss; TRL's optimized loss is the mean over sequences of per-sequence means (ours weighs every token the
    same), so the two coincide, gradient included, exactly when all completions have the same length."""
    trainer = build("demonstration")
    _perturb(trainer.teacher_model, seed=1)
    tokenizer = trainer.processing_class
    batch_examples = ordered(examples, vs_trl)[:BATCH]
    rows = list(trainer.train_dataset)[:BATCH]
    generator = torch.Generator().manual_seed(2)
    sizes = [7, 3, 7, 1] if lengths == "varied" else [7] * BATCH
    completions = [torch.randint(3, len(tokenizer), (n,), generator=generator).tolist() for n in sizes]
    if lengths == "varied":
        completions[1][-1] = tokenizer.eos_token_id  # a completion that stopped (EOS is scored, in both)

    # Ours: the training loop's step on fixed completions.
    config = vs_trl.our_config(tiny_model_dir, BATCH, MAX_NEW_TOKENS, "demonstration")
    student = load_model(tiny_model_dir)
    student.train()
    teacher = Teacher(student, "ema", config.ema_alpha)
    _perturb(teacher.model, seed=1)
    student_prompts = [student_prompt_ids(tokenizer, e, 512) for e in batch_examples]
    teacher_prompts = [teacher_prompt_ids(tokenizer, e, 1536, "demonstration") for e in batch_examples]
    loop = Loop(config, student, student, teacher, tokenizer, Accelerator(cpu=True), tmp_path)
    row = distillation_step(loop, 1, 0, student_prompts, teacher_prompts, fixed_completions=completions)

    # TRL: its compute_loss on the batch its own code assembles (prompts tokenized and teacher inputs built by TRL).
    prompt_ids, prompt_mask = left_pad(trainer._tokenize_prompts([r["prompt"] for r in rows]), tokenizer.pad_token_id)
    completion_ids, mask = right_pad(completions, tokenizer.pad_token_id)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": mask}
    inputs.update(trainer.teacher_context_builder.build([r["prompt"] for r in rows],
                                                        [r["privileged_context"] for r in rows], completion_ids, mask))
    trl_loss = trainer.compute_loss(trainer.model, inputs)
    trl_loss.backward()
    trl_per_token = trainer._metrics["train"]["self_distillation/distillation_loss"][-1]

    assert row["kl_per_token"] > 1e-2  # a real divergence, not rounding noise
    assert trl_per_token == pytest.approx(row["kl_per_token"], rel=1e-5)
    assert row["loss"] == pytest.approx(row["kl_per_token"], rel=1e-6)  # ours optimizes the per-token mean

    # TRL's optimized value, recomputed from our per-token divergences: mean over sequences of per-sequence means.
    with torch.no_grad():
        batch = Batch(*left_pad(student_prompts, tokenizer.pad_token_id), completion_ids, mask)
        kl = stepwise_divergence(completion_hidden(student, batch),
                                 completion_hidden(teacher.model, with_teacher_prompts(batch, teacher_prompts,
                                                                                       tokenizer.pad_token_id)),
                                 student.get_output_embeddings(), teacher.model.get_output_embeddings())
    per_sequence = ((kl * mask).sum(1) / mask.sum(1)).mean().item()
    assert trl_loss.item() == pytest.approx(per_sequence, rel=1e-5)
    if lengths == "varied":
        assert abs(trl_loss.item() - row["kl_per_token"]) > 1e-3 * row["kl_per_token"]  # the normalisation differs
    else:
        assert trl_loss.item() == pytest.approx(row["kl_per_token"], rel=1e-5)
        for (name, ours), theirs in zip(student.named_parameters(), trainer.model.parameters()):
            torch.testing.assert_close(theirs.grad, ours.grad, rtol=1e-4, atol=1e-8, msg=name)


def test_trl_rollouts_equal_ours_from_the_same_rng_state(build, examples, vs_trl, tiny_model_dir):
    trainer = build("demonstration")
    tokenizer = trainer.processing_class
    prompts = trainer._tokenize_prompts([r["prompt"] for r in list(trainer.train_dataset)[:BATCH]])
    torch.manual_seed(3)
    _, theirs = trainer._generate_transformers(prompts)
    student = load_model(tiny_model_dir)
    torch.manual_seed(3)
    batch = generate(student, tokenizer, prompts, MAX_NEW_TOKENS, vs_trl.TEMPERATURE, 1.0)
    assert theirs == [ids[m.bool()].tolist() for ids, m in zip(batch.completion_ids, batch.completion_mask)]


def test_trl_cuts_completions_at_eos_as_we_do(build, monkeypatch):
    """A random model never stops, so feed both the same sampled tokens with EOS inside: both keep the first EOS
    and drop what follows."""
    trainer = build("demonstration")
    eos = trainer.processing_class.eos_token_id
    sampled = torch.tensor([[5, 6, eos, 7, eos], [5, 6, 7, 8, 9], [eos, 5, 6, 7, 8], [5, eos, eos, 5, 5]])
    prompts = [[1, 10, 11], [1, 12], [1, 13, 14, 15], [1]]
    monkeypatch.setattr(trainer.model, "generate",
                        lambda input_ids, **kwargs: torch.cat([input_ids, sampled], dim=1))
    _, theirs = trainer._generate_transformers(prompts)
    ours = completion_mask(sampled, [eos])
    assert theirs == [ids[m.bool()].tolist() for ids, m in zip(sampled, ours)]
    assert trainer.eos_token_ids == [eos]


def test_trl_ema_update_is_ours(tiny_model_dir):
    from trl.trainer.callbacks import SyncRefModelCallback

    student = load_model(tiny_model_dir)
    ours = Teacher(student, "ema", 0.01)
    theirs = copy.deepcopy(ours.model)
    _perturb(student, seed=4)
    ours.update(student)
    SyncRefModelCallback._sync_target_model(student, theirs, 0.01)
    for a, b in zip(ours.model.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_trl_runs_float32_without_autocast_or_gradient_checkpointing(build, vs_trl, tiny_model_dir):
    trainer = build("demonstration")
    config = vs_trl.our_config(tiny_model_dir, BATCH, MAX_NEW_TOKENS, "demonstration")
    assert (config.dtype, config.gradient_checkpointing) == ("float32", False)
    assert not (trainer.args.bf16 or trainer.args.fp16 or trainer.args.gradient_checkpointing)
    assert {p.dtype for p in trainer.model.parameters()} == {p.dtype for p in trainer.teacher_model.parameters()} == {
        torch.float32}
    args = trainer.args
    assert (args.num_generations, args.per_device_train_batch_size, args.gradient_accumulation_steps,
            args.steps_per_generation, args.num_iterations) == (1, BATCH, 1, 1, 1)
    assert (args.max_completion_length, args.temperature, args.top_p, args.top_k) == (
        config.max_new_tokens, config.temperature, config.top_p, 0)
    assert (args.teacher_model_kind, args.teacher_update_rate, args.teacher_sync_steps) == ("ema", config.ema_alpha, 1)
    assert (args.distillation_mode, args.distillation_alpha, args.distillation_is_clip) == ("full_logits", 1.0, None)
    assert (config.direction, config.estimator, config.topk, config.importance_sampling) == (
        "reverse", "analytic", None, False)
    assert args.num_loss_tokens_to_skip == config.mask_first_tokens == 0


def test_trl_optimizer_and_schedule_are_ours(build, vs_trl, tiny_model_dir):
    from transformers import get_cosine_schedule_with_warmup

    trainer = build("demonstration")
    trainer.create_optimizer_and_scheduler(num_training_steps=STEPS)
    optimizer = trainer.optimizer
    assert type(optimizer) is torch.optim.AdamW and not optimizer.defaults.get("fused")
    # Two parameter groups (with and without weight decay), both without: the same update as our single group.
    for group in optimizer.param_groups:
        assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (
            vs_trl.LEARNING_RATE, (0.9, 0.999), 1e-8, 0.0)
    config = vs_trl.our_config(tiny_model_dir, BATCH, MAX_NEW_TOKENS, "demonstration")
    assert (config.learning_rate, config.weight_decay, config.warmup_steps, config.max_grad_norm) == (
        vs_trl.LEARNING_RATE, 0.0, 0, trainer.args.max_grad_norm)
    reference = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    ours = get_cosine_schedule_with_warmup(reference, config.warmup_steps, STEPS)  # what train() builds
    for _ in range(STEPS):
        assert trainer.lr_scheduler.get_last_lr() == ours.get_last_lr() * len(optimizer.param_groups)
        for stepped in (optimizer, trainer.lr_scheduler, reference, ours):
            stepped.step()
