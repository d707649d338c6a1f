"""Delay before the next attempt of a task whose attempt failed."""

import random


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Return seconds to wait after failed attempt number `attempt` (1-based).

    Exponential: base * 2 ** (attempt - 1), capped at `cap`, then lowered by a
    random amount of up to half of itself ("equal jitter"). The result lies in
    [delay / 2, delay], so retries spread out but never come sooner than half
    the planned delay.
    """
    exponent = min(attempt - 1, 64)
    delay = min(cap, base * (2**exponent))
    rng = rng or random
    return delay / 2 + rng.uniform(0, delay / 2)
