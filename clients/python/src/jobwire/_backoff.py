"""Jittered exponential backoff, shared by call retries and stream reconnects."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays that double (by ``multiplier``) from ``initial`` up to ``maximum``.

    Each delay is drawn uniformly from [d/2, d] ("equal jitter"): half of it
    is random, so that many clients failing together spread out, and half is
    kept, so that a retry never comes back at once and hammers a broker that
    is starting up.
    """

    initial: float = 0.1
    maximum: float = 10.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.multiplier < 1:
            raise ValueError(f"invalid backoff: {self!r}")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before retry number ``attempt`` (0-based)."""
        # Cap the exponent so huge attempt counts cannot overflow a float.
        return min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))

    def delay(self, attempt: int) -> float:
        ceiling = self.ceiling(attempt)
        return ceiling / 2 + self.rng.random() * ceiling / 2
