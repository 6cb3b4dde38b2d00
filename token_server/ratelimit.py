"""Per-client rate limits: a token bucket per key (API key, JWT subject, or client address), in memory.

`take(key)` costs a dict lookup and a little arithmetic. The table is bounded: past `max_keys` clients, the ones
whose buckets have refilled (the same as a new bucket) are dropped, then the longest idle.
"""

from __future__ import annotations

import time


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = float(rate_per_s), float(burst), max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens left, when last counted)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, now: float | None = None) -> float:
        """Spends one token of `key`'s bucket: 0.0 when allowed, else the seconds until one is there."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
        else:
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        rate, burst = self.rate, self.burst
        self._buckets = {k: b for k, b in self._buckets.items() if b[0] + (now - b[1]) * rate < burst}
        if len(self._buckets) >= self.max_keys:
            newest = sorted(self._buckets.items(), key=lambda item: item[1][1])[len(self._buckets) // 2 :]
            self._buckets = dict(newest)

    def __len__(self) -> int:
        return len(self._buckets)
