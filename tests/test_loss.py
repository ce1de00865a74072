"""The SDFT losses against brute-force references computed from explicit probabilities in float64."""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from sdft_core.loss import (Divergence, distillation_loss, likelihood_loss, per_token_divergence, topk_with_tail,
                            truncated_importance_weights)

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

    def log_probs(self, sequences: torch.Tensor) -> torch.Tensor:
        """[N, T] → [N, T, V]: the next-token distribution at every position."""
        return F.log_softmax(self.head(self.hidden(sequences)), -1)

    def token_log_probs(self, sequences: torch.Tensor) -> torch.Tensor:
        """[N, T] → [N, T]: log π(y_t | y_<t)."""
        return self.log_probs(sequences).gather(-1, sequences.unsqueeze(-1)).squeeze(-1)

    def sequence_log_prob(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.token_log_probs(sequences).sum(-1)


def tempered(policy: ToyPolicy, temperature: float) -> ToyPolicy:
    """The policy sampled at a temperature: the sampler of a run with temperature ≠ 1."""
    sampler = copy.deepcopy(policy)
    with torch.no_grad():
        sampler.head.weight.div_(temperature)
    return sampler


def all_sequences() -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(VOCAB), repeat=HORIZON)))


def exact_sequence_kl_gradient(student: ToyPolicy, teacher: ToyPolicy) -> list[torch.Tensor]:
    """∇θ KL(π_θ ‖ π_teacher) at the sequence level, by enumeration and autograd."""
    sequences = all_sequences()
    student_logp = student.sequence_log_prob(sequences)
    teacher_logp = teacher.sequence_log_prob(sequences).detach()
    kl = (student_logp.exp() * (student_logp - teacher_logp)).sum()
    return torch.autograd.grad(kl, list(student.parameters()))


