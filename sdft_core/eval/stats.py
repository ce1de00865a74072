"""Statistics used wherever results are reported: pass@k, mean ± 95% CI over seeds, paired comparisons.

- pass@k: the unbiased estimator of Chen et al. (2021), 1 − C(n−c, k)/C(n, k), in its numerically stable product
  form 1 − Π_{i=n−c+1}^{n} (1 − k/i); binomials of n = 128 samples overflow floats, the product never does.
- mean_ci: mean and Student-t 95% confidence interval across seeds (paper B.2: "3 random seeds … mean performance and
  95% confidence intervals"). The t quantile is computed exactly for integer degrees of freedom (no scipy needed).
- paired_comparison / mcnemar: two models scored on the same items (the per-item records the evaluators save).
- seeded_subsample: a deterministic, seeded subset of item ids for benchmarks too large for a CPU budget.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples, drawn without replacement from n samples of which c are correct,
    is correct. Unbiased for the model's pass@k when the n samples are i.i.d."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n (k samples out of n), got k={k}, n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    # C(n−c, k)/C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i)
    failure = 1.0
    for i in range(n - c + 1, n + 1):
        failure *= 1.0 - k / i
    return 1.0 - failure


def pass_at_k_curve(samples_and_correct: Iterable[tuple[int, int]], ks: Sequence[int]) -> dict[int, float]:
    """Mean pass@k over problems for each k; `samples_and_correct` holds one (n, c) per problem.

    Every problem must have at least max(ks) samples: a k larger than a problem's n has no unbiased estimate.
    """
    problems = list(samples_and_correct)
    if not problems:
        raise ValueError("pass_at_k_curve needs at least one problem")
    if not ks:
        raise ValueError("pass_at_k_curve needs at least one k")
    for index, (n, _) in enumerate(problems):
        if n < max(ks):
            raise ValueError(f"problem {index} has n={n} samples, fewer than the largest k={max(ks)}")
    return {k: sum(pass_at_k(n, c, k) for n, c in problems) / len(problems) for k in ks}


# --- Student t quantiles without scipy ---------------------------------------------------------------------------

def _t_central_probability(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df, by the closed forms of Abramowitz & Stegun 26.7.3–26.7.4."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        # (2/π)·(θ + sinθ·cosθ·(1 + 2/3·cos²θ + … + (2·4···(df−3))/(1·3···(df−2))·cos^(df−3)θ)), sum empty for df=1
        term, series = 1.0, 0.0
        for j in range(1, (df - 1) // 2 + 1):
            series += term
            term *= cos2 * (2 * j) / (2 * j + 1)
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    # sinθ·(1 + 1/2·cos²θ + (1·3)/(2·4)·cos⁴θ + … + (1·3···(df−3))/(2·4···(df−2))·cos^(df−2)θ)
    term, series = 1.0, 0.0
    for j in range(1, df // 2 + 1):
        series += term
        term *= cos2 * (2 * j - 1) / (2 * j)
    return math.sin(theta) * series


def t_quantile(probability: float, df: int) -> float:
    """The upper quantile q with P(T ≤ q) = probability, for probability in (0.5, 1) and integer df ≥ 1."""
    if not 0.5 < probability < 1.0:
        raise ValueError(f"t_quantile needs 0.5 < probability < 1, got {probability}")
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"t_quantile needs an integer df >= 1, got {df!r}")
    central = 2.0 * probability - 1.0
    low, high = 0.0, 1.0
    while _t_central_probability(high, df) < central:
        high *= 2.0
    for _ in range(200):  # bisection to machine precision: the central probability is monotone in t
        middle = 0.5 * (low + high)
        if _t_central_probability(middle, df) < central:
            low = middle
        else:
            high = middle
        if high - low <= 1e-15 * high:
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class MeanCI:
    """A mean with a two-sided confidence interval mean ± half_width (NaN half-width when n = 1)."""

    mean: float
    half_width: float
    n: int
    confidence: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci_half_width": self.half_width, "ci_low": self.low, "ci_high": self.high,
                "n": self.n, "confidence": self.confidence}

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.half_width:.2g} (n={self.n}, {self.confidence:.0%} CI)"


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanCI:
    """Mean and Student-t confidence interval, mean ± t_{(1+confidence)/2, n−1} · s/√n (s: sample std, ddof 1)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_ci needs at least one value")
    if any(math.isnan(v) for v in values):
        raise ValueError(f"mean_ci got a NaN among {values}")
    n = len(values)
    mean = sum(values) / n
    if n == 1:  # one seed: no spread to estimate; NaN says so in every table instead of a fake ± 0
        return MeanCI(mean, float("nan"), 1, confidence)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    half_width = t_quantile((1.0 + confidence) / 2.0, n - 1) * math.sqrt(variance / n)
    return MeanCI(mean, half_width, n, confidence)


