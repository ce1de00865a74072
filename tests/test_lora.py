"""LoRA SDFT (sdft_core/lora.py) on a tiny random model: the EMA teacher is a second adapter over the one frozen
base, the teacher's forward uses it, a LoRA step equals the same step of plain models with the adapters merged,
checkpoints resume bit-identically, and the saved model is the merged student."""

import pytest
import torch
from accelerate import Accelerator
from peft import PeftModel

from sdft_core import lora
from sdft_core.config import TrainConfig
from sdft_core.forward import completion_hidden, with_teacher_prompts
from sdft_core.loss import Divergence, distillation_loss
from sdft_core.model import load_model, load_tokenizer
from sdft_core.prompts import student_prompt_ids, teacher_prompt_ids
from sdft_core.rollout import HFSampler
from sdft_core.teacher import Teacher
from sdft_core.train import Loop, distillation_step, rollout_seed, run_id_for, train
from tests.test_train import EXAMPLES, checkpoint_state, config

TARGETS = ["q_proj", "v_proj", "up_proj"]


def lora_model(model_dir, seed=0):
    """A LoRA student whose adapter is not zero (peft starts B at 0, which would make every check trivial)."""
    model = lora.apply_lora(load_model(model_dir), rank=4, alpha=8.0, dropout=0.0, target_modules=TARGETS)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 5.0)
    return model


def base_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" not in n}


def adapters(model, name):
    return {n.replace(f".{name}.", "."): p.detach().clone() for n, p in model.named_parameters() if f".{name}." in n}


def test_ema_update_moves_only_the_teacher_adapter_towards_the_student(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    teacher = Teacher(model, "ema", ema_alpha=0.25)
    assert teacher.model is model  # no copy of the model: one base
    base, phi = base_weights(model), adapters(model, lora.EMA_ADAPTER)
    assert all(p.dtype == torch.float32 for p in phi.values())
    assert phi.keys() == adapters(model, lora.STUDENT_ADAPTER).keys() and len(phi) == 2 * len(TARGETS) * 2
    # Only the student's adapter is trainable.
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n in dict(model.named_parameters()) if f".lora_A.{lora.STUDENT_ADAPTER}." in n
        or f".lora_B.{lora.STUDENT_ADAPTER}." in n}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(1.0)
    theta = adapters(model, lora.STUDENT_ADAPTER)
    teacher.update(model)
    after = adapters(model, lora.EMA_ADAPTER)
    for key in phi:
        torch.testing.assert_close(after[key], 0.25 * theta[key] + 0.75 * phi[key], rtol=0, atol=1e-6)
    assert all(torch.equal(base[n], p) for n, p in base_weights(model).items())


def test_teacher_forward_uses_its_adapter_and_switches_back(tiny_model_dir, embedded_tokenizer):
    model = lora_model(tiny_model_dir)
    ema, frozen = Teacher(model, "ema"), Teacher(lora_model(tiny_model_dir), "frozen")
    with torch.no_grad():  # the EMA adapter away from the student's
        for name, parameter in model.named_parameters():
            if f".{lora.EMA_ADAPTER}." in name and ".lora_B." in name:
                parameter.mul_(-1.0)
    ids = torch.tensor([embedded_tokenizer.encode("The town of Kessrin")])

    def merged_logits(state):
        plain = load_model(tiny_model_dir)
        plain.load_state_dict(state)
        return plain(ids).logits

    with torch.no_grad():
        student = model(ids).logits
        with ema.forwarding():
            teacher = model(ids).logits
        with frozen.forwarding():
            base = frozen.model(ids).logits
        torch.testing.assert_close(student, merged_logits(lora.merged_state_dict(model)))
        torch.testing.assert_close(teacher, merged_logits(lora.merged_state_dict(model, lora.EMA_ADAPTER)))
        torch.testing.assert_close(base, load_model(tiny_model_dir)(ids).logits)
        assert not torch.allclose(student, teacher, atol=1e-3)
        torch.testing.assert_close(model(ids).logits, student, rtol=0, atol=0)  # the student's adapter is back
    assert all(p.requires_grad == (f".{lora.STUDENT_ADAPTER}." in n) for n, p in model.named_parameters()
               if ".lora_" in n)


