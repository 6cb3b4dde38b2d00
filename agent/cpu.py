"""Urgent work first on a small CPU.

A person waits for two things: the final transcript of what they said and the first words of the reply. On two
cores, background work that runs meanwhile (an interim transcript, evaluating the next prompt ahead of time) takes
half the CPU and makes that wait up to twice as long. Urgent work runs inside `urgent()`; background work checks
`busy()` before each step and gives way.

A final transcript is decoded on one core (`TRANSCRIPT`): beside it, the prompt's prefill may go on, on the other one.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

TRANSCRIPT = "transcript"

_lock = threading.Lock()
_urgent: Counter[str] = Counter()


@contextmanager
def urgent(kind: str = "reply") -> Iterator[None]:
    with _lock:
        _urgent[kind] += 1
    try:
        yield
    finally:
        with _lock:
            _urgent[kind] -= 1


def busy(besides: str | None = None) -> bool:
    """Whether urgent work runs now (other than `besides`)."""
    with _lock:
        return any(n > 0 for kind, n in _urgent.items() if kind != besides)


def spare_cores(cores: int) -> int:
    """How many of `cores` background work may use now: none beside other urgent work, one fewer per transcript being
    decoded."""
    with _lock:
        if any(n > 0 for kind, n in _urgent.items() if kind != TRANSCRIPT):
            return 0
        return max(0, cores - _urgent[TRANSCRIPT])