# --- Paired comparisons -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class McNemar:
    """Counts of a paired binary comparison, and the exact two-sided McNemar p-value (binomial on the discordant
    pairs: under the null each discordant item favours either model with probability 1/2)."""

    both_correct: int
    only_a: int
    only_b: int
    both_wrong: int

    @property
    def p_value(self) -> float:
        discordant = self.only_a + self.only_b
        if discordant == 0:
            return 1.0
        tail = sum(math.comb(discordant, i) for i in range(min(self.only_a, self.only_b) + 1))
        return min(1.0, 2.0 * tail / 2 ** discordant)

    def as_dict(self) -> dict:
        return {"both_correct": self.both_correct, "only_a": self.only_a, "only_b": self.only_b,
                "both_wrong": self.both_wrong, "p_value": self.p_value}


def _aligned(scores_a: Mapping[str, float], scores_b: Mapping[str, float]) -> list[str]:
    """The shared item ids; two models must have been scored on exactly the same items."""
    only_a, only_b = sorted(set(scores_a) - set(scores_b)), sorted(set(scores_b) - set(scores_a))
    if only_a or only_b:
        raise ValueError(f"paired comparison needs the same items: {len(only_a)} only in a (e.g. {only_a[:3]}), "
                         f"{len(only_b)} only in b (e.g. {only_b[:3]})")
    if not scores_a:
        raise ValueError("paired comparison needs at least one item")
    return sorted(scores_a)


def mcnemar(correct_a: Mapping[str, bool], correct_b: Mapping[str, bool]) -> McNemar:
    """McNemar counts for binary per-item outcomes of models a and b on the same items."""
    ids = _aligned(correct_a, correct_b)
    for name, scores in (("a", correct_a), ("b", correct_b)):
        bad = [i for i in ids if scores[i] not in (0, 1)]  # True/False and 0/1 both count as binary
        if bad:
            raise ValueError(f"mcnemar needs binary outcomes; model {name} has {scores[bad[0]]!r} for item {bad[0]!r}")
    pairs = [(bool(correct_a[i]), bool(correct_b[i])) for i in ids]
    return McNemar(both_correct=sum(a and b for a, b in pairs), only_a=sum(a and not b for a, b in pairs),
                   only_b=sum(b and not a for a, b in pairs), both_wrong=sum(not a and not b for a, b in pairs))


def paired_comparison(scores_a: Mapping[str, float], scores_b: Mapping[str, float],
                      confidence: float = 0.95) -> dict:
    """Per-item differences b − a: their mean with a Student-t CI over items, and McNemar counts if binary."""
    ids = _aligned(scores_a, scores_b)
    result = {"difference_b_minus_a": mean_ci([float(scores_b[i]) - float(scores_a[i]) for i in ids],
                                              confidence).as_dict(),
              "mean_a": sum(float(scores_a[i]) for i in ids) / len(ids),
              "mean_b": sum(float(scores_b[i]) for i in ids) / len(ids), "n_items": len(ids)}
    if all(scores_a[i] in (0, 1) and scores_b[i] in (0, 1) for i in ids):
        result["mcnemar"] = mcnemar(scores_a, scores_b).as_dict()
    return result


# --- Deterministic subsampling -----------------------------------------------------------------------------------

def seeded_subsample(identifiers: Sequence[str], size: int | None, seed: int) -> list[str]:
    """`size` of the ids, chosen by a seeded hash of each id, returned in their original order.

    The choice depends only on (seed, id), not on Python's RNG or on the other ids, so it is the same on every
    machine and nested: the subset of size m is contained in the subset of size n > m. size None keeps all ids.
    """
    if len(set(identifiers)) != len(identifiers):
        raise ValueError("seeded_subsample needs unique ids")
    if size is None or size >= len(identifiers):
        return list(identifiers)
    if size < 0:
        raise ValueError(f"seeded_subsample needs size >= 0, got {size}")
    def rank(identifier: str) -> str:
        return hashlib.sha256(f"{seed}\x00{identifier}".encode()).hexdigest()
    chosen = set(sorted(identifiers, key=rank)[:size])
    return [identifier for identifier in identifiers if identifier in chosen]