def expected_estimator_gradient(student: ToyPolicy, teacher: ToyPolicy, estimator: str,
                                sampler: ToyPolicy | None = None, is_form: str | None = None,
                                is_cap: float = math.inf) -> list[torch.Tensor]:
    """E_{y~q}[ĝ(y)], computed exactly: Σ_y q(y) ∇ surrogate(y) over every sequence of the toy space.

    q is `sampler` (the student, on-policy, when None). With `is_form`, the kit's importance weights in that form are
    applied, with the sampler's log q(y_t) as `sampler_logp`; the rollouts themselves are fixed (no gradient)."""
    sampler = student if sampler is None else sampler
    sequences = all_sequences()
    with torch.no_grad():
        sampler_logp = sampler.token_log_probs(sequences)
        probability = sampler_logp.sum(-1).exp()
    loss_per_sequence = []
    for index in range(sequences.shape[0]):
        one = sequences[index : index + 1]
        importance = {} if is_form is None else {
            "sampler_logp": sampler_logp[index : index + 1], "is_cap": is_cap, "is_form": is_form}
        loss, *_ = distillation_loss(
            student.hidden(one), teacher.hidden(one).detach(), one, torch.ones(1, HORIZON, dtype=torch.float64),
            student.head, teacher.head, estimator=estimator, chunk_size=None, **importance,
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
    assert stats["is_log_ratio_sum"] == pytest.approx(shift[weights > 0].sum().item(), rel=1e-4)


# Importance sampling (Algorithm 1 line 17; docs/importance_sampling.md). Rollouts come from a sampler q ≠ π_θ; the
# target is the on-policy expectation E_{y~π_θ}[ĝ(y)]. Both samplers have full support; `is_cap=inf` by default in
# the harness, so nothing is truncated unless a test says so.
SAMPLERS = {"temperature_1.5": lambda student: tempered(student, 1.5),  # a run sampling at temperature 1.5
            "unrelated_policy": lambda student: ToyPolicy(seed=4)}


@pytest.mark.parametrize("sampler_name", SAMPLERS)
def test_per_token_ratio_corrects_nothing_for_the_analytic_estimator(sampler_name):
    # KL_t depends only on y_<t and Σ_{y_t} q(y_t) · π(y_t)/q(y_t) = 1, so E_q[r_t KL_t] = E_{y_<t~q}[KL_t]: the
    # per-token form ("token", as the official code and TRL run it) has exactly the expectation of the uncorrected
    # off-policy gradient, which misses the on-policy one.
    student, teacher = ToyPolicy(seed=0), ToyPolicy(seed=1)
    sampler = SAMPLERS[sampler_name](student)
    on_policy = expected_estimator_gradient(student, teacher, "analytic")
    uncorrected = expected_estimator_gradient(student, teacher, "analytic", sampler=sampler)
    per_token = expected_estimator_gradient(student, teacher, "analytic", sampler=sampler, is_form="token")
    assert max_abs_difference(per_token, uncorrected) < 1e-10
    assert max_abs_difference(per_token, on_policy) > 0.1


@pytest.mark.parametrize("sampler_name", SAMPLERS)
@pytest.mark.parametrize("estimator", ["analytic", "token", "rao_blackwell"])
def test_prefix_ratio_recovers_the_on_policy_expectation(estimator, sampler_name):
    # Weighting each position's term by the product of the ratios of the tokens it depends on (y_<t; y_≤t for the
    # token estimator) makes its expectation under q the on-policy one, exactly when nothing is truncated.
    student, teacher = ToyPolicy(seed=0), ToyPolicy(seed=1)
    sampler = SAMPLERS[sampler_name](student)
    on_policy = expected_estimator_gradient(student, teacher, estimator)
    prefix = expected_estimator_gradient(student, teacher, estimator, sampler=sampler, is_form="prefix")
    assert max_abs_difference(prefix, on_policy) < 1e-10
    # The test can fail: neither the uncorrected nor the per-token form gets there.
    for is_form in (None, "token"):
        off_policy = expected_estimator_gradient(student, teacher, estimator, sampler=sampler, is_form=is_form)
        assert max_abs_difference(off_policy, on_policy) > 0.1
    if estimator == "rao_blackwell":  # ... so the Rao-Blackwell estimator stays unbiased for the sequence-KL gradient
        assert max_abs_difference(prefix, exact_sequence_kl_gradient(student, teacher)) < 1e-10


@pytest.mark.parametrize("sampler_name", SAMPLERS)
def test_per_token_ratio_fixes_the_token_estimators_own_token_but_not_its_prefix(sampler_name):
    # The token estimator's term at t depends on y_t, and E_{y_t~π}[its gradient] is the analytic one at y_<t (so the
    # two estimators agree on-policy). The per-token ratio makes y_t ~ π, leaving the prefix at q: the token estimator
    # with per-token ratios has exactly the expectation of the analytic estimator without any correction.
    student, teacher = ToyPolicy(seed=0), ToyPolicy(seed=1)
    sampler = SAMPLERS[sampler_name](student)
    assert max_abs_difference(expected_estimator_gradient(student, teacher, "token"),
                              expected_estimator_gradient(student, teacher, "analytic")) < 1e-10
    token_per_token = expected_estimator_gradient(student, teacher, "token", sampler=sampler, is_form="token")
    analytic_uncorrected = expected_estimator_gradient(student, teacher, "analytic", sampler=sampler)
    assert max_abs_difference(token_per_token, analytic_uncorrected) < 1e-10
    # It does correct something: the token estimator without weights is further off than the analytic one.
    token_uncorrected = expected_estimator_gradient(student, teacher, "token", sampler=sampler)
    assert max_abs_difference(token_uncorrected, analytic_uncorrected) > 1e-3


@pytest.mark.parametrize("sampler_name", SAMPLERS)
def test_truncated_per_token_ratio_only_shrinks_each_prefixs_kl(sampler_name):
    # With the cap, Σ_{y_t} q · min(π/q, cap) = Σ_v min(π(v), cap · q(v)) =: c_t(y_<t) ≤ 1: the per-token form under q
    # is Σ_t E_{y_<t~q}[c_t ∇KL_t], the uncorrected gradient with each prefix's term scaled down, and nothing more.
    student, teacher = ToyPolicy(seed=0), ToyPolicy(seed=1)
    sampler, cap = SAMPLERS[sampler_name](student), 1.1
    truncated = expected_estimator_gradient(student, teacher, "analytic", sampler=sampler, is_form="token",
                                            is_cap=cap)
    sequences = all_sequences()
    student_logp = student.log_probs(sequences)
    teacher_logp, sampler_logp = teacher.log_probs(sequences).detach(), sampler.log_probs(sequences).detach()
    kl = (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)
    shrink = torch.minimum(student_logp.exp(), cap * sampler_logp.exp()).sum(-1).detach()
    assert (shrink < 1 - 1e-3).any()  # the cap binds
    probability = sampler.sequence_log_prob(sequences).exp().detach()
    reference = torch.autograd.grad((probability[:, None] * shrink * kl).sum(), list(student.parameters()))
    assert max_abs_difference(truncated, reference) < 1e-10


def test_truncating_the_prefix_product_biases_it():
    # The product's spread grows with the length; truncating it bounds every weight by the cap at the price of bias.
    student, teacher = ToyPolicy(seed=0), ToyPolicy(seed=1)
    sampler = tempered(student, 1.5)  # prefix products from 0.43 to 1.28 on this toy space
    on_policy = expected_estimator_gradient(student, teacher, "analytic")
    loose = expected_estimator_gradient(student, teacher, "analytic", sampler=sampler, is_form="prefix", is_cap=2.0)
    tight = expected_estimator_gradient(student, teacher, "analytic", sampler=sampler, is_form="prefix", is_cap=1.2)
    assert max_abs_difference(loose, on_policy) < 1e-10  # a cap above every product changes nothing
    assert max_abs_difference(tight, on_policy) > 1e-2


@pytest.mark.parametrize("estimator", ["analytic", "token", "rao_blackwell"])
def test_both_forms_change_nothing_when_the_sampler_is_the_student(estimator):
    student, teacher = ToyPolicy(seed=0), ToyPolicy(seed=1)
    on_policy = expected_estimator_gradient(student, teacher, estimator)
    for is_form in ("token", "prefix"):
        weighted = expected_estimator_gradient(student, teacher, estimator, sampler=student, is_form=is_form,
                                               is_cap=2.0)
        assert max_abs_difference(weighted, on_policy) < 1e-12


def _token_form_as_before(student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head,
                          sampler_logp, cap):
    """The analytic loss with per-token importance weights, written out as the kit computed it before `is_form`."""
    student_logp = F.log_softmax(student_head(student_hidden).to(torch.float32), dim=-1)
    with torch.no_grad():
        teacher_logp = F.log_softmax(teacher_head(teacher_hidden).to(torch.float32), dim=-1)
    divergence = (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)
    sampled_student = student_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(sampled_student.detach() - sampler_logp.to(torch.float32)).clamp(max=cap)
    weights = weights.to(torch.float32) * ratio
    stats = {"is_ratio_sum": (ratio * (weights > 0)).sum().item(),
             "is_capped": ((ratio >= cap) & (weights > 0)).sum().float().item()}
    return (divergence * weights).sum(), (divergence.detach() * weights).sum(), stats


def test_token_form_is_the_default_and_bit_identical_to_the_per_token_weighting():
    def run(chunk_size, **form):
        student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head = random_problem(seed=17)
        sampled = F.log_softmax(student_head(student_hidden), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        shift = torch.rand(weights.shape, generator=torch.Generator().manual_seed(1)) * 3 - 1.5
        args = (student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head)
        if form.pop("reference", False):
            loss, divergence, stats = _token_form_as_before(*args, sampled.detach() - shift, 2.0)
        else:
            loss, divergence, stats = distillation_loss(*args, chunk_size=chunk_size,
                                                        sampler_logp=sampled.detach() - shift, is_cap=2.0, **form)
        loss.backward()
        return [loss.detach(), divergence, student_hidden.grad, student_head.weight.grad], stats

    reference, reference_stats = run(None, reference=True)
    for chunk_size in (None, 4):
        default, default_stats = run(chunk_size)
        explicit, explicit_stats = run(chunk_size, is_form="token")
        assert all(torch.equal(a, b) for a, b in zip(default, explicit)) and default_stats == explicit_stats
        assert {k: default_stats[k] for k in reference_stats} == reference_stats and reference_stats["is_capped"] > 0
        if chunk_size is None:  # the checkpointed chunks sum in another order: equal to rounding only
            assert all(torch.equal(a, b) for a, b in zip(default, reference))
        else:
            for a, b in zip(default, reference):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", ["analytic", "token", "rao_blackwell"])
def test_prefix_weights_are_the_truncated_product_over_earlier_tokens_in_every_chunking(estimator):
    results = []
    for chunk_size in (None, 4):
        student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head = random_problem(seed=19)
        student_logp = F.log_softmax(student_head(student_hidden), -1)
        sampled = student_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).detach()
        shift = torch.rand(weights.shape, generator=torch.Generator().manual_seed(2)) * 0.8 - 0.25
        loss, divergence, stats = distillation_loss(
            student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head, estimator=estimator,
            chunk_size=chunk_size, sampler_logp=sampled - shift, is_cap=2.0, is_form="prefix")
        loss.backward()
        results.append((loss.detach(), divergence, student_hidden.grad, student_head.weight.grad))
    for unchunked, chunked in zip(*results):
        torch.testing.assert_close(chunked, unchunked, rtol=1e-5, atol=1e-6)
    # Every position's ratio enters the products after it, loss-masked positions' too (their tokens were sampled).
    cumulative = shift.double().cumsum(1)
    exclusive = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], 1)
    weight = (cumulative if estimator == "token" else exclusive).exp().clamp(max=2.0)
    p_student = F.softmax(student_head(student_hidden).double(), -1)
    kl = brute_force_kl(p_student, F.softmax(teacher_head(teacher_hidden).double(), -1))
    loss_tokens = weights > 0
    torch.testing.assert_close(divergence.double(), (kl * weights * weight).sum(), rtol=1e-5, atol=1e-6)
    assert stats["is_ratio_sum"] == pytest.approx(weight[loss_tokens].sum().item(), rel=1e-5)
    assert stats["is_capped"] == (weight[loss_tokens] >= 2.0).sum().item() > 0
    assert stats["is_log_ratio_sum"] == pytest.approx(shift[loss_tokens].sum().item(), rel=1e-4)
    if estimator == "analytic":
        torch.testing.assert_close(loss.double(), (kl * weights * weight).sum(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", ["analytic", "token", "rao_blackwell"])
def test_prefix_form_ignores_padding_whatever_its_sampler_log_probs(estimator):
    student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head = random_problem(seed=23)
    weights[:, -3:] = 0.0  # right padding, whose sampler log-probs may be −inf (a token top-p removed) or NaN
    sampled = F.log_softmax(student_head(student_hidden), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1).detach()
    for cap in (2.0, math.inf):
        clean = distillation_loss(student_hidden, teacher_hidden, tokens, weights, student_head, teacher_head,
                                  estimator=estimator, chunk_size=4, sampler_logp=sampled - 0.3, is_cap=cap,
                                  is_form="prefix")
        for fill in (-math.inf, math.nan):
            padded = (sampled - 0.3).clone()
            padded[:, -3:] = fill
            loss, divergence, stats = distillation_loss(student_hidden, teacher_hidden, tokens, weights, student_head,
                                                        teacher_head, estimator=estimator, chunk_size=4,
                                                        sampler_logp=padded, is_cap=cap, is_form="prefix")
            assert torch.equal(loss, clean[0]) and torch.equal(divergence, clean[1]) and stats == clean[2]


def test_unknown_importance_form_is_refused():
    with pytest.raises(ValueError, match="is_form must be one of"):
        distillation_loss(*random_problem(seed=1), sampler_logp=torch.zeros(3, 11), is_form="sequence")