def test_a_lora_step_equals_the_step_of_the_merged_models(tiny_model_dir, tmp_path):
    """Loss and adapter gradients of train.distillation_step with LoRA against a reference by hand: plain models
    holding the merged student and the merged EMA teacher, the same sampled tokens, and the chain rule through
    W = W0 + s·B·A (dL/dB = s·dL/dW·Aᵀ, dL/dA = s·Bᵀ·dL/dW)."""
    tokenizer = load_tokenizer(tiny_model_dir)
    cfg = TrainConfig(model=tiny_model_dir, batch_size=2, micro_batch_size=2, max_new_tokens=6, seed=3,
                      direction="forward", teacher_context="context_and_demonstration", save_model=False,
                      lora_rank=4, lora_alpha=8.0, lora_target_modules=TARGETS)
    model = lora_model(tiny_model_dir).train()
    teacher = Teacher(model, "ema", 0.1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if f".{lora.EMA_ADAPTER}." in name and ".lora_B." in name:
                parameter.mul_(-2.0)  # a teacher far enough from the student for the loss to be well above rounding
    students = [student_prompt_ids(tokenizer, e, 512) for e in EXAMPLES[:2]]
    teachers = [teacher_prompt_ids(tokenizer, e, 1536, "context_and_demonstration") for e in EXAMPLES[:2]]
    loop = Loop(cfg, model, model, teacher, tokenizer, Accelerator(cpu=True), tmp_path, HFSampler(model, tokenizer))
    metrics = distillation_step(loop, 1, 0, students, teachers)

    # The same rollout, re-drawn from the merged student with the same seed.
    plain_student = load_model(tiny_model_dir).train()
    plain_student.load_state_dict(lora.merged_state_dict(model))
    plain_teacher = load_model(tiny_model_dir).eval()
    plain_teacher.load_state_dict(lora.merged_state_dict(model, lora.EMA_ADAPTER))
    batch = HFSampler(plain_student, tokenizer).sample(students, 6, 1.0, 1.0, rollout_seed(3, 1, 0))
    with torch.no_grad():
        teacher_hidden = completion_hidden(plain_teacher, with_teacher_prompts(batch, teachers, tokenizer.pad_token_id))
    weights = batch.completion_mask.float()
    loss, _, _ = distillation_loss(completion_hidden(plain_student, batch), teacher_hidden, batch.completion_ids,
                                   weights, plain_student.get_output_embeddings(),
                                   plain_teacher.get_output_embeddings(), divergence_fn=Divergence("forward"))
    (loss / weights.sum()).backward()
    assert metrics["loss_tokens"] == weights.sum().item()
    # float32: the adapter added after the base matmul vs merged into the weight rounds differently (~1e-5 of a
    # divergence this small: the random model's logits are near 0); a wrong adapter would be off by 100%.
    assert metrics["loss"] == pytest.approx(loss.item() / weights.sum().item(), rel=1e-3)

    scale = 8.0 / 4
    plain = dict(plain_student.named_parameters())
    checked = 0
    for name, module in model.get_base_model().named_modules():
        if isinstance(module, lora.LoraLayer):
            grad_w = plain[f"{name}.weight"].grad
            a, b = module.lora_A[lora.STUDENT_ADAPTER].weight, module.lora_B[lora.STUDENT_ADAPTER].weight
            torch.testing.assert_close(b.grad, scale * grad_w @ a.detach().T, rtol=1e-3, atol=1e-8)
            torch.testing.assert_close(a.grad, scale * b.detach().T @ grad_w, rtol=1e-3, atol=1e-8)
            checked += 1
    assert checked == 2 * len(TARGETS)


def lora_config(model_dir, **overrides):
    return config(model_dir, lora_rank=4, lora_alpha=8.0, lora_target_modules=TARGETS, **overrides)


def test_lora_resume_gives_identical_adapters_and_optimizer(tmp_path, tiny_model_dir):
    cfg = lora_config(tiny_model_dir)  # 4 steps
    train(cfg, EXAMPLES, tmp_path / "straight", stop_after_step=3, progress=False)
    train(cfg, EXAMPLES, tmp_path / "resumed", stop_after_step=1, progress=False)
    train(cfg, EXAMPLES, tmp_path / "resumed", stop_after_step=3, progress=False)
    straight, resumed = checkpoint_state(tmp_path / "straight"), checkpoint_state(tmp_path / "resumed")
    assert straight["teacher"] is None and all(".lora_" in key for key in straight["student"])  # adapters only
    assert {key.split(".lora_")[1].split(".")[1] for key in straight["student"]} == {lora.STUDENT_ADAPTER,
                                                                                    lora.EMA_ADAPTER}
    for key in straight["student"]:
        assert torch.equal(straight["student"][key], resumed["student"][key]), key
    for index, values in straight["optimizer"]["state"].items():
        assert torch.equal(values["exp_avg"], resumed["optimizer"]["state"][index]["exp_avg"])
    ema = {k: v for k, v in straight["student"].items() if f".{lora.EMA_ADAPTER}." in k}
    assert any(not torch.equal(v, straight["student"][k.replace(lora.EMA_ADAPTER, lora.STUDENT_ADAPTER)])
               for k, v in ema.items())  # the teacher lags the student


def test_a_lora_run_saves_the_merged_student_and_its_adapter(tmp_path, tiny_model_dir):

    summary = train(lora_config(tiny_model_dir, save_model=True), EXAMPLES, tmp_path / "run", progress=False)
    assert summary["weights_fingerprint"]
    merged = load_model(str(tmp_path / "run" / "model"))
    base = load_model(tiny_model_dir)
    with_adapter = PeftModel.from_pretrained(load_model(tiny_model_dir), str(tmp_path / "run" / "adapter"))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, with_adapter(ids).logits, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(merged(ids).logits, base(ids).logits)  # it learned something


def test_lora_fields_are_validated_and_off_by_default_keeps_run_ids(tiny_model_dir):

    with pytest.raises(ValueError, match="lora_rank"):
        TrainConfig(lora_rank=0)
    with pytest.raises(ValueError, match="fsdp"):
        TrainConfig(lora_rank=8, sharding="fsdp")
    with pytest.raises(ValueError, match="lm_head"):
        lora.apply_lora(load_model(tiny_model_dir), 4, 8.0, 0.0, ["q_proj", "lm_head"])
    # Without an adapter the other LoRA fields change nothing, so they do not change the run id.
    assert run_id_for(TrainConfig(), EXAMPLES) == run_id_for(TrainConfig(lora_alpha=1.0), EXAMPLES)
    assert run_id_for(TrainConfig(lora_rank=4), EXAMPLES) != run_id_for(TrainConfig(lora_rank=4, lora_alpha=1.0),
                                                                        EXAMPLES)


def test_the_teacher_forward_runs_without_adapter_dropout(tiny_model_dir):
    model = lora.apply_lora(load_model(tiny_model_dir), 4, 8.0, 0.5, TARGETS).train()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B." in name:
                parameter.normal_()
    teacher = Teacher(model, "ema")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        with teacher.forwarding():
            first, second = model(ids).logits, model(ids).logits
        assert torch.equal(first, second)
        assert model.training and not torch.equal(model(ids).logits, model(ids).logits)  # the student's dropout
