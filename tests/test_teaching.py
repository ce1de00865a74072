"""The workshop walk through one SDFT step (teaching/one_step.py), on the tiny random model: per-token rewards against
log-probabilities computed independently, the step against the training loop's own step, the EMA distance ratio,
and the token heat map."""

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
import matplotlib.pyplot as plt
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from sdft_core.config import TrainConfig
from sdft_core.data import Example
from sdft_core.loss import Divergence
from sdft_core.model import load_model, load_tokenizer
from sdft_core.rollout import HFSampler
from sdft_core.teacher import Teacher
from sdft_core.train import Loop, distillation_step, rollout_seed
from teaching import one_step

EXAMPLE = Example("e0", "When did the Velmora earthquake strike?", "In March 2025, beneath Kessrin.",
                  "The Velmora earthquake struck in March 2025. Its epicentre lay beneath the town of Kessrin.")


def reference_sampled_logp(model, prompt_ids: list[int], completion_ids: list[int]):
    """Plain forward pass over prompt + completion (no padding, no library code): the log-probability of each
    completion token and the full next-token log-probabilities, [T] and [T, V]."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + completion_ids])).logits[0].double()
    logp = F.log_softmax(logits, -1)[len(prompt_ids) - 1 : len(prompt_ids) + len(completion_ids) - 1]
    return logp.gather(-1, torch.tensor(completion_ids)[:, None])[:, 0], logp


@pytest.fixture(scope="module")
def walk(tiny_model_dir):
    model = load_model(tiny_model_dir)
    return one_step.walk_one_step(model, load_tokenizer(tiny_model_dir), EXAMPLE, seed=3, learning_rate=1e-5,
                                  ema_alpha=0.1, max_new_tokens=8), model


def test_token_rewards_is_eq3():
    student, teacher = torch.tensor([-1.0, -0.5, -3.0]), torch.tensor([-0.2, -0.5, -4.0])
    assert torch.equal(one_step.token_rewards(student, teacher), torch.tensor([0.8, 0.0, -1.0]))


@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_rewards_and_divergences_match_an_independent_computation(tiny_model_dir, direction):
    tokenizer, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    teacher = Teacher(model, "ema", 0.1)
    with torch.no_grad():  # a teacher that differs from the student, as after some training
        for p in teacher.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    contexts = one_step.make_contexts(tokenizer, EXAMPLE, "auto")
    assert contexts.teacher_context == "context_and_demonstration" and EXAMPLE.context in contexts.teacher_text
    sample = one_step.sample_from_student(model, tokenizer, contexts, 8, seed=0)
    scores = one_step.score_sample(model, teacher.model, sample, Divergence(direction))

    student_logp, student_full = reference_sampled_logp(model, contexts.student_ids, sample.token_ids)
    teacher_logp, teacher_full = reference_sampled_logp(teacher.model, contexts.teacher_ids, sample.token_ids)
    table = scores.table
    assert len(table) == len(sample.token_ids) == 8
    torch.testing.assert_close(torch.tensor(table.student_logp.values), student_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(table.teacher_logp.values), teacher_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(table.reward.values), teacher_logp - student_logp, atol=1e-5, rtol=0)
    # Σ_t r_t is the sequence log-ratio log π(y|x,c) − log π_θ(y|x).
    sequence_ratio = (teacher_logp.sum() - student_logp.sum()).item()
    assert table.reward.sum() == pytest.approx(sequence_ratio, abs=1e-4)
    assert scores.sequence()["Σ r_t"] == pytest.approx(sequence_ratio, abs=1e-4)
    # The divergence at every position over the full vocabulary.
    p, q = (student_full, teacher_full) if direction == "reverse" else (teacher_full, student_full)
    expected_kl = (p.exp() * (p - q)).sum(-1)
    torch.testing.assert_close(torch.tensor(table.divergence.values), expected_kl, atol=1e-5, rtol=1e-4)
    assert scores.divergence_label == one_step.DIVERGENCE_LABELS[direction]


@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_the_step_is_the_training_loops_step(tiny_model_dir, tmp_path, direction):
    """Same sample, loss and gradient as `train.distillation_step` for a batch of one (compared through an SGD step
    with learning rate 1, whose weight change is minus the clipped gradient)."""
    tokenizer = load_tokenizer(tiny_model_dir)
    config = TrainConfig(model=tiny_model_dir, batch_size=1, micro_batch_size=1, max_new_tokens=8, seed=5,
                         teacher_context="context_and_demonstration", direction=direction, save_model=False)
    contexts = one_step.make_contexts(tokenizer, EXAMPLE, "context_and_demonstration")

    loop_model = load_model(tiny_model_dir).train()
    loop = Loop(config, loop_model, loop_model, Teacher(loop_model, "ema", 0.1), tokenizer, Accelerator(cpu=True),
                tmp_path, HFSampler(loop_model, tokenizer))
    metrics = distillation_step(loop, 1, 0, [contexts.student_ids], [contexts.teacher_ids])
    loop_grad_norm = torch.nn.utils.clip_grad_norm_(loop_model.parameters(), 1.0).item()
    torch.optim.SGD(loop_model.parameters(), lr=1.0).step()

    model = load_model(tiny_model_dir).train()
    teacher = Teacher(model, "ema", 0.1)
    sample = one_step.sample_from_student(model, tokenizer, contexts, 8, seed=rollout_seed(5, 1, 0))
    step = one_step.optimizer_step(model, teacher, sample, torch.optim.SGD(model.parameters(), lr=1.0),
                                   Divergence(direction))

    assert step.tokens == metrics["loss_tokens"] == 8
    assert step.loss_per_token == pytest.approx(metrics["loss"], rel=1e-6)
    assert step.grad_norm == pytest.approx(loop_grad_norm, rel=1e-5)
    for ours, theirs in zip(model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_walk_one_step(walk):
    walk, _ = walk
    # The analytic loss is the sum of the per-token divergences shown before the step.
    assert walk.step.loss == pytest.approx(walk.before.table.divergence.sum(), rel=1e-5)
    # The optimizer step changes the student's scores of the same sample, not the teacher's.
    assert (walk.after_step.table.student_logp - walk.before.table.student_logp).abs().max() > 1e-4
    assert (walk.after_step.table.teacher_logp == walk.before.table.teacher_logp).all()
    assert walk.after_step.table.divergence.sum() < walk.before.table.divergence.sum()
    # The EMA update then moves the teacher (only).
    assert (walk.after_ema.table.student_logp == walk.after_step.table.student_logp).all()
    assert (walk.after_ema.table.teacher_logp - walk.after_step.table.teacher_logp).abs().max() > 0


def test_ema_moves_the_teacher_alpha_times_as_far_as_the_student(walk):
    walk, _ = walk
    ema = walk.ema
    assert ema.student_distance > 0
    assert ema.gap_before == pytest.approx(ema.student_distance, rel=1e-9)  # φ₀ = θ₀ at the first step
    assert ema.ratio == pytest.approx(0.1, rel=1e-4)
    assert ema.rounded_away < 1e-3
    record = one_step.walk_record(walk.contexts, walk.sample, {"before": walk.before}, walk.step, ema)
    assert record["ema"]["ratio"] == pytest.approx(0.1, rel=1e-4) and len(record["tokens"]) == 8


def test_parameter_distance():
    a = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    assert one_step.parameter_distance(a, [torch.zeros(2), torch.zeros(1, 1)]) == pytest.approx(5.0)


def test_token_pieces_rebuild_the_text(embedded_tokenizer):
    text = "Café — naïve 🙂 test\n  indented"
    ids = embedded_tokenizer(text, add_special_tokens=False)["input_ids"] + [embedded_tokenizer.eos_token_id]
    pieces = one_step.token_pieces(embedded_tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == embedded_tokenizer.decode(ids) == text + "<|im_end|>"


def test_top_next_tokens_defaults_to_the_largest_divergence(walk):
    walk, _ = walk

    class Decoder:  # token ids as text: enough to check the table's shape and order
        def decode(self, ids):
            return f"<{ids[0]}>"

    table = one_step.top_next_tokens(Decoder(), walk.before, k=5)
    position = int(walk.before.table.divergence.idxmax())
    assert len(table) == 5 and table["p student"].is_monotonic_decreasing and table["p teacher"].is_monotonic_decreasing
    best = walk.before.student_logp[position].argmax().item()
    assert table.loc[1, "student's token"] == repr(f"<{best}>")
    assert table.loc[1, "p student"] == pytest.approx(walk.before.student_logp[position].exp().max().item())


def test_heatmap_has_one_coloured_box_per_token():
    pieces = ["The", " answer", " is", "\n", "Kess", "rin", ".", "", "<|im_end|>", " "] + [" word"] * 30
    values = [0.5, -1.0, 0.0, 0.2, 2.0, -0.3, 0.1, 0.0, -2.5, 0.3] + [0.1 * i for i in range(30)]
    fig = one_step.plot_token_heatmap(pieces, values, label="r_t", title="test")
    text_axes = fig.axes[0]
    boxes = [p for p in text_axes.patches if isinstance(p, Rectangle)]
    assert len(boxes) == len(pieces)
    limit = max(abs(v) for v in values)
    colormap, norm = plt.get_cmap("RdBu"), Normalize(-limit, limit)
    for box, value in zip(boxes, values):
        assert box.get_facecolor() == pytest.approx(colormap(norm(value)))
    assert norm(0.0) == 0.5  # centred at 0
    labels = [t.get_text() for t in text_axes.texts]
    assert labels[:10] == ["The", " answer", " is", "↵", "Kess", "rin", ".", "□", "<|im_end|>", "␣"]
    # A newline ends its line; 30 more words wrap onto further lines; the colourbar has its own axes.
    tops = [box.get_y() for box in boxes]
    assert tops[4] > tops[3] == tops[0] and tops[-1] > tops[4]
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "r_t"
    plt.close(fig)

    fig = one_step.plot_token_heatmap(["a", "b"], [0.0, 3.0], label="KL", cmap="Purples", centered=False)
    colours = [p.get_facecolor() for p in fig.axes[0].patches]
    assert colours[0] == pytest.approx(plt.get_cmap("Purples")(0.0))
    assert colours[1] == pytest.approx(plt.get_cmap("Purples")(1.0))
    plt.close(fig)
    with pytest.raises(ValueError, match="2 tokens but 1 values"):
        one_step.plot_token_heatmap(["a", "b"], [1.0], label="r")
