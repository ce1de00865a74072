"""The SDFT losses against brute-force references computed from explicit probabilities in float64."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from sdft_core.loss import Divergence, distillation_loss, likelihood_loss, per_token_divergence, topk_with_tail

VOCAB, HORIZON, HIDDEN = 3, 3, 4


class ToyPolicy(torch.nn.Module):
    """A tiny autoregressive policy: hidden_t = tanh(Σ_{i<t} E[y_i] + E[start] + P[t]); logits = W hidden_t."""

    def __init__(self, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Parameter(torch.randn(VOCAB + 1, HIDDEN, generator=generator, dtype=torch.float64))
        self.position = torch.nn.Parameter(torch.randn(HORIZON, HIDDEN, generator=generator, dtype=torch.float64))
        self.head = torch.nn.Linear(HIDDEN, VOCAB, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.head.weight.copy_(2 * torch.randn(VOCAB, HIDDEN, generator=generator, dtype=torch.float64))

    def hidden(self, sequences: torch.Tensor) -> torch.Tensor:
        """[N, T] token ids → [N, T, H] hidden states predicting each token from its prefix."""
        start = self.embed[VOCAB].expand(sequences.shape[0], 1, HIDDEN)
        prefix_sums = torch.cat([start, start + self.embed[sequences[:, :-1]].cumsum(1)], dim=1)
        return torch.tanh(prefix_sums + self.position)

    def sequence_log_prob(self, sequences: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(self.head(self.hidden(sequences)), -1)
        return logp.gather(-1, sequences.unsqueeze(-1)).squeeze(-1).sum(-1)


def all_sequences() -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(VOCAB), repeat=HORIZON)))


def exact_sequence_kl_gradient(student: ToyPolicy, teacher: ToyPolicy) -> list[torch.Tensor]:
    """∇θ KL(π_θ ‖ π_teacher) at the sequence level, by enumeration and autograd."""
    sequences = all_sequences()
    student_logp = student.sequence_log_prob(sequences)
    teacher_logp = teacher.sequence_log_prob(sequences).detach()
    kl = (student_logp.exp() * (student_logp - teacher_logp)).sum()
    return torch.autograd.grad(kl, list(student.parameters()))


def expected_estimator_gradient(student: ToyPolicy, teacher: ToyPolicy, estimator: str) -> list[torch.Tensor]:
    """E_{y~π_θ}[ĝ(y)], computed exactly: Σ_y π_θ(y) ∇ surrogate(y) over every sequence of the toy space."""
    sequences = all_sequences()
    with torch.no_grad():
        probability = student.sequence_log_prob(sequences).exp()
    loss_per_sequence = []
    for index in range(sequences.shape[0]):
        one = sequences[index : index + 1]
        loss, *_ = distillation_loss(
            student.hidden(one), teacher.hidden(one).detach(), one, torch.ones(1, HORIZON, dtype=torch.float64),
            student.head, teacher.head, estimator=estimator, chunk_size=None,
        )
        loss_per_sequence.append(loss)
    expected = (probability * torch.stack(loss_per_sequence)).sum()
    return torch.autograd.grad(expected, list(student.parameters()))


def max_abs_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def test_rao_blackwell_estimator_is_unbiased_for_the_sequence_kl_gradient():
    student, teacher = ToyPolicy(seed=0), ToyPolicy(seed=1)
    exact = exact_sequence_kl_gradient(student, teacher)
    rao_blackwell = expected_estimator_gradient(student, teacher, "rao_blackwell")
    assert max_abs_difference(exact, rao_blackwell) < 1e-10


@pytest.mark.parametrize("estimator", ["analytic", "token"])
def test_analytic_and_token_estimators_are_biased_at_the_sequence_level(estimator):
    # Appendix A.1: both ignore how y_t changes later steps' distributions, so their expectation misses the exact
    # gradient. This also shows the unbiasedness test above can fail.
    student, teacher = ToyPolicy(seed=0), ToyPolicy(seed=1)
    exact = exact_sequence_kl_gradient(student, teacher)
    assert max_abs_difference(exact, expected_estimator_gradient(student, teacher, estimator)) > 1e-3


def test_analytic_gradient_matches_the_paper_formula():
    # ĝ_analytic = Σ_t Σ_v π_θ(v) log(π_θ(v)/π(v)) ∇log π_θ(v), written out for one sampled sequence.
    student, teacher = ToyPolicy(seed=2), ToyPolicy(seed=3)
    sequence = torch.tensor([[2, 0, 1]])
    loss, *_ = distillation_loss(
        student.hidden(sequence), teacher.hidden(sequence).detach(), sequence,
        torch.ones(1, HORIZON, dtype=torch.float64), student.head, teacher.head, chunk_size=None,
    )
    autograd = torch.autograd.grad(loss, list(student.parameters()))

    student_logp = F.log_softmax(student.head(student.hidden(sequence)), -1)[0]
    teacher_logp = F.log_softmax(teacher.head(teacher.hidden(sequence)), -1)[0].detach()
    manual = [torch.zeros_like(p) for p in student.parameters()]
    for t in range(HORIZON):
        for v in range(VOCAB):
            coefficient = (student_logp[t, v].exp() * (student_logp[t, v] - teacher_logp[t, v])).detach()
            grads = torch.autograd.grad(student_logp[t, v], list(student.parameters()), retain_graph=True)
            manual = [m + coefficient * g for m, g in zip(manual, grads)]
    assert max_abs_difference(autograd, manual) < 1e-12


def brute_force_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) over the last axis from explicit probabilities, element by element, in float64."""
    total = torch.zeros(p.shape[:-1], dtype=torch.float64)
    for v in range(p.shape[-1]):
        total += p[..., v] * torch.log(p[..., v] / q[..., v])
    return total


