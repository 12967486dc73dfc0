"""Thompson sampling over recommendation strategies, one Beta posterior per (segment, strategy).

Each impression is a Bernoulli trial of the strategy that produced it: it is counted as a
failure when shown (beta + 1) and turned into a success when the user later engages with one
of its items (alpha + 1, beta - 1), at most once per impression. The posterior of an arm is then
Beta(prior_alpha + successes, prior_beta + failures) at every moment, without a job that expires
unanswered impressions. Choosing draws one sample per arm and takes the largest, so arms are
tried in proportion to the probability that they are the best (Thompson, 1933).

The counts live in the event store (sqlite or Redis, atomic increments), so every API worker
updates and reads the same posteriors; `ThompsonBandit` itself only holds the sampler.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Arm:
    """The counts of one (segment, strategy): trials shown and trials rewarded."""

    shown: float = 0.0
    rewarded: float = 0.0

    def posterior(self, prior_alpha: float, prior_beta: float) -> tuple[float, float]:
        """(alpha, beta) of the Beta posterior."""
        return prior_alpha + self.rewarded, prior_beta + max(self.shown - self.rewarded, 0.0)


def segment_of(history_length: int, cuts: Sequence[int]) -> str:
    """The segment label of a user with `history_length` known events: `0`, `1-4`, `5-19`, `20+`
    for cuts (1, 5, 20)."""
    pos = bisect.bisect_right(list(cuts), history_length)
    lo = 0 if pos == 0 else cuts[pos - 1]
    if pos == len(cuts):
        return f"{lo}+"
    hi = cuts[pos] - 1
    return str(lo) if lo == hi else f"{lo}-{hi}"


class ThompsonBandit:
    """Chooses a strategy per segment by sampling each arm's Beta posterior.

    Args:
        strategies: the arms.
        prior_alpha/prior_beta: the Beta prior of every arm (1, 1: uniform).
        seed: the sampler's seed (None: fresh entropy).
    """

    def __init__(
        self, strategies: Sequence[str], prior_alpha: float = 1.0, prior_beta: float = 1.0, seed: int | None = None
    ) -> None:
        if not strategies:
            raise ValueError("a bandit needs at least one strategy")
        self.strategies = tuple(strategies)
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.rng = np.random.default_rng(seed)

    def posteriors(self, arms: Mapping[str, Arm]) -> dict[str, tuple[float, float]]:
        """strategy -> (alpha, beta), arms without counts at the prior."""
        return {s: arms.get(s, Arm()).posterior(self.prior_alpha, self.prior_beta) for s in self.strategies}

    def choose(self, arms: Mapping[str, Arm], allowed: Sequence[str] | None = None) -> str:
        """One Thompson draw among `allowed` (default: every strategy)."""
        candidates = [s for s in (allowed or self.strategies) if s in self.strategies]
        if not candidates:
            raise ValueError(f"none of {list(allowed or [])} is a strategy of this bandit ({list(self.strategies)})")
        post = self.posteriors(arms)
        draws = [self.rng.beta(*post[s]) for s in candidates]
        return candidates[int(np.argmax(draws))]

    def means(self, arms: Mapping[str, Arm]) -> dict[str, float]:
        """Posterior mean success rate of each arm."""
        return {s: a / (a + b) for s, (a, b) in self.posteriors(arms).items()}