def test_divergence_directions_match_brute_force_and_differ():
    generator = torch.Generator().manual_seed(0)
    student_logp = F.log_softmax(3 * torch.randn(4, 6, 11, generator=generator, dtype=torch.float64), -1)
    teacher_logp = F.log_softmax(3 * torch.randn(4, 6, 11, generator=generator, dtype=torch.float64), -1)
    p_student, p_teacher = student_logp.exp(), teacher_logp.exp()
    reverse = per_token_divergence(student_logp, teacher_logp, "reverse")
    forward = per_token_divergence(student_logp, teacher_logp, "forward")
    torch.testing.assert_close(reverse, brute_force_kl(p_student, p_teacher), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forward, brute_force_kl(p_teacher, p_student), rtol=1e-12, atol=1e-12)
    # Pin the direction: the paper's loss is KL(student ‖ teacher); the two differ on these distributions.
    assert (reverse - forward).abs().max() > 0.1


def random_problem(seed: int, batch=3, length=11, hidden=8, vocab=13):
    torch.manual_seed(seed)  # the heads' initialisation
    generator = torch.Generator().manual_seed(seed)
    student_head = torch.nn.Linear(hidden, vocab, bias=False)
    teacher_head = torch.nn.Linear(hidden, vocab, bias=False)
    student_hidden = torch.randn(batch, length, hidden, generator=generator, requires_grad=True)
    teacher_hidden = torch.randn(batch, length, hidden, generator=generator)
    tokens = torch.randint(0, vocab, (batch, length), generator=generator)
    weights = (torch.rand(batch, length, generator=generator) > 0.2).float()
    return student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head


@pytest.mark.parametrize("estimator,direction", [
    ("analytic", "reverse"), ("analytic", "forward"), ("analytic", "jsd"), ("token", "reverse"),
    ("rao_blackwell", "reverse")])
def test_chunked_loss_and_gradient_equal_unchunked(estimator, direction):
    results = []
    for chunk_size in (None, 4):
        student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head = random_problem(seed=5)
        loss, divergence, _ = distillation_loss(student_hidden, teacher_hidden, tokens, weights, student_head,
                                             teacher_head, estimator=estimator, divergence_fn=Divergence(direction),
                                             chunk_size=chunk_size)
        loss.backward()
        results.append((loss.detach(), divergence, student_hidden.grad, student_head.weight.grad))
    for unchunked, chunked in zip(*results):
        torch.testing.assert_close(chunked, unchunked, rtol=1e-5, atol=1e-6)


def test_analytic_loss_value_is_the_weighted_sum_of_per_token_kl():
    student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head = random_problem(seed=7)
    loss, divergence, _ = distillation_loss(student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head,
                                         chunk_size=4)
    p_student = F.softmax(student_head(student_hidden).double(), -1)
    p_teacher = F.softmax(teacher_head(teacher_hidden).double(), -1)
    expected = (brute_force_kl(p_student, p_teacher) * weights.double()).sum()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(divergence.double(), expected, rtol=1e-5, atol=1e-6)


def test_estimators_other_than_analytic_refuse_forward_kl():
    with pytest.raises(ValueError, match="not defined for direction='forward'"):
        distillation_loss(*random_problem(seed=1), estimator="token", divergence_fn=Divergence("forward"))


@pytest.mark.parametrize("dft", [False, True])
def test_likelihood_loss_matches_cross_entropy_and_dft_weighting(dft):
    student_hidden, _, tokens, weights, head, _ = random_problem(seed=9)
    loss, nll = likelihood_loss(student_hidden, tokens, weights, head, dft=dft, chunk_size=4)
    token_logp = F.log_softmax(head(student_hidden), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    scale = token_logp.detach().exp() if dft else torch.ones_like(token_logp)
    torch.testing.assert_close(loss, (-scale * token_logp * weights).sum())
    torch.testing.assert_close(nll, (-token_logp * weights).sum().detach())


def test_jsd_matches_brute_force_and_meets_both_kl_directions_at_its_ends():
    generator = torch.Generator().manual_seed(4)
    student_logp = F.log_softmax(2 * torch.randn(5, 9, generator=generator, dtype=torch.float64), -1)
    teacher_logp = F.log_softmax(2 * torch.randn(5, 9, generator=generator, dtype=torch.float64), -1)
    p_student, p_teacher = student_logp.exp(), teacher_logp.exp()
    for beta in (0.1, 0.5, 0.9):
        mixture = beta * p_teacher + (1 - beta) * p_student
        expected = beta * brute_force_kl(p_student, mixture) + (1 - beta) * brute_force_kl(p_teacher, mixture)
        torch.testing.assert_close(per_token_divergence(student_logp, teacher_logp, "jsd", beta), expected)
    reverse = per_token_divergence(student_logp, teacher_logp, "reverse")
    forward = per_token_divergence(student_logp, teacher_logp, "forward")
    # Continuous at the ends: β → 1 approaches the reverse KL, β → 0 the forward KL.
    torch.testing.assert_close(per_token_divergence(student_logp, teacher_logp, "jsd", 1 - 1e-7), reverse,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_token_divergence(student_logp, teacher_logp, "jsd", 1e-7), forward,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_token_divergence(student_logp, teacher_logp, "jsd", 1.0), reverse)


@pytest.mark.parametrize("support", ["student", "teacher"])
@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_topk_divergence_is_exact_with_tail_and_a_lower_bound(support, direction):
    generator = torch.Generator().manual_seed(6)
    student_logp = F.log_softmax(2 * torch.randn(4, 12, generator=generator, dtype=torch.float64), -1)
    teacher_logp = F.log_softmax(2 * torch.randn(4, 12, generator=generator, dtype=torch.float64), -1)
    full = Divergence(direction)(student_logp, teacher_logp)
    # k = V − 1 leaves one token in the tail: still exact. Smaller k: a lower bound (data processing inequality).
    torch.testing.assert_close(Divergence(direction, topk=11, topk_support=support)(student_logp, teacher_logp), full)
    for k in (1, 3, 6):
        approx = Divergence(direction, topk=k, topk_support=support)(student_logp, teacher_logp)
        assert (approx <= full + 1e-12).all() and (approx >= 0).all()
    # The support is the chosen model's top-k, and both restricted distributions sum to one.
    student_k, teacher_k = topk_with_tail(student_logp, teacher_logp, 3, support)
    torch.testing.assert_close(student_k.exp().sum(-1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(teacher_k.exp().sum(-1), torch.ones(4, dtype=torch.float64))
    chosen = student_logp if support == "student" else teacher_logp
    top3 = chosen.topk(3, dim=-1).values
    torch.testing.assert_close((student_k if support == "student" else teacher_k)[:, :3], top3)


def test_topk_gradient_matches_an_explicit_reference():
    student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head = random_problem(seed=11)
    loss, *_ = distillation_loss(student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head,
                                divergence_fn=Divergence("reverse", topk=4, topk_support="teacher"), chunk_size=3)
    grad = torch.autograd.grad(loss, student_hidden)[0]
    hidden = student_hidden.detach().double().requires_grad_(True)
    student_logp = F.log_softmax(student_head(hidden.float()).double(), -1)
    teacher_logp = F.log_softmax(teacher_head(teacher_hidden).double(), -1).detach()
    indices = teacher_logp.topk(4, dim=-1).indices
    s_top, t_top = student_logp.gather(-1, indices), teacher_logp.gather(-1, indices)
    s_all = torch.cat([s_top, torch.log(1 - s_top.exp().sum(-1, keepdim=True))], -1)
    t_all = torch.cat([t_top, torch.log(1 - t_top.exp().sum(-1, keepdim=True))], -1)
    reference = ((s_all.exp() * (s_all - t_all)).sum(-1) * weights.double()).sum()
    torch.testing.assert_close(grad.double(), torch.autograd.grad(reference, hidden)[0], rtol=1e-4, atol=1e-6)


def test_importance_sampling_weights_each_token_by_the_truncated_ratio():
    student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head = random_problem(seed=13)
    student_logp = F.log_softmax(student_head(student_hidden), -1).detach()
    sampled = student_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    plain, *_ = distillation_loss(student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head,
                                  chunk_size=4)
    # A sampler that agrees with the trainer: every ratio is 1 and nothing changes.
    same, _, stats = distillation_loss(student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head,
                                       chunk_size=4, sampler_logp=sampled, is_cap=2.0)
    torch.testing.assert_close(same, plain)
    assert stats["is_capped"] == 0 and stats["is_ratio_sum"] == pytest.approx(weights.sum().item(), rel=1e-5)
    # A sampler that disagrees: ratios exp(±0.5..±1.5), some above the cap.
    generator = torch.Generator().manual_seed(0)
    shift = (torch.rand(weights.shape, generator=generator) * 3 - 1.5)
    loss, _, stats = distillation_loss(student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head,
                                       chunk_size=4, sampler_logp=sampled - shift, is_cap=2.0)
    ratio = shift.exp().clamp(max=2.0)
    kl = brute_force_kl(F.softmax(student_head(student_hidden).double(), -1),
                        F.softmax(teacher_head(teacher_hidden).double(), -1))
    torch.testing.assert_close(loss.double(), (kl * weights.double() * ratio.double()).sum(), rtol=1e-5, atol=1e-6)
    assert stats["is_capped"] == ((shift.exp() >= 2.0) & (weights > 0)).sum().item() > 0
